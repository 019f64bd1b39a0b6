//! Heartbeats from many workers share one statement: requests queue here, a single task takes
//! whatever has arrived (up to `MAX_BATCH`), checks the credentials in one query, renews every
//! lease in one `UPDATE … FROM unnest(…)`, and answers each request.

use crate::events;
use crate::handlers::{Unavailable, credential_ok, refusal};
use freeagent_shared::capability::Signer;
use freeagent_shared::db::builds::Beat;
use freeagent_shared::db::{self, Pool};
use freeagent_shared::ids::{BuildId, WorkerId};
use freeagent_shared::status::BuildStatus;
use freeagent_shared::wire::{HeartbeatReply, HeartbeatRequest, NotYours};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub const MAX_BATCH: usize = 512;
const QUEUE: usize = 4096;

type Pending = (
    HeartbeatRequest,
    oneshot::Sender<Result<HeartbeatReply, Unavailable>>,
);

#[derive(Clone)]
pub struct HeartbeatBatcher {
    tx: mpsc::Sender<Pending>,
}

impl HeartbeatBatcher {
    pub fn start(
        pool: Pool,
        nats: async_nats::Client,
        signer: Signer,
        lease: Duration,
        stop: CancellationToken,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE);
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = stop.cancelled() => return,
                    p = rx.recv() => match p { Some(p) => p, None => return },
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                apply(&pool, &nats, &signer, lease, batch).await;
            }
        });
        Self { tx }
    }

    pub async fn beat(&self, req: HeartbeatRequest) -> Result<HeartbeatReply, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((req, tx))
            .await
            .map_err(|_| Unavailable("the scheduler is shutting down; retry".into()))?;
        rx.await
            .map_err(|_| Unavailable("the scheduler is shutting down; retry".into()))?
    }
}

async fn apply(
    pool: &Pool,
    nats: &async_nats::Client,
    signer: &Signer,
    lease: Duration,
    batch: Vec<Pending>,
) {
    match replies(pool, signer, lease, &batch).await {
        Ok((replies, started)) => {
            for ((_, tx), reply) in batch.into_iter().zip(replies) {
                let _ = tx.send(Ok(reply));
            }
            for (id, attempt) in started {
                events::publish(nats, id, attempt, BuildStatus::Building).await;
            }
        }
        Err(e) => {
            for (_, tx) in batch {
                let _ = tx.send(Err(Unavailable(e.0.clone())));
            }
        }
    }
}

type Started = Vec<(BuildId, freeagent_shared::ids::Attempt)>;

async fn replies(
    pool: &Pool,
    signer: &Signer,
    lease: Duration,
    batch: &[Pending],
) -> Result<(Vec<HeartbeatReply>, Started), Unavailable> {
    let mut worker_ids: Vec<WorkerId> = batch.iter().map(|(r, _)| r.worker.worker_id).collect();
    worker_ids.sort();
    worker_ids.dedup();
    let workers: HashMap<WorkerId, _> = db::workers::worker_get_many(pool, &worker_ids)
        .await?
        .into_iter()
        .map(|w| (w.id, w))
        .collect();
    let authorized: Vec<bool> = batch
        .iter()
        .map(|(r, _)| {
            workers
                .get(&r.worker.worker_id)
                .is_some_and(|w| credential_ok(&r.worker, w, signer))
        })
        .collect();
    let beats: Vec<Beat> = batch
        .iter()
        .zip(&authorized)
        .filter(|(_, ok)| **ok)
        .map(|((r, _), _)| Beat {
            id: r.build_id,
            attempt: r.attempt,
            worker: r.worker.worker_id,
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
        .map(|((r, _), ok)| {
            if !ok {
                return HeartbeatReply::Stop {
                    reason: NotYours::Unauthorized,
                    status: None,
                };
            }
            match by_key.get(&(r.build_id, r.attempt, r.worker.worker_id)) {
                Some(renewed) => HeartbeatReply::Renewed {
                    lease_expires_at: renewed.lease_expires_at,
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
