//! What one worker may write to the LOGS stream (ADR-0018), counted the same way wherever its
//! lines enter the farm: the scheduler's log gate (NATS workers) and the gateway's log route
//! (HTTP workers, the seed's Mac app). Lines and bytes per second per worker, across its
//! builds, and bytes per attempt.

use crate::config::{self, ConfigError};
use crate::ids::{Attempt, BuildId, WorkerId};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What an attempt may write past `FREEAGENT_LOG_MAX_BYTES`: the worker keeps the last lines of
/// a log past its cap (up to 1 MiB) and notes where lines were dropped.
pub const TAIL_ALLOWANCE: u64 = 2 << 20;

pub const DEFAULT_LINES_PER_SEC: u32 = 20_000;
pub const DEFAULT_BYTES_PER_SEC: u64 = 16 << 20;
pub const DEFAULT_ATTEMPT_MAX_BYTES: u64 = 64 << 20;

/// What one worker may write: `FREEAGENT_WORKER_LOG_LINES_PER_SEC`,
/// `FREEAGENT_WORKER_LOG_BYTES_PER_SEC` (both across all its builds, one second's worth as a
/// burst) and, per attempt, `FREEAGENT_LOG_MAX_BYTES` (the workers' own cap) plus the tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBudget {
    pub lines_per_sec: u32,
    pub bytes_per_sec: u32,
    pub attempt_max_bytes: u64,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            lines_per_sec: DEFAULT_LINES_PER_SEC,
            bytes_per_sec: DEFAULT_BYTES_PER_SEC as u32,
            attempt_max_bytes: DEFAULT_ATTEMPT_MAX_BYTES + TAIL_ALLOWANCE,
        }
    }
}

impl LogBudget {
    pub fn from_env() -> Result<Self, ConfigError> {
        let bytes = config::bytes("FREEAGENT_WORKER_LOG_BYTES_PER_SEC", DEFAULT_BYTES_PER_SEC)?;
        Ok(LogBudget {
            lines_per_sec: config::parse(
                "FREEAGENT_WORKER_LOG_LINES_PER_SEC",
                DEFAULT_LINES_PER_SEC,
                "lines per second",
            )?,
            bytes_per_sec: u32::try_from(bytes).unwrap_or(u32::MAX),
            attempt_max_bytes: config::bytes("FREEAGENT_LOG_MAX_BYTES", DEFAULT_ATTEMPT_MAX_BYTES)?
                .saturating_add(TAIL_ALLOWANCE),
        })
    }
}

/// Each worker's buckets: lines and bytes per second.
pub struct WorkerBuckets {
    budget: LogBudget,
    lines: DefaultKeyedRateLimiter<WorkerId>,
    bytes: DefaultKeyedRateLimiter<WorkerId>,
}

fn keyed(per_sec: u32) -> DefaultKeyedRateLimiter<WorkerId> {
    let per_sec = NonZeroU32::new(per_sec.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(per_sec))
}

impl WorkerBuckets {
    pub fn new(budget: LogBudget) -> Self {
        WorkerBuckets {
            budget,
            lines: keyed(budget.lines_per_sec),
            bytes: keyed(budget.bytes_per_sec),
        }
    }

    pub fn budget(&self) -> LogBudget {
        self.budget
    }

    /// Takes a batch's lines and bytes from the worker's buckets, or says how long to wait.
    pub fn take(&self, worker: WorkerId, lines: u32, bytes: u32) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        for (limiter, n, per_sec) in [
            (&self.lines, lines, self.budget.lines_per_sec),
            (&self.bytes, bytes, self.budget.bytes_per_sec),
        ] {
            let Some(n) = NonZeroU32::new(n) else {
                continue;
            };
            match limiter.check_key_n(&worker, n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => return Err(not_until.wait_time_from(now)),
                // More than one second's budget in one batch: it waits the batch's share.
                Err(_) => {
                    return Err(Duration::from_secs_f64(
                        f64::from(n.get()) / f64::from(per_sec.max(1)),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Forgets idle workers' buckets, so memory follows the workers that write.
    pub fn forget_idle(&self) {
        self.lines.retain_recent();
        self.bytes.retain_recent();
    }
}

/// Bytes each attempt wrote, against `LogBudget::attempt_max_bytes` (attempts idle for a while
/// are forgotten).
#[derive(Default)]
pub struct AttemptBytes {
    written: Mutex<HashMap<(BuildId, Attempt), (u64, Instant)>>,
}

/// Past this many attempts remembered, those idle for `IDLE` are forgotten.
const REMEMBERED: usize = 4096;
const IDLE: Duration = Duration::from_secs(600);

impl AttemptBytes {
    /// Adds `bytes` to the attempt's count if that stays within `cap`; false (nothing added)
    /// if it would not.
    pub fn charge(&self, build: BuildId, attempt: Attempt, bytes: u64, cap: u64) -> bool {
        let Ok(mut written) = self.written.lock() else {
            return true;
        };
        if written.len() >= REMEMBERED {
            written.retain(|_, (_, at)| at.elapsed() < IDLE);
        }
        let (n, at) = written
            .entry((build, attempt))
            .or_insert((0, Instant::now()));
        if n.saturating_add(bytes) > cap {
            return false;
        }
        *n += bytes;
        *at = Instant::now();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_over_its_budget_is_told_to_wait() {
        let b = WorkerBuckets::new(LogBudget {
            lines_per_sec: 100,
            bytes_per_sec: 1 << 20,
            attempt_max_bytes: 1 << 20,
        });
        let (w1, w2) = (WorkerId::new(), WorkerId::new());
        assert!(b.take(w1, 100, 100).is_ok());
        let wait = b.take(w1, 10, 10).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(110),
            "{wait:?}"
        );
        // Another worker's budget is its own.
        assert!(b.take(w2, 100, 100).is_ok());
        // Bytes count as well as lines.
        let w3 = WorkerId::new();
        assert!(b.take(w3, 1, 1 << 20).is_ok());
        assert!(b.take(w3, 1, 1 << 10).is_err());
    }

    #[test]
    fn an_attempt_stops_at_its_cap() {
        let a = AttemptBytes::default();
        let (b, at) = (BuildId::new(), Attempt::NONE);
        assert!(a.charge(b, at, 600, 1000));
        assert!(!a.charge(b, at, 600, 1000));
        assert!(a.charge(b, at, 400, 1000));
        assert!(a.charge(BuildId::new(), at, 1000, 1000));
    }
}
