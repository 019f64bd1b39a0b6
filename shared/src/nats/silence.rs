//! A worker leaves a NATS node that stopped answering its requests, instead of waiting for three
//! unanswered pings (ADR-0023). A frozen or cut-off node keeps its TCP connections open, so the
//! client notices only by its pings; frequent pings found it in time but cost the server a
//! message a second per idle worker. A worker's own requests (presence every 10 s, heartbeats
//! while it builds) find it as fast: a try with no reply forces a reconnect, which moves the
//! connection to another node of a cluster (or back to the same one, answering again).
//!
//! A try also goes unanswered when no scheduler runs, and reconnecting does not help then, so
//! the forced reconnects of one connection are spaced: at least `FIRST_GAP` apart, the gap
//! doubling up to `LONGEST_GAP` while no reply arrives in between. A fleet facing a scheduler
//! outage reconnects a handful of times in its first half hour, not in a storm.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shortest time between two reconnects forced by silence.
pub const FIRST_GAP: Duration = Duration::from_secs(30);
/// The longest, reached while nothing answers at all.
pub const LONGEST_GAP: Duration = Duration::from_secs(600);

/// Shared by the clones of one connection's scheduler client.
#[derive(Clone)]
pub struct SilenceWatch {
    nats: async_nats::Client,
    gaps: Arc<Mutex<Gaps>>,
}

impl SilenceWatch {
    pub fn new(nats: async_nats::Client) -> Self {
        Self {
            nats,
            gaps: Arc::default(),
        }
    }

    /// A reply came: the next silence may reconnect after the shortest gap again.
    pub fn answered(&self) {
        if let Ok(mut g) = self.gaps.lock() {
            g.answered();
        }
    }

    /// A try got no reply within `waited`: reconnects unless the last forced reconnect is too
    /// recent.
    pub async fn unanswered(&self, waited: Duration) {
        let due = self
            .gaps
            .lock()
            .map(|mut g| g.reconnect_due(Instant::now()))
            .unwrap_or(false);
        if !due {
            return;
        }
        tracing::warn!(
            waited_ms = waited.as_millis() as u64,
            "no reply from the scheduler: reconnecting to NATS in case the node stopped answering"
        );
        if let Err(e) = self.nats.force_reconnect().await {
            tracing::warn!(error = %e, "could not reconnect to NATS");
        }
    }
}

/// When the last forced reconnect was, and how long until another may follow.
#[derive(Debug)]
struct Gaps {
    last: Option<Instant>,
    gap: Duration,
    answered_since: bool,
}

impl Default for Gaps {
    fn default() -> Self {
        Self {
            last: None,
            gap: FIRST_GAP,
            answered_since: false,
        }
    }
}

impl Gaps {
    fn answered(&mut self) {
        self.answered_since = true;
    }

    /// Whether a silence at `now` forces a reconnect; if so, records it.
    fn reconnect_due(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let gap = if self.answered_since {
                FIRST_GAP
            } else {
                self.gap
            };
            if now.saturating_duration_since(last) < gap {
                return false;
            }
            // Nothing answered since the last one: reconnecting did not help, wait longer.
            self.gap = if self.answered_since {
                FIRST_GAP
            } else {
                (self.gap * 2).min(LONGEST_GAP)
            };
        }
        self.last = Some(now);
        self.answered_since = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_silence_reconnects_and_the_next_waits_the_gap() {
        let t0 = Instant::now();
        let mut g = Gaps::default();
        assert!(g.reconnect_due(t0));
        assert!(!g.reconnect_due(t0 + Duration::from_secs(3)));
        assert!(!g.reconnect_due(t0 + FIRST_GAP - Duration::from_millis(1)));
        assert!(g.reconnect_due(t0 + FIRST_GAP));
    }

    #[test]
    fn gaps_double_while_nothing_answers_up_to_the_longest() {
        let mut t = Instant::now();
        let mut g = Gaps::default();
        assert!(g.reconnect_due(t));
        let mut reconnects = 1;
        let end = t + Duration::from_secs(30 * 60);
        while t < end {
            t += Duration::from_secs(3);
            if g.reconnect_due(t) {
                reconnects += 1;
            }
        }
        // 0 s, 30 s, 1.5 min, 3.5 min, 7.5 min, 15.5 min, 25.5 min.
        assert_eq!(reconnects, 7, "{g:?}");
        assert_eq!(g.gap, LONGEST_GAP);
    }

    #[test]
    fn an_answer_brings_back_the_shortest_gap() {
        let t0 = Instant::now();
        let mut g = Gaps::default();
        assert!(g.reconnect_due(t0));
        assert!(g.reconnect_due(t0 + FIRST_GAP));
        assert!(g.reconnect_due(t0 + FIRST_GAP * 3));
        g.answered();
        let t1 = t0 + FIRST_GAP * 3 + Duration::from_secs(1);
        assert!(!g.reconnect_due(t1));
        assert!(g.reconnect_due(t0 + FIRST_GAP * 4));
        assert_eq!(g.gap, FIRST_GAP);
    }
}
