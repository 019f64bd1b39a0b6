//! Claims and completions in batches: one query checks every credential, one statement applies
//! every transition whose guard holds (`db::builds::build_claim_batch`, `build_complete_batch`).
//! Whatever the batch statement did not apply takes the one-row path in `handlers`, which
//! decides the exact reply (a re-grant to the holder, a replayed completion, a stale attempt),
//! so replies are the same as without batching.
//!
//! A batch of one (the common case under light load) takes the one-row path at once: its
//! statements are keyed by `id = $1`, so Postgres caches their plan, while the batch statements
//! are re-planned on every call (~0.5 ms; see docs/benchmarks.md, "Planning").

use crate::handlers::{Handlers, worker_ok};
use freeagent_shared::db::builds::{Build, ClaimAsk, CompleteAsk, NewObject};
use freeagent_shared::db::workers::Worker;
use freeagent_shared::db::{self, Transition};
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::status::BuildStatus;
use freeagent_shared::wire::{
    ClaimReply, ClaimRequest, CompleteRequest, FinishReply, NotYours, PresenceReply,
    PresenceRequest,
};
use std::collections::HashMap;

use crate::handlers::Unavailable;

type Key = (BuildId, Attempt, WorkerId);

impl Handlers {
    /// The registered workers of a batch, by id (NATS vouched for each sender).
    async fn authenticate_many(
        &self,
        senders: impl Iterator<Item = WorkerId>,
    ) -> Result<HashMap<WorkerId, Worker>, Unavailable> {
        let mut ids: Vec<WorkerId> = senders.collect();
        ids.sort();
        ids.dedup();
        Ok(db::workers::worker_get_many(&self.pool, &ids)
            .await?
            .into_iter()
            .map(|w| (w.id, w))
            .collect())
    }

