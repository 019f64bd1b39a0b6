//! Build logs, read back from the `LOGS` stream (`logs.<build_id>.<worker_id>`). A line's `seq`
//! is its JetStream sequence, so `after` resumes exactly where the last page ended. A worker's
//! lines are stored by the scheduler's log gate (or, for HTTP workers, the gateway) on
//! `logs.*.<its id>` only while it holds the attempt, so the subject names the writer; a line is
//! still shown only if its writer held the attempt it claims (`build_attempts`). Lines on `logs.<build_id>.farm` are the farm's own (only services may publish
//! there).

use crate::error::Result;
use freeagent_shared::db;
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::subjects;
use freeagent_shared::wire::{self, LogLine};
use std::collections::HashMap;

pub const DEFAULT_LOG_LIMIT: usize = 1000;
pub const MAX_LOG_LIMIT: usize = 10_000;

pub use freeagent_shared::api::LogEntry as Entry;

/// One page: the lines, and the stream sequence to resume after (past lines that were skipped).
pub struct Page {
    pub lines: Vec<Entry>,
    pub next_after: u64,
}

/// Who held each attempt of a build: the only writer whose lines count for it.
pub async fn holders(
    pool: &freeagent_shared::db::Pool,
    id: BuildId,
) -> Result<HashMap<Attempt, WorkerId>> {
    Ok(db::builds::build_attempts(pool, id)
        .await?
        .into_iter()
        .map(|a| (a.attempt, a.worker_id))
        .collect())
}

/// Up to `limit` lines after stream sequence `after`, oldest first, written by their attempt's
/// holder.
pub async fn read(
    nats: &async_nats::Client,
    holders: &HashMap<Attempt, WorkerId>,
    id: BuildId,
    after: u64,
    limit: usize,
) -> Result<Page> {
    let stored = crate::logs::stream_page::read(
        nats,
        subjects::LOGS_STREAM,
        Some(subjects::logs_of(id)),
        after,
        limit,
    )
    .await?;
    let mut out = Vec::new();
    let mut next_after = after;
    for m in stored {
        let seq = m.seq;
        next_after = seq;
        let writer = subjects::log_writer(&m.subject);
        let allowed = |l: &LogLine| match writer {
            Some(subjects::LogWriter::Farm) => true,
            Some(subjects::LogWriter::Worker(w)) => holders.get(&l.attempt) == Some(&w),
            None => false,
        };
        match wire::decode::<LogLine>(&m.payload) {
            Ok(l) if !allowed(&l) => {
                tracing::warn!(build_id = %id, seq, writer = ?writer, attempt = %l.attempt, "skipping a log line from a worker that did not hold its attempt");
            }
            Ok(l) => out.push(Entry {
                seq,
                timestamp: l.timestamp,
                level: l.level,
                message: l.message,
                attempt: l.attempt,
            }),
            Err(e) => {
                tracing::warn!(build_id = %id, seq, error = %e, "skipping a malformed log line")
            }
        }
    }
    Ok(Page {
        lines: out,
        next_after,
    })
}

/// The build's whole log from the stream, page by page (for the archive and for downloads of
/// logs not yet archived).
pub fn pages(
    nats: async_nats::Client,
    holders: HashMap<Attempt, WorkerId>,
    id: BuildId,
) -> impl futures::Stream<Item = std::io::Result<Vec<Entry>>> + Send + 'static {
    let holders = std::sync::Arc::new(holders);
    futures::stream::unfold(Some(0u64), move |after| {
        let (nats, holders) = (nats.clone(), holders.clone());
        async move {
            let after = after?;
            match read(&nats, &holders, id, after, MAX_LOG_LIMIT).await {
                Ok(page) if page.next_after == after => None,
                Ok(Page { lines, next_after }) => Some((Ok(lines), Some(next_after))),
                Err(_) => Some((Err(std::io::Error::other("log stream unavailable")), None)),
            }
        }
    })
}
