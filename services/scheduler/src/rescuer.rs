//! Lost workers: builds whose lease passed its deadline go back to `pending` (a new attempt is
//! dispatched after a backoff) or to `failed` once their attempts are used up. The late report of
//! the old worker is then refused by the attempt and worker guards.

use crate::events;
use crate::service_loop::Pass;
use freeagent_shared::db::{self, Pool};
use freeagent_shared::status::BuildStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub const RESCUE_BATCH: i64 = 500;

#[derive(Clone)]
pub struct Rescuer {
    pub pool: Pool,
    pub nats: async_nats::Client,
    pub backoff: Duration,
    pub wake_dispatcher: Arc<Notify>,
}

impl Rescuer {
    pub async fn run_once(&self) -> Result<Pass, db::Error> {
        let rescued =
            db::builds::build_rescue_expired(&self.pool, RESCUE_BATCH, self.backoff.as_secs_f64())
                .await?;
        for r in &rescued {
            tracing::warn!(build_id = %r.id, attempt = %r.attempt, to = %r.status, "lease expired: worker lost");
            metrics::counter!(freeagent_shared::metrics::LEASES_EXPIRED).increment(1);
            events::publish(&self.nats, r.id, r.attempt, r.status).await;
        }
        if rescued.iter().any(|r| r.status == BuildStatus::Pending) {
            self.wake_dispatcher.notify_one();
        }
        Ok(Pass {
            done: rescued.len(),
            more: rescued.len() as i64 >= RESCUE_BATCH,
        })
    }
}
