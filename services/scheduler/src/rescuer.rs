//! The reaper pass: builds whose lease passed its deadline go back to `pending` (dispatched
//! again after a backoff) or to `failed` once their attempts are used up; running builds past
//! their time limit end `failed` and are stopped on their workers. It also publishes the queue
//! depths and live-worker counts as metrics. Safe on any number of replicas (`SKIP LOCKED`).

use crate::events;
use crate::service_loop::Pass;
use freeagent_shared::db::builds::Backoff;
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
    pub backoff: Backoff,
    pub worker_offline_after: Duration,
    pub wake_dispatcher: Arc<Notify>,
}

impl Rescuer {
    pub async fn run_once(&self) -> Result<Pass, db::Error> {
        let rescued =
            db::builds::build_rescue_expired(&self.pool, RESCUE_BATCH, self.backoff).await?;
        for r in &rescued {
            tracing::warn!(build_id = %r.id, attempt = %r.attempt, to = %r.status, "lease expired: worker lost");
            metrics::counter!(freeagent_shared::metrics::LEASES_EXPIRED).increment(1);
            if r.status == BuildStatus::Pending {
                metrics::counter!(freeagent_shared::metrics::RETRIES, "cause" => "lost_worker")
                    .increment(1);
            }
            // An old worker that is only slow must stop too.
            events::cancel(&self.nats, r.worker_id, r.id, r.attempt).await;
            events::log_reaped(&self.nats, r, "worker lost").await;
            events::publish_moved(
                &self.nats,
                r.id,
                r.attempt,
                r.status,
                r.worker_id,
                &r.queue,
                r.platform,
            )
            .await;
        }
        let late = db::builds::build_time_out(&self.pool, RESCUE_BATCH).await?;
        for t in &late {
            tracing::warn!(build_id = %t.id, attempt = %t.attempt, "build timed out; stopping it");
            metrics::counter!(freeagent_shared::metrics::TIMEOUTS).increment(1);
            events::cancel(&self.nats, t.worker_id, t.id, t.attempt).await;
            events::log_reaped(&self.nats, t, "timed out").await;
            events::publish_moved(
                &self.nats,
                t.id,
                t.attempt,
                t.status,
                t.worker_id,
                &t.queue,
                t.platform,
            )
            .await;
        }
        let silent =
            db::workers::workers_mark_offline(&self.pool, self.worker_offline_after.as_secs_f64())
                .await?;
        for (id, name) in silent {
            let event = freeagent_shared::events::FarmEvent::worker(
                id,
                freeagent_shared::events::WorkerChange::Offline,
                freeagent_shared::status::WorkerStatus::Offline,
                Some(name),
            );
            freeagent_shared::events::publish(&self.nats, &event).await;
        }
        if rescued.iter().any(|r| r.status == BuildStatus::Pending) {
            self.wake_dispatcher.notify_one();
        }
        for q in db::builds::build_queue_depths(&self.pool, self.worker_offline_after.as_secs_f64())
            .await?
        {
            metrics::gauge!(freeagent_shared::metrics::QUEUE_DEPTH, "queue" => q.queue.to_string())
                .set(q.pending as f64);
            metrics::gauge!(freeagent_shared::metrics::QUEUE_LIVE_WORKERS, "queue" => q.queue.to_string()).set(q.live_workers as f64);
        }
        let n = rescued.len() + late.len();
        Ok(Pass {
            done: n,
            more: rescued.len() as i64 >= RESCUE_BATCH || late.len() as i64 >= RESCUE_BATCH,
        })
    }
}
