//! Log: the gate every line a NATS worker writes passes on its way to the LOGS stream. A worker
//! sends a run of one attempt's lines (`scheduler.log.<worker>`); the gate stores them on
//! `logs.<build>.<worker>` only while that worker holds that attempt, within the worker's budget
//! (lines and bytes per second, across all its builds) and the attempt's byte cap. So no worker
//! can fill the stream with lines of builds it does not hold, nor push another build's log out
//! of it (ADR-0018).
//!
//! Who holds an attempt is read from the database on a worker's first batch for it and again
//! every `RECHECK` (its holder may still write once it ended: the lines a cancel or a timeout
//! caught on their way); look-ups that find nothing held are budgeted too, so made-up build ids cost
//! the database little. The state is per scheduler replica: behind n replicas a worker may write
//! up to n times its budget.

use super::{Handlers, Unavailable};
use freeagent_shared::db;
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::log_budget::WorkerBuckets;
pub use freeagent_shared::log_budget::{LogBudget, TAIL_ALLOWANCE};
use freeagent_shared::metrics as m;
use freeagent_shared::nats;
use freeagent_shared::status::BuildStatus;
use freeagent_shared::subjects;
use freeagent_shared::wire::{self, LogBatch, LogLine, LogReply, MAX_LOG_BATCH_LINES, NotYours};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A held attempt is looked up again this often (a cancelled or requeued one stops taking lines
/// within it).
const RECHECK: Duration = Duration::from_secs(5);
/// Look-ups of attempts per worker and second (and its burst): a worker holds a few attempts,
/// each looked up once per `RECHECK`.
const LOOKUPS_PER_SEC: u32 = 50;
const LOOKUPS_BURST: u32 = 100;
/// Past this many held attempts remembered, those idle for `IDLE` are forgotten.
const REMEMBERED: usize = 4096;
const IDLE: Duration = Duration::from_secs(60);
/// The gate's state: each worker's buckets and the attempts it was seen to hold.
pub struct LogGate {
    budget: LogBudget,
    buckets: WorkerBuckets,
    lookups: DefaultKeyedRateLimiter<WorkerId>,
    held: Mutex<HashMap<(BuildId, Attempt), Held>>,
    /// One batch of an attempt at a time: a request the worker's client sent again while the
    /// first was still on its way (a reconnect flushes both) must see what the first stored.
    turns: Vec<tokio::sync::Mutex<()>>,
    hasher: std::hash::RandomState,
}

/// Attempts share `TURNS` locks, by hash.
const TURNS: usize = 256;

#[derive(Clone, Copy)]
struct Held {
    worker: WorkerId,
    checked: Instant,
    touched: Instant,
    /// The last line stored (a batch sent again after a lost reply is not stored twice).
    last_seq: u64,
    bytes: u64,
    /// `last_seq` may be behind the stream: this replica has not stored this attempt's lines
    /// before, or a publish's acknowledgement was lost (the line may be stored all the same).
    unsure: bool,
    /// This replica published lines of this attempt before.
    published: bool,
}

impl Held {
    fn new(worker: WorkerId, now: Instant) -> Self {
        Held {
            worker,
            checked: now,
            touched: now,
            last_seq: 0,
            bytes: 0,
            unsure: true,
            published: false,
        }
    }
}

enum Holding {
    Yes(Held),
    No(NotYours),
    /// Over the look-up budget: ask again later.
    Wait(Duration),
}

impl LogGate {
    pub fn new(budget: LogBudget) -> Self {
        let lookups = NonZeroU32::new(LOOKUPS_PER_SEC).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(LOOKUPS_BURST).unwrap_or(lookups);
        LogGate {
            budget,
            buckets: WorkerBuckets::new(budget),
            lookups: RateLimiter::keyed(Quota::per_second(lookups).allow_burst(burst)),
            held: Mutex::new(HashMap::new()),
            turns: (0..TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn turn(&self, build: BuildId, attempt: Attempt) -> &tokio::sync::Mutex<()> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one((build, attempt));
        &self.turns[(h as usize) % self.turns.len()]
    }

    fn remembered(&self, build: BuildId, attempt: Attempt, worker: WorkerId) -> Option<Held> {
        let held = self.held.lock().ok()?;
        held.get(&(build, attempt))
            .filter(|h| h.worker == worker && h.checked.elapsed() < RECHECK)
            .copied()
    }

    fn remember(&self, build: BuildId, attempt: Attempt, worker: WorkerId) -> Held {
        let now = Instant::now();
        let Ok(mut held) = self.held.lock() else {
            return Held::new(worker, now);
        };
        if held.len() >= REMEMBERED {
            held.retain(|_, h| h.touched.elapsed() < IDLE);
        }
        let h = held
            .entry((build, attempt))
            .or_insert(Held::new(worker, now));
        // A worker that holds the attempt now (the one before lost it, or it is the same).
        if h.worker != worker {
            *h = Held::new(worker, now);
        }
        h.checked = now;
        *h
    }

    fn forget(&self, build: BuildId, attempt: Attempt) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&(build, attempt));
        }
    }

    /// Records what a publish stored (`sure`: every line sent was acknowledged, or the stream
    /// was read).
    fn stored(&self, build: BuildId, attempt: Attempt, through: u64, bytes: u64, sure: bool) {
        if let Ok(mut held) = self.held.lock()
            && let Some(h) = held.get_mut(&(build, attempt))
        {
            h.last_seq = h.last_seq.max(through);
            h.bytes += bytes;
            h.touched = Instant::now();
            h.unsure = !sure;
            h.published = true;
        }
    }
}