    pub async fn claim_many(
        &self,
        reqs: Vec<ClaimRequest>,
    ) -> Result<Vec<ClaimReply>, Unavailable> {
        if let [one] = reqs.as_slice() {
            return Ok(vec![self.claim(one.clone()).await?]);
        }
        let workers = self
            .authenticate_many(reqs.iter().map(|r| r.worker_id))
            .await?;
        let mut replies: Vec<Option<ClaimReply>> = vec![None; reqs.len()];
        let mut asks = Vec::new();
        let mut asked = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let worker = workers.get(&r.worker_id).filter(|w| worker_ok(w));
            match worker {
                None => {
                    replies[i] = Some(ClaimReply::NotYours {
                        reason: NotYours::Unauthorized,
                        status: None,
                    })
                }
                Some(w) if w.status == "draining" => {
                    replies[i] = Some(ClaimReply::NotYours {
                        reason: NotYours::Draining,
                        status: None,
                    })
                }
                Some(w) => {
                    let queues = w.effective_queue_names();
                    asks.push(ClaimAsk {
                        id: r.build_id,
                        attempt: r.attempt,
                        worker: w.id,
                        queues,
                    });
                    asked.push(i);
                }
            }
        }
        let mut applied: HashMap<Key, Build> = if asks.is_empty() {
            HashMap::new()
        } else {
            db::builds::build_claim_batch(&self.pool, &asks, self.lease.as_secs_f64())
                .await?
                .into_iter()
                .filter_map(|b| b.worker_id.map(|w| ((b.id, b.attempt, w), b)))
                .collect()
        };
        for (ask, i) in asks.iter().zip(asked) {
            replies[i] = Some(match applied.remove(&(ask.id, ask.attempt, ask.worker)) {
                Some(b) => {
                    metrics::counter!(freeagent_shared::metrics::CLAIMS, "outcome" => "granted")
                        .increment(1);
                    self.granted(b).await
                }
                None => self
                    .claim(reqs[i].clone())
                    .await
                    .unwrap_or_else(|e| ClaimReply::Unavailable { message: e.0 }),
            });
        }
        Ok(replies
            .into_iter()
            .map(|r| {
                r.unwrap_or(ClaimReply::Unavailable {
                    message: "not handled; retry".into(),
                })
            })
            .collect())
    }

    pub async fn complete_many(
        &self,
        reqs: Vec<CompleteRequest>,
    ) -> Result<Vec<FinishReply>, Unavailable> {
        if let [one] = reqs.as_slice() {
            return Ok(vec![self.complete(one.clone()).await?]);
        }
        let workers = self
            .authenticate_many(reqs.iter().map(|r| r.worker_id))
            .await?;
        let mut replies: Vec<Option<FinishReply>> = vec![None; reqs.len()];
        let mut asks = Vec::new();
        let mut asked = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let ok = workers.get(&r.worker_id).is_some_and(worker_ok);
            if !ok {
                replies[i] = Some(FinishReply::NotYours {
                    reason: NotYours::Unauthorized,
                    status: None,
                });
                continue;
            }
            // Record only what storage computed: the receipt binds key, size and checksum.
            let key = ObjectKey::Result(r.build_id, r.attempt);
            let res = &r.result;
            if res.key != key.to_string()
                || !self
                    .caps
                    .signer
                    .verify_receipt(&key, res.size, &res.sha256, &res.receipt)
            {
                // The one-row path words the refusal.
                continue;
            }
            asks.push(CompleteAsk {
                id: r.build_id,
                attempt: r.attempt,
                worker: r.worker_id,
                result: NewObject {
                    key: res.key.clone(),
                    size: res.size as i64,
                    sha256: res.sha256.clone(),
                },
            });
            asked.push(i);
        }
        let mut applied: HashMap<Key, Build> = if asks.is_empty() {
            HashMap::new()
        } else {
            db::builds::build_complete_batch(&self.pool, &asks)
                .await?
                .into_iter()
                .filter_map(|b| b.worker_id.map(|w| ((b.id, b.attempt, w), b)))
                .collect()
        };
        for (ask, i) in asks.iter().zip(asked) {
            if let Some(b) = applied.remove(&(ask.id, ask.attempt, ask.worker)) {
                let reply = self
                    .finished(
                        Transition::Applied(b),
                        ask.attempt,
                        ask.worker,
                        BuildStatus::Completed,
                    )
                    .await;
                replies[i] = Some(reply);
            }
        }
        let mut out = Vec::with_capacity(reqs.len());
        for (r, reply) in reqs.into_iter().zip(replies) {
            out.push(match reply {
                Some(reply) => reply,
                None => self
                    .complete(r)
                    .await
                    .unwrap_or_else(|e| FinishReply::Unavailable { message: e.0 }),
            });
        }
        Ok(out)
    }

    /// Presence reports of an idle fleet: one query for the workers, one statement marks every
    /// worker seen. NATS credentials past half their life are renewed one by one (each worker
    /// about twice a TTL).
    pub async fn presence_many(
        &self,
        reqs: Vec<PresenceRequest>,
    ) -> Result<Vec<PresenceReply>, Unavailable> {
        let workers = self
            .authenticate_many(reqs.iter().map(|r| r.worker_id))
            .await?;
        let ok: Vec<bool> = reqs
            .iter()
            .map(|r| workers.get(&r.worker_id).is_some_and(worker_ok))
            .collect();
        let (ids, running): (Vec<WorkerId>, Vec<i32>) = reqs
            .iter()
            .zip(&ok)
            .filter(|(_, ok)| **ok)
            .map(|(r, _)| (r.worker_id, i32::try_from(r.running).unwrap_or(i32::MAX)))
            .unzip();
        let status: HashMap<WorkerId, String> = if ids.is_empty() {
            HashMap::new()
        } else {
            db::workers::workers_presence_batch(&self.pool, &ids, &running)
                .await?
                .into_iter()
                .collect()
        };
        let mut out = Vec::with_capacity(reqs.len());
        for (r, ok) in reqs.iter().zip(ok) {
            let (Some(w), Some(st)) = (
                workers.get(&r.worker_id).filter(|_| ok),
                status.get(&r.worker_id),
            ) else {
                out.push(PresenceReply::NotYours {
                    reason: NotYours::Unauthorized,
                });
                continue;
            };
            let nats_jwt = self.renew_nats_jwt(w).await?;
            out.push(PresenceReply::Seen {
                drain: st == "draining",
                nats_jwt,
            });
        }
        Ok(out)
    }
}
