//! The log archive: once a build has ended (and its last lines have settled), its whole log is
//! written to object storage as `builds/<id>/logs`, one JSON `LogEntry` per line, and the build
//! records that. A finished build's log is read from there from then on, so the LOGS stream
//! may keep only recent days; retention deletes the archive with the build's other objects.
//!
//! Background work in the usual shape: `run_once` archives what is due, `run` loops on a tick
//! or a build's end. Builds are leased (`db::builds::logs_archive_lease`), so gateways share the
//! work and a crash mid-archive only delays it.

use super::read::{Entry, entry, holders, pages, writer_subjects};
use super::stream_page;
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use bytes::Bytes;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::db;
use freeagent_shared::db::builds::{ArchiveWritten, Build};
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::metrics as names;
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::subjects;
use futures::{Stream, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Builds archived per pass.
const BATCH: i64 = 128;
/// Archives written at once. An archive mostly waits (a few JetStream look-ups, one upload), so
/// at 4 the archiver fell behind a farm ending 1,000 builds a second (docs/benchmarks.md); page
/// reads of the stream stay bounded by `stream_page`'s own limit.
const CONCURRENCY: usize = 32;
/// How long a lease keeps other gateways off a build.
const LEASE: Duration = Duration::from_secs(120);
/// When a failed archive is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(5);
/// The largest archive (64 MiB per attempt at most, 20 attempts).
const MAX_ARCHIVE: u64 = 20 * 64 * 1024 * 1024 + 1024 * 1024;
/// The longest line an archive may hold (a 64 KiB message, escaped, with its fields).
const MAX_LINE: usize = 512 * 1024;

pub struct Archiver {
    st: AppState,
    /// How long after its end a build's log is taken as whole.
    settle: Duration,
}

impl Archiver {
    pub fn new(st: AppState, settle: Duration) -> Self {
        Archiver { st, settle }
    }

    /// Archives every build that is due; returns how many were leased. The pass's archives are
    /// recorded together: one statement and one commit, not one per build (a commit each made
    /// the archiver queue behind the farm's own commits and fall behind it at ~20 builds/s,
    /// docs/benchmarks.md).
    pub async fn run_once(&self) -> Result<usize> {
        let ids = db::builds::logs_archive_lease(&self.st.pool, self.settle, LEASE, BATCH).await?;
        let n = ids.len();
        let results: Vec<(BuildId, Result<ArchiveWritten>)> = futures::stream::iter(ids)
            .map(|id| async move { (id, self.archive(id).await) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut written = Vec::with_capacity(n);
        for (id, r) in results {
            match r {
                Ok(w) => written.push(w),
                // A later pass tries again, soon: the lease is for a crashed archiver.
                Err(e) => {
                    tracing::warn!(build_id = %id, error = %e.detail(), retry_in_s = RETRY_FAILED.as_secs(), "could not archive a build's log; retrying later");
                    if let Err(e) =
                        db::builds::logs_archive_retry_in(&self.st.pool, id, RETRY_FAILED).await
                    {
                        tracing::warn!(build_id = %id, error = %e, "could not schedule the archive's retry; the lease's end will");
                    }
                }
            }
        }
        // Not recorded (Postgres away): the objects stay, and the leases' end brings the builds
        // back to a later pass, which writes them again.
        let recorded = db::builds::logs_archive_done(&self.st.pool, &written).await?;
        metrics::counter!(names::LOG_ARCHIVES).increment(recorded.len() as u64);
        for id in recorded {
            self.st.live.archived(id);
        }
        Ok(n)
    }

    /// Writes the build's whole log to storage: from this gateway's memory when it provably
    /// holds all of it, else read from the stream.
    async fn archive(&self, id: BuildId) -> Result<ArchiveWritten> {
        let started = Instant::now();
        let holders = holders(&self.st.pool, id).await?;
        let (source, body) = match self.whole_log_held(id, &holders).await? {
            Some(lines) => (
                "memory",
                futures::stream::iter([Ok(encode(&lines))]).boxed(),
            ),
            None => (
                "stream",
                pages(self.st.nats.clone(), holders, id, true)
                    .map_ok(|page| encode(&page))
                    .boxed(),
            ),
        };
        let stored = self
            .st
            .storage
            .put_stream(&ObjectKey::Logs(id), MAX_ARCHIVE, body)
            .await
            .map_err(|e| e.into_gateway())?;
        metrics::histogram!(names::LOG_ARCHIVE_WRITE_SECONDS, "source" => source)
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(build_id = %id, bytes = stored.size, source, "build log archived");
        Ok(ArchiveWritten {
            id,
            size: stored.size as i64,
            sha256: stored.sha256,
        })
    }

    /// The build's whole log from the lines this gateway's live feed held for it, when they
    /// provably are all of it: no line stored on a writer's subject before the first line held
    /// (the feed hands on every line in stream order, so none is missing after it), and each
    /// writer's last stored line, as the stream's leader says, among them. That costs one
    /// look-up per writer each way, where reading the stream costs a consumer per writer and
    /// page (~60 ms each under load; the archiver fell behind the farm, docs/benchmarks.md).
    /// None: read the stream.
    async fn whole_log_held(
        &self,
        id: BuildId,
        holders: &HashMap<Attempt, WorkerId>,
    ) -> Result<Option<Vec<Entry>>> {
        let held = self.st.live.held(id);
        let Some(first) = held.first() else {
            return Ok(None);
        };
        let writers = writer_subjects(id, holders);
        let nats = &self.st.nats;
        let (before, lasts) = futures::future::try_join(
            stream_page::first_after(nats, subjects::LOGS_STREAM, &writers, 0),
            futures::future::try_join_all(
                writers
                    .iter()
                    .map(|w| stream_page::last_on(nats, subjects::LOGS_STREAM, w)),
            ),
        )
        .await?;
        if before.is_some_and(|seq| seq < first.seq) {
            return Ok(None);
        }
        if lasts
            .iter()
            .any(|&last| last > 0 && !held.iter().any(|l| l.seq == last))
        {
            return Ok(None);
        }
        Ok(Some(
            held.iter()
                .filter_map(|l| entry(id, holders, l.seq, Some(l.writer), l.line.clone()))
                .collect(),
        ))
    }

    /// Archives on every tick and whenever a build ends, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let tick = self
            .settle
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(100));
        let finished = self.st.live.finished.clone();
        loop {
            let busy = match self.run_once().await {
                Ok(n) => n as i64 >= BATCH,
                Err(e) => {
                    tracing::warn!(error = %e.detail(), "log archiver pass failed; retrying");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                // A build just ended: its log is due once it settled.
                _ = finished.notified() => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.settle) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Lines as the archive holds them: one JSON `LogEntry` per line.
fn encode(lines: &[Entry]) -> Bytes {
    let mut out = Vec::new();
    for line in lines {
        if serde_json::to_writer(&mut out, line).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

/// The archived lines of `b` after `after`, oldest first, streamed from storage.
pub async fn read(
    st: &AppState,
    b: &Build,
    after: u64,
) -> Result<impl Stream<Item = Result<Entry>> + Send + 'static + use<>> {
    let resp = st
        .storage
        .get(&ObjectKey::Logs(b.id), None)
        .await
        .map_err(|e| e.into_gateway())?;
    match resp.status().as_u16() {
        200 => {}
        404 if b.purged_at.is_some() => {
            return Err(GatewayError::new(
                ErrorCode::Gone,
                "the build's log was deleted by retention with its other files",
            )
            .hint("retention keeps files for FREEAGENT_RETENTION (30 days by default)"));
        }
        s => {
            return Err(GatewayError::unavailable(format!(
                "storage answered {s} for the build's log archive"
            )));
        }
    }
    let bytes = resp.bytes_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(bytes);
    let lines = tokio_util::codec::FramedRead::new(
        reader,
        tokio_util::codec::LinesCodec::new_with_max_length(MAX_LINE),
    );
    Ok(lines.filter_map(move |l| async move {
        match l {
            Ok(l) if l.is_empty() => None,
            Ok(l) => match serde_json::from_str::<Entry>(&l) {
                Ok(e) if e.seq > after => Some(Ok(e)),
                Ok(_) => None,
                Err(e) => Some(Err(GatewayError::unavailable(format!(
                    "the build's log archive is damaged: {e}"
                )))),
            },
            Err(e) => Some(Err(GatewayError::unavailable(format!(
                "cannot read the build's log archive: {e}"
            )))),
        }
    }))
}