/// Why a batch cannot be taken as sent.
fn malformed(b: &LogBatch) -> Option<String> {
    if b.lines.len() > MAX_LOG_BATCH_LINES {
        return Some(format!("at most {MAX_LOG_BATCH_LINES} lines per batch"));
    }
    if b.lines
        .iter()
        .any(|l| l.build_id != b.build_id || l.attempt != b.attempt)
    {
        return Some("every line of a batch names the batch's build and attempt".into());
    }
    if b.lines.windows(2).any(|w| w[0].seq >= w[1].seq) {
        return Some("a batch's lines come in increasing seq".into());
    }
    None
}

fn refused(reason: &'static str, lines: usize) {
    metrics::counter!(m::LOG_LINES_REFUSED, "reason" => reason).increment(lines as u64);
}

impl Handlers {
    /// Stores a worker's batch of log lines if it holds the attempt and has budget left.
    pub async fn log(&self, batch: LogBatch) -> Result<LogReply, Unavailable> {
        if let Some(message) = malformed(&batch) {
            return Ok(LogReply::Error { message });
        }
        let (worker, build, attempt) = (batch.worker_id, batch.build_id, batch.attempt);
        let _turn = self.logs.turn(build, attempt).lock().await;
        let held = match self.holding(worker, build, attempt).await? {
            Holding::Yes(h) => h,
            Holding::No(reason) => {
                refused("not_held", batch.lines.len());
                return Ok(LogReply::NotYours { reason });
            }
            Holding::Wait(wait) => {
                refused("budget", batch.lines.len());
                return Ok(slow(0, wait));
            }
        };
        // The stream may hold more of this attempt than this replica knows: a line whose
        // acknowledgement was lost, or lines another replica stored before its answer was lost.
        // The attempt's first batch (from `seq` 1) needs no look: nothing can precede it.
        let first = batch.lines.first().map_or(0, |l| l.seq);
        let mut held = held;
        if held.unsure && (first > 1 || held.published) {
            let stored = self.last_stored(worker, build, attempt).await?;
            held.last_seq = held.last_seq.max(stored);
            self.logs.stored(build, attempt, stored, 0, true);
        }
        let fresh: Vec<&LogLine> = batch
            .lines
            .iter()
            .filter(|l| l.seq > held.last_seq)
            .collect();
        let Some(last) = fresh.last() else {
            return Ok(LogReply::Stored {
                through: held.last_seq,
            });
        };
        let last = last.seq;
        // The attempt's cap: what fits is stored, the rest refused for good.
        let mut room = self
            .logs
            .budget
            .attempt_max_bytes
            .saturating_sub(held.bytes);
        let fits: Vec<&LogLine> = fresh
            .iter()
            .take_while(|l| {
                let n = l.message.len() as u64;
                let ok = n <= room;
                room = room.saturating_sub(n);
                ok
            })
            .copied()
            .collect();
        if fits.is_empty() {
            refused("cap", fresh.len());
            return Ok(LogReply::Error {
                message: format!(
                    "this attempt's log is past its cap of {} bytes (FREEAGENT_LOG_MAX_BYTES at the scheduler, plus {TAIL_ALLOWANCE} for its last lines)",
                    self.logs.budget.attempt_max_bytes
                ),
            });
        }
        let bytes: u64 = fits.iter().map(|l| l.message.len() as u64).sum();
        let n = u32::try_from(fits.len()).unwrap_or(u32::MAX);
        if let Err(wait) =
            self.logs
                .buckets
                .take(worker, n, u32::try_from(bytes).unwrap_or(u32::MAX))
        {
            refused("budget", fresh.len());
            return Ok(slow(held.last_seq, wait));
        }
        let through = self.publish(worker, build, &fits).await;
        let stored_bytes: u64 = fits
            .iter()
            .take_while(|l| l.seq <= through)
            .map(|l| l.message.len() as u64)
            .sum();
        let sure = fits.last().is_some_and(|l| l.seq == through);
        self.logs
            .stored(build, attempt, through, stored_bytes, sure);
        let stored = fits.iter().filter(|l| l.seq <= through).count();
        metrics::counter!(m::LOG_LINES_STORED).increment(stored as u64);
        if stored == 0 {
            return Err(Unavailable(
                "the LOGS stream did not take the lines; send them again".into(),
            ));
        }
        if through < last && fits.len() < fresh.len() && stored == fits.len() {
            refused("cap", fresh.len() - fits.len());
        }
        Ok(LogReply::Stored { through })
    }

