//! Heartbeats from many workers share one statement: they queue in the shared `Batcher`; each
//! batch checks the credentials in one query, renews every lease in one `UPDATE … FROM
//! unnest(…)`, and answers each request.

use crate::events;
use crate::handlers::{Capabilities, Unavailable, refusal, worker_ok};
use freeagent_shared::batcher::Batcher;
use freeagent_shared::db::builds::Beat;
use freeagent_shared::db::{self, Pool};
use freeagent_shared::ids::{BuildId, WorkerId};
use freeagent_shared::status::BuildStatus;
use freeagent_shared::wire::{HeartbeatReply, HeartbeatRequest, NotYours};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const MAX_BATCH: usize = 512;

/// Heartbeats queue for the shared batcher; one batch at a time keeps leases renewed in order.
#[derive(Clone)]
pub struct HeartbeatBatcher {
    batcher: crate::batcher::Batcher<HeartbeatRequest, HeartbeatReply>,
}

impl HeartbeatBatcher {
    pub fn start(
        pool: Pool,
        nats: async_nats::Client,
        caps: Capabilities,
        lease: Duration,
        stop: CancellationToken,
    ) -> Self {
        let batcher = Batcher::start(MAX_BATCH, 1, stop, move |batch: Vec<HeartbeatRequest>| {
            let (pool, nats, caps) = (pool.clone(), nats.clone(), caps.clone());
            async move {
                let (replies, started) = replies(&pool, &caps, lease, &batch).await?;
                for (id, attempt) in started {
                    events::publish(&nats, id, attempt, BuildStatus::Building).await;
                }
                Ok(replies)
            }
        });
        Self { batcher }
    }

    pub async fn beat(&self, req: HeartbeatRequest) -> Result<HeartbeatReply, Unavailable> {
        crate::batcher::call(&self.batcher, req).await
    }
}

type Started = Vec<(BuildId, freeagent_shared::ids::Attempt)>;

async fn replies(
    pool: &Pool,
    caps: &Capabilities,
    lease: Duration,
    batch: &[HeartbeatRequest],
) -> Result<(Vec<HeartbeatReply>, Started), Unavailable> {
    let mut worker_ids: Vec<WorkerId> = batch.iter().map(|r| r.worker_id).collect();
    worker_ids.sort();
    worker_ids.dedup();
    let workers: HashMap<WorkerId, _> = db::workers::worker_get_many(pool, &worker_ids)
        .await?
        .into_iter()
        .map(|w| (w.id, w))
        .collect();
    let authorized: Vec<bool> = batch
        .iter()
        .map(|r| workers.get(&r.worker_id).is_some_and(worker_ok))
        .collect();
    let beats: Vec<Beat> = batch
        .iter()
        .zip(&authorized)
        .filter(|(_, ok)| **ok)
        .map(|(r, _)| Beat {
            id: r.build_id,
            attempt: r.attempt,
            worker: r.worker_id,
            progress: r.progress.map(|p| i16::from(p.min(100))),
        })
        .collect();
    let renewed = if beats.is_empty() {
        vec![]
    } else {
        db::builds::build_heartbeat_batch(pool, &beats, lease.as_secs_f64()).await?
    };
    let by_key: HashMap<_, _> = renewed
        .iter()
        .map(|r| ((r.id, r.attempt, r.worker_id), r))
        .collect();
    let refused: Vec<BuildId> = beats
        .iter()
        .filter(|b| !by_key.contains_key(&(b.id, b.attempt, b.worker)))
        .map(|b| b.id)
        .collect();
    let current: HashMap<_, _> = if refused.is_empty() {
        HashMap::new()
    } else {
        db::builds::build_current_many(pool, &refused)
            .await?
            .into_iter()
            .collect()
    };
    let seen: Vec<WorkerId> = renewed.iter().map(|r| r.worker_id).collect();
    if !seen.is_empty() {
        db::workers::workers_touch(pool, &seen).await?;
    }
    let replies = batch
        .iter()
        .zip(&authorized)
        .map(|(r, ok)| {
            if !ok {
                return HeartbeatReply::Stop {
                    reason: NotYours::Unauthorized,
                    status: None,
                };
            }
            match by_key.get(&(r.build_id, r.attempt, r.worker_id)) {
                Some(renewed) => HeartbeatReply::Renewed {
                    lease_expires_at: renewed.lease_expires_at,
                    result_url: Some(caps.result_url(
                        r.build_id,
                        r.attempt,
                        renewed.lease_expires_at,
                    )),
                },
                None => match current.get(&r.build_id) {
                    Some(c) => HeartbeatReply::Stop {
                        reason: refusal(c),
                        status: Some(c.status),
                    },
                    None => HeartbeatReply::Stop {
                        reason: NotYours::NotFound,
                        status: None,
                    },
                },
            }
        })
        .collect();
    let started = renewed
        .iter()
        .filter(|r| r.started)
        .map(|r| (r.id, r.attempt))
        .collect();
    Ok((replies, started))
}
