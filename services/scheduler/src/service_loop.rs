//! The one shape of background work: a `run_once` that returns how much it did, called in a loop
//! that wakes on a signal or a jittered tick, runs again at once while there is more, and stops
//! on the shutdown token.

use rand::Rng;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What one pass did: `more` asks to run again without waiting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub done: usize,
    pub more: bool,
}

pub async fn run<F, Fut, E>(
    name: &'static str,
    tick: Duration,
    wake: Arc<Notify>,
    stop: CancellationToken,
    mut run_once: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Pass, E>>,
    E: std::fmt::Display,
{
    let mut failures: u32 = 0;
    loop {
        let pass = tokio::select! {
            _ = stop.cancelled() => return,
            r = run_once() => r,
        };
        let delay = match pass {
            Ok(p) if p.more => {
                failures = 0;
                continue;
            }
            Ok(_) => {
                failures = 0;
                jitter(tick)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                // Back off on repeated failures (a database or NATS outage), up to 30 s.
                let backoff = tick
                    .saturating_mul(2u32.saturating_pow(failures.min(5)))
                    .min(Duration::from_secs(30));
                tracing::warn!(task = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "background pass failed");
                jitter(backoff)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// ±20 % so that replicas do not run in lockstep.
fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.8..1.2);
    d.mul_f64(f)
}