    async fn holding(
        &self,
        worker: WorkerId,
        build: BuildId,
        attempt: Attempt,
    ) -> Result<Holding, Unavailable> {
        if let Some(h) = self.logs.remembered(build, attempt, worker) {
            return Ok(Holding::Yes(h));
        }
        if let Err(not_until) = self.logs.lookups.check_key(&worker) {
            return Ok(Holding::Wait(
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
        // Its holder may still write an attempt's last lines after the attempt ended (a cancel,
        // a timeout): they are its own build's, and the attempt's cap bounds them.
        let reason = match db::builds::build_current(&self.pool, build).await? {
            None => Some(NotYours::NotFound),
            Some(c) if c.attempt != attempt || c.worker_id != Some(worker) => {
                Some(if c.status.is_terminal() {
                    NotYours::Finished
                } else {
                    NotYours::Stale
                })
            }
            Some(c) if c.status == BuildStatus::Pending => Some(NotYours::Stale),
            Some(_) => None,
        };
        Ok(match reason {
            Some(reason) => {
                self.logs.forget(build, attempt);
                Holding::No(reason)
            }
            None => Holding::Yes(self.logs.remember(build, attempt, worker)),
        })
    }

    /// The `seq` of the last line of this attempt the stream holds from `worker` (0: none).
    async fn last_stored(
        &self,
        worker: WorkerId,
        build: BuildId,
        attempt: Attempt,
    ) -> Result<u64, Unavailable> {
        let js = async_nats::jetstream::new(self.nats.clone());
        let last = nats::last_on(&js, subjects::LOGS_STREAM, &subjects::logs(build, worker))
            .await
            .map_err(|e| Unavailable(format!("{e}; send again")))?;
        Ok(last
            .and_then(|m| wire::decode::<LogLine>(&m.payload).ok())
            .filter(|l| l.attempt == attempt)
            .map_or(0, |l| l.seq))
    }

    /// Publishes the lines in order, acknowledgements pipelined; the seq of the last line of
    /// the unbroken run the stream acknowledged (before the first: `lines[0].seq - 1`).
    async fn publish(&self, worker: WorkerId, build: BuildId, lines: &[&LogLine]) -> u64 {
        let js = async_nats::jetstream::new(self.nats.clone());
        let subject = subjects::logs(build, worker);
        let mut through = lines.first().map_or(0, |l| l.seq.saturating_sub(1));
        let mut acks = Vec::with_capacity(lines.len());
        for l in lines {
            match js.publish(subject.clone(), wire::encode(l).into()).await {
                Ok(ack) => acks.push((l.seq, ack)),
                Err(_) => break,
            }
        }
        for (seq, ack) in acks {
            if freeagent_shared::nats::stored(ack, subjects::LOGS_STREAM)
                .await
                .is_err()
            {
                break;
            }
            through = seq;
        }
        through
    }
}

fn slow(through: u64, wait: Duration) -> LogReply {
    LogReply::Slow {
        through,
        retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use freeagent_shared::wire::LogLevel;

    fn batch(seqs: &[u64]) -> LogBatch {
        let (build, attempt) = (BuildId::new(), Attempt::NONE);
        LogBatch {
            worker_id: WorkerId::new(),
            build_id: build,
            attempt,
            lines: seqs
                .iter()
                .map(|&seq| LogLine {
                    build_id: build,
                    attempt,
                    seq,
                    timestamp: Utc::now(),
                    level: LogLevel::Info,
                    message: "x".into(),
                    stream: None,
                })
                .collect(),
        }
    }

    #[test]
    fn batches_must_be_one_attempts_lines_in_order() {
        assert_eq!(malformed(&batch(&[1, 2, 3])), None);
        assert!(malformed(&batch(&[2, 1])).is_some());
        let mut b = batch(&[1, 2]);
        b.lines[1].build_id = BuildId::new();
        assert!(malformed(&b).is_some());
        let many: Vec<u64> = (1..=MAX_LOG_BATCH_LINES as u64 + 1).collect();
        assert!(malformed(&batch(&many)).is_some());
    }
}
