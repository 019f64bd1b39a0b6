//! The log archive: once a build has ended (and its last lines have settled), its whole log is
//! written to object storage as `builds/<id>/logs`, one JSON `LogEntry` per line, and the build
//! records that. A finished build's log is read from there from then on, so the LOGS stream
//! may keep only recent days; retention deletes the archive with the build's other objects.
//!
//! Background work in the usual shape: `run_once` archives what is due, `run` loops on a tick
//! or a build's end. Builds are leased (`db::builds::logs_archive_lease`), so gateways share the
//! work and a crash mid-archive only delays it.

use super::read::{Entry, holders, pages};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use bytes::Bytes;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::db;
use freeagent_shared::db::builds::Build;
use freeagent_shared::ids::BuildId;
use freeagent_shared::object_key::ObjectKey;
use futures::{Stream, StreamExt, TryStreamExt};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Builds archived per pass.
const BATCH: i64 = 32;
/// Archives written at once.
const CONCURRENCY: usize = 4;
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

    /// Archives every build that is due; returns how many.
    pub async fn run_once(&self) -> Result<usize> {
        let ids = db::builds::logs_archive_lease(&self.st.pool, self.settle, LEASE, BATCH).await?;
        let n = ids.len();
        let results: Vec<(BuildId, Result<()>)> = futures::stream::iter(ids)
            .map(|id| async move { (id, self.archive(id).await) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (id, r) in results {
            match r {
                Ok(()) => metrics::counter!("freeagent_log_archives_total").increment(1),
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
        Ok(n)
    }

    /// Reads the build's whole log from the stream and stores it.
    async fn archive(&self, id: BuildId) -> Result<()> {
        let holders = holders(&self.st.pool, id).await?;
        let body = pages(self.st.nats.clone(), holders, id, true).map_ok(|page| {
            let mut out = Vec::new();
            for line in &page {
                if serde_json::to_writer(&mut out, line).is_ok() {
                    out.push(b'\n');
                }
            }
            Bytes::from(out)
        });
        let stored = self
            .st
            .storage
            .put_stream(&ObjectKey::Logs(id), MAX_ARCHIVE, body)
            .await
            .map_err(|e| e.into_gateway())?;
        db::builds::logs_archive_done(&self.st.pool, id, stored.size as i64, &stored.sha256)
            .await?;
        tracing::debug!(build_id = %id, bytes = stored.size, "build log archived");
        Ok(())
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
