//! What every worker operation shares: the handle (`Handlers`) holding the pool, the NATS client
//! and the settings the operations read; the outage error (`Unavailable`); and the refusal that
//! matches what a transition's guard saw.

use super::Capabilities;
use freeagent_shared::db::builds::{Backoff, Current};
use freeagent_shared::db::{self, Pool};
use freeagent_shared::wire::NotYours;
use std::time::Duration;

/// The worker operations' handle; cheap to clone (every field is shared).
#[derive(Clone)]
pub struct Handlers {
    pub pool: Pool,
    pub nats: async_nats::Client,
    pub caps: Capabilities,
    pub lease: Duration,
    /// The lease of workers that poll over HTTP.
    pub http_lease: Duration,
    pub backoff: Backoff,
    /// Renews workers' NATS credentials (None: NATS without auth).
    pub minter: Option<freeagent_shared::nats_auth::Minter>,
    pub worker_nats_ttl: Duration,
    /// Notified when a claim frees a slot in a queue's dispatch window.
    pub wake_dispatcher: std::sync::Arc<tokio::sync::Notify>,
    /// Who holds which attempt, and each worker's log budget (`log`).
    pub logs: std::sync::Arc<super::LogGate>,
}

impl Handlers {
    /// The lease a claim or heartbeat of `worker` grants, in seconds.
    pub fn lease_secs(&self, worker: &db::workers::Worker) -> f64 {
        if worker.polls_over_http {
            self.http_lease.as_secs_f64()
        } else {
            self.lease.as_secs_f64()
        }
    }
}

/// Why a request could not be handled at all (not a refusal: an outage).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

impl From<db::Error> for Unavailable {
    fn from(e: db::Error) -> Self {
        tracing::error!(error = %e, "database error in a worker operation");
        Unavailable("the scheduler cannot reach its database; retry".into())
    }
}

/// The refusal that matches what the guard saw.
pub(super) fn refusal(current: &Current) -> NotYours {
    if current.status.is_terminal() {
        NotYours::Finished
    } else {
        NotYours::Stale
    }
}
