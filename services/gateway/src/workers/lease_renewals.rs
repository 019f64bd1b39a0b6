//! When a build's lease was last renewed for its reports on this gateway. Reports from a worker
//! about the build it holds (log lines, telemetry, the VM's certs fetch, a long result upload)
//! renew the build's lease, as the seed's controller treated them: its macOS app never calls a
//! heartbeat route (`adapter::renew`). A build's reports renew at most once per `EVERY` per
//! gateway, so a build that prints thousands of lines a second costs the scheduler one
//! heartbeat, not thousands.

use freeagent_shared::db::builds::Build;
use freeagent_shared::ids::{Attempt, BuildId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Far below any lease (30 s for NATS workers, 2 min for HTTP ones by default).
const EVERY: Duration = Duration::from_secs(5);

/// Past this many builds remembered, renewals older than `EVERY` are forgotten.
const PRUNE_AT: usize = 4096;

#[derive(Clone, Default)]
pub struct LeaseRenewals {
    last: Arc<Mutex<HashMap<(BuildId, Attempt), Instant>>>,
}

impl LeaseRenewals {
    /// Whether a renewal of this attempt is due now; if so, it counts as done.
    pub(crate) fn due(&self, b: &Build) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        let now = Instant::now();
        if last.len() >= PRUNE_AT {
            last.retain(|_, t| now.duration_since(*t) < EVERY);
        }
        match last.get(&(b.id, b.attempt)) {
            Some(t) if now.duration_since(*t) < EVERY => false,
            _ => {
                last.insert((b.id, b.attempt), now);
                true
            }
        }
    }
}
