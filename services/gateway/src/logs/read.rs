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

/// One page: the lines, the stream sequence to resume after (past lines that were skipped), and
/// whether the page is known to end the log (a finished build's, short, and holding every
/// writer's last line as the stream's leader says), so that no reader asks for a page after it.
pub struct Page {
    pub lines: Vec<Entry>,
    pub next_after: u64,
    pub last: bool,
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

/// How far a build's first line may precede its id's own time: the id (UUIDv7) is made on the
/// gateway's clock, the line's time is the NATS server's, so this is the clock skew between
/// hosts that a log read tolerates (NTP keeps it to milliseconds).
pub const CLOCK_SKEW_TOLERATED: chrono::Duration = chrono::Duration::minutes(10);

/// No line of build `id` was stored before this: its id was made (on the submitting gateway's
/// clock) before its first line, less the clock skew tolerated.
fn first_line_not_before(id: BuildId) -> chrono::DateTime<chrono::Utc> {
    let made = id
        .as_uuid()
        .get_timestamp()
        .and_then(|t| {
            let (secs, nanos) = t.to_unix();
            chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
        })
        .unwrap_or(chrono::DateTime::UNIX_EPOCH);
    made - CLOCK_SKEW_TOLERATED
}

/// The subjects whose lines count for build `id`: the farm's, and each holder's.
pub fn writer_subjects(id: BuildId, holders: &HashMap<Attempt, WorkerId>) -> Vec<String> {
    let mut writers = vec![subjects::farm_logs(id)];
    for w in holders.values() {
        let subject = subjects::logs(id, *w);
        if !writers.contains(&subject) {
            writers.push(subject);
        }
    }
    writers
}

/// Up to `limit` lines after stream sequence `after`, oldest first, written by their attempt's
/// holder.
///
/// Read per writer: the farm's subject and each holder's, each its own page, merged by
/// sequence. A consumer on one literal subject costs the server a look-up per message block;
/// one on `logs.<id>.>` made it test every subject stored (docs/benchmarks.md, "The per-build
/// cost budget"). Lines of workers that never held an attempt are not read at all.
pub async fn read(
    nats: &async_nats::Client,
    holders: &HashMap<Attempt, WorkerId>,
    id: BuildId,
    after: u64,
    limit: usize,
    finished: bool,
) -> Result<Page> {
    let writers = writer_subjects(id, holders);
    let not_before = Some(first_line_not_before(id));
    let pages = futures::future::try_join_all(writers.iter().cloned().map(|subject| {
        crate::logs::stream_page::read(
            nats,
            subjects::LOGS_STREAM,
            Some(subject),
            after,
            not_before,
            limit,
        )
    }))
    .await?;
    let mut stored: Vec<_> = pages.into_iter().flatten().collect();
    stored.sort_by_key(|m| m.seq);
    stored.truncate(limit);
    // A finished build's lines were all stored before its outcome was (the worker waits for
    // their acks): where the leader says they end is final. A running build's may grow between
    // the page and the question, and its short page is not read as the end anyway.
    let last = finished && stored.len() < limit;
    if last {
        ends_where_the_leader_says(nats, &writers, after, &stored).await?;
    }
    let mut out = Vec::new();
    let mut next_after = after;
    for m in stored {
        next_after = m.seq;
        let writer = subjects::log_writer(&m.subject);
        match wire::decode::<LogLine>(&m.payload) {
            Ok(l) => out.extend(entry(id, holders, m.seq, writer, l)),
            Err(e) => {
                tracing::warn!(build_id = %id, seq = m.seq, error = %e, "skipping a malformed log line")
            }
        }
    }
    Ok(Page {
        lines: out,
        next_after,
        last,
    })
}

/// A stored line as the API shows it, if its writer may write it: the farm, or the worker that
/// held the attempt the line claims.
pub fn entry(
    id: BuildId,
    holders: &HashMap<Attempt, WorkerId>,
    seq: u64,
    writer: Option<subjects::LogWriter>,
    l: LogLine,
) -> Option<Entry> {
    let allowed = match writer {
        Some(subjects::LogWriter::Farm) => true,
        Some(subjects::LogWriter::Worker(w)) => holders.get(&l.attempt) == Some(&w),
        None => false,
    };
    if !allowed {
        tracing::warn!(build_id = %id, seq, writer = ?writer, attempt = %l.attempt, "skipping a log line from a worker that did not hold its attempt");
        return None;
    }
    Some(Entry {
        seq,
        timestamp: l.timestamp,
        level: l.level,
        message: l.message,
        attempt: l.attempt,
        stream: l.stream,
    })
}

/// A page shorter than asked for says "this is the end of the log", which the archive keeps for
/// good: it must hold every writer's last stored line. On a cluster a page's consumer can sit on
/// a copy of the stream still catching up after its node came back, whose view ends early; the
/// stream's leader says where each writer's lines end, and a page that stops short is refused
/// (503, try again) rather than read as the end.
async fn ends_where_the_leader_says(
    nats: &async_nats::Client,
    writers: &[String],
    after: u64,
    page: &[crate::logs::stream_page::Stored],
) -> Result<()> {
    let lasts =
        futures::future::try_join_all(writers.iter().map(|subject| {
            crate::logs::stream_page::last_on(nats, subjects::LOGS_STREAM, subject)
        }))
        .await?;
    for (subject, last) in writers.iter().zip(lasts) {
        let read = last <= after
            || page
                .iter()
                .any(|m| m.seq == last && m.subject.as_str() == subject);
        if !read {
            return Err(crate::error::GatewayError::unavailable(format!(
                "a copy of the LOGS stream behind its leader answered (it ends before sequence {last} of {subject}); try again"
            )));
        }
    }
    Ok(())
}

/// The build's whole log from the stream, page by page (for the archive and for downloads of
/// logs not yet archived). A finished build's log ends at its last page: asking for one more, to
/// find it empty, would cost a consumer and a leader's look-up per writer again (half of an
/// archive's JetStream requests for a short log).
pub fn pages(
    nats: async_nats::Client,
    holders: HashMap<Attempt, WorkerId>,
    id: BuildId,
    finished: bool,
) -> impl futures::Stream<Item = std::io::Result<Vec<Entry>>> + Send + 'static {
    let holders = std::sync::Arc::new(holders);
    futures::stream::unfold(Some(0u64), move |after| {
        let (nats, holders) = (nats.clone(), holders.clone());
        async move {
            let after = after?;
            match read(&nats, &holders, id, after, MAX_LOG_LIMIT, finished).await {
                Ok(page) if page.next_after == after => None,
                Ok(Page {
                    lines,
                    next_after,
                    last,
                }) => Some((Ok(lines), (!last).then_some(next_after))),
                Err(_) => Some((Err(std::io::Error::other("log stream unavailable")), None)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_read_starts_at_the_build_ids_time() {
        let before = chrono::Utc::now();
        let id = BuildId::new();
        let after = chrono::Utc::now();
        let start = first_line_not_before(id);
        // UUIDv7 keeps milliseconds.
        assert!(start >= before - CLOCK_SKEW_TOLERATED - chrono::Duration::milliseconds(1));
        assert!(start <= after - CLOCK_SKEW_TOLERATED);

        // An id without a time (not a UUIDv7) is read from the stream's start: nothing missed.
        let untimed: BuildId = "42424242-4242-4242-8242-424242424242".parse().unwrap();
        assert_eq!(
            first_line_not_before(untimed),
            chrono::DateTime::UNIX_EPOCH - CLOCK_SKEW_TOLERATED
        );
    }
}
