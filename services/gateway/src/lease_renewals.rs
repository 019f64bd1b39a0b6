//! Reports from a worker about the build it holds (log lines, telemetry, the VM's certs fetch, a
//! long result upload) renew the build's lease, as the seed's controller treated them: its macOS app never
//! calls a heartbeat route. A build's reports renew at most once per `EVERY` per gateway, so a
//! build that prints thousands of lines a second costs the scheduler one heartbeat, not
//! thousands.

use crate::auth::WorkerCaller;
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use freeagent_shared::db::builds::Build;
use freeagent_shared::ids::{Attempt, BuildId};
use freeagent_shared::wire::{HeartbeatReply, HeartbeatRequest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Far below any lease (30 s for NATS workers, 2 min for HTTP ones by default).
const EVERY: Duration = Duration::from_secs(5);

/// How often a long piece of work for a held build (a result upload) renews its lease.
const DURING_WORK: Duration = Duration::from_secs(20);

/// Past this many builds remembered, renewals older than `EVERY` are forgotten.
const PRUNE_AT: usize = 4096;

#[derive(Clone, Default)]
pub struct LeaseRenewals {
    last: Arc<Mutex<HashMap<(BuildId, Attempt), Instant>>>,
}

impl LeaseRenewals {
    /// Whether a renewal of this attempt is due now; if so, it counts as done.
    fn due(&self, b: &Build) -> bool {
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

/// Runs `work` (a result upload) while renewing `b`'s lease every `DURING_WORK`: an upload that
/// outlasts the lease must not lose the build it completes. A short one costs no renewal.
pub async fn while_renewing<T>(
    st: &AppState,
    caller: &WorkerCaller,
    b: &Build,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + DURING_WORK, DURING_WORK);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => renew(st, caller, b).await,
        }
    }
}

/// Renews `b`'s lease for its holder if a renewal is due. A failed renewal does not fail the
/// report that carried it: the next report (or the lease's end) settles it.
pub async fn renew(st: &AppState, caller: &WorkerCaller, b: &Build) {
    if !st.lease_renewals.due(b) {
        return;
    }
    if let Err(e) = beat(st, caller, b, None).await {
        tracing::warn!(build_id = %b.id, worker_id = %caller.id(), error = %e.detail(), "a report could not renew its build's lease");
    }
}

/// Renews the lease of a held build; `true` when the worker must stop it.
pub async fn beat(
    st: &AppState,
    caller: &WorkerCaller,
    b: &Build,
    progress: Option<u8>,
) -> Result<bool> {
    let req = HeartbeatRequest {
        build_id: b.id,
        attempt: b.attempt,
        worker_id: caller.id(),
        progress,
    };
    match st.scheduler.heartbeat(&req, Duration::from_secs(5)).await {
        Ok(HeartbeatReply::Renewed { .. }) => Ok(false),
        Ok(HeartbeatReply::Stop { .. }) => Ok(true),
        Ok(other) => Err(GatewayError::unavailable(format!("heartbeat: {other:?}"))),
        Err(e) => Err(GatewayError::unavailable(e)),
    }
}
