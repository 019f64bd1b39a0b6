//! Finish: the holder of an attempt reports its outcome. Complete records the result object
//! (only what storage computed: the receipt binds key, size and checksum) and ends the build
//! `completed`; fail ends it `failed`, or requeues it under a new attempt when its policy retries
//! (`db::builds::build_fail` decides). Both are guarded on the attempt and its holder; a
//! replayed report (its reply was lost) gets the same answer as the first time.
//!
//! Completions that arrive together share one statement (`build_complete_batch`); whatever it
//! did not apply takes the one-row path, which words the reply, so replies are the same as
//! without batching. A batch of one takes the one-row path at once (a cached plan). Failures are
//! rare and take the one-row path only.

use super::context::refusal;
use super::{Handlers, Unavailable};
use crate::events;
use freeagent_shared::db::builds::{Build, CompleteAsk, Current, NewObject};
use freeagent_shared::db::{self, Transition};
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::status::BuildStatus;
use freeagent_shared::wire::{CompleteRequest, FailRequest, FinishReply, NotYours};
use std::collections::HashMap;

/// A replayed report announces its outcome again only this soon after it was recorded: a worker
/// asks again for at most a minute (`SchedulerClient::complete`), so an older replay is not a
/// lost reply, and a worker replaying old reports must not make the farm write into logs and
/// event streams long after.
const ANNOUNCE_AGAIN_WITHIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Longest failure message recorded, in characters.
const MAX_ERROR_CHARS: usize = 4096;

impl Handlers {
    /// The one-row path of complete.
    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker_id))]
    pub async fn complete(&self, req: CompleteRequest) -> Result<FinishReply, Unavailable> {
        if self.authenticate(req.worker_id).await?.is_none() {
            return Ok(FinishReply::NotYours {
                reason: NotYours::Unauthorized,
                status: None,
            });
        }
        let Some(object) = self.receipted(&req) else {
            return Ok(FinishReply::Error {
                message: "the result receipt does not match this build's attempt; upload to the result URL of the claim".into(),
            });
        };
        let t = db::builds::build_complete(
            &self.pool,
            req.build_id,
            req.attempt,
            req.worker_id,
            &object,
        )
        .await?;
        Ok(self
            .finished(
                t,
                req.build_id,
                req.attempt,
                req.worker_id,
                BuildStatus::Completed,
            )
            .await)
    }

    /// The batch path of complete: one query authenticates every sender, one statement applies
    /// every completion whose guard holds; the rest take the one-row path.
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
            if !workers.contains_key(&r.worker_id) {
                replies[i] = Some(FinishReply::NotYours {
                    reason: NotYours::Unauthorized,
                    status: None,
                });
                continue;
            }
            // A receipt that does not match: the one-row path words the refusal.
            let Some(result) = self.receipted(r) else {
                continue;
            };
            asks.push(CompleteAsk {
                id: r.build_id,
                attempt: r.attempt,
                worker: r.worker_id,
                result,
            });
            asked.push(i);
        }
        let mut applied: HashMap<(BuildId, Attempt, WorkerId), Build> = if asks.is_empty() {
            HashMap::new()
        } else {
            db::builds::build_complete_batch(&self.pool, &asks)
                .await?
                .into_iter()
                .filter_map(|b| b.worker_id.map(|w| ((b.id, b.attempt, w), b)))
                .collect()
        };
        let mut done = Vec::with_capacity(applied.len());
        for (ask, i) in asks.iter().zip(asked) {
            if let Some(b) = applied.remove(&(ask.id, ask.attempt, ask.worker)) {
                metrics::counter!(freeagent_shared::metrics::BUILDS_FINISHED, "status" => b.status.as_str()).increment(1);
                replies[i] = Some(FinishReply::Recorded { status: b.status });
                done.push(b);
            }
        }
        // Every line of the batch stored in one round trip, not one per build.
        events::announce_outcomes(&self.nats, &done).await;
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

    /// The one-row path of fail (the only one).
    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker_id))]
    pub async fn fail(&self, req: FailRequest) -> Result<FinishReply, Unavailable> {
        if self.authenticate(req.worker_id).await?.is_none() {
            return Ok(FinishReply::NotYours {
                reason: NotYours::Unauthorized,
                status: None,
            });
        }
        // Whatever the worker sent, no secret is stored (a worker may be compromised).
        let error: String = freeagent_shared::redact::redact(&req.error)
            .chars()
            // Postgres stores no NUL; a worker's text is cleaned, never refused.
            .filter(|c| *c != '\0')
            .take(MAX_ERROR_CHARS)
            .collect();
        let t = db::builds::build_fail(
            &self.pool,
            req.build_id,
            req.attempt,
            req.worker_id,
            &error,
            self.backoff,
        )
        .await?;
        Ok(self
            .finished(
                t,
                req.build_id,
                req.attempt,
                req.worker_id,
                BuildStatus::Failed,
            )
            .await)
    }

    /// The result object a completion names, if its receipt is storage's for this very attempt's
    /// result key.
    fn receipted(&self, req: &CompleteRequest) -> Option<NewObject> {
        let key = ObjectKey::Result(req.build_id, req.attempt);
        let r = &req.result;
        let genuine = r.key == key.to_string()
            && self
                .caps
                .signer
                .verify_receipt(&key, r.size, &r.sha256, &r.receipt);
        genuine.then(|| NewObject {
            key: r.key.clone(),
            size: r.size as i64,
            sha256: r.sha256.clone(),
        })
    }

    /// The reply to a finish report, given what its transition did.
    async fn finished(
        &self,
        t: Transition<Build>,
        build: BuildId,
        attempt: Attempt,
        worker: WorkerId,
        status: BuildStatus,
    ) -> FinishReply {
        match t {
            Transition::Applied(b) => {
                if b.status == BuildStatus::Pending {
                    metrics::counter!(freeagent_shared::metrics::RETRIES, "cause" => "failed_command").increment(1);
                } else {
                    metrics::counter!(freeagent_shared::metrics::BUILDS_FINISHED, "status" => b.status.as_str()).increment(1);
                }
                events::announce_outcome(&self.nats, &b).await;
                tracing::debug!(build_id = %b.id, status = %b.status, "build finished");
                FinishReply::Recorded { status: b.status }
            }
            Transition::Stale(c) => {
                let reply = replay(&c, attempt, worker, status);
                if matches!(reply, FinishReply::Recorded { .. }) {
                    self.announce_again(build).await;
                }
                reply
            }
            Transition::NotFound => FinishReply::NotYours {
                reason: NotYours::NotFound,
                status: None,
            },
        }
    }

    /// A report recorded before asks again: its reply was lost, perhaps with the scheduler that
    /// recorded it, killed before it announced the outcome. Whatever the streams lack goes out.
    async fn announce_again(&self, build: BuildId) {
        match db::builds::build_get(&self.pool, build).await {
            Ok(Some(b))
                if b.completed_at
                    .is_some_and(|t| chrono::Utc::now() - t < ANNOUNCE_AGAIN_WITHIN) =>
            {
                events::announce_outcome_again(&self.nats, &b).await
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(build_id = %build, error = %e, "cannot read a replayed report's build to announce it again")
            }
        }
    }
}

/// A replayed outcome (the reply was lost) gets the same answer as the first time.
fn replay(c: &Current, attempt: Attempt, worker: WorkerId, status: BuildStatus) -> FinishReply {
    if c.status == status && c.attempt == attempt && c.worker_id == Some(worker) {
        FinishReply::Recorded { status }
    } else {
        FinishReply::NotYours {
            reason: refusal(c),
            status: Some(c.status),
        }
    }
}
