//! Claim: a worker asks for the attempt a dispatch named. The guard (`db::builds::build_claim`)
//! assigns a pending build of that attempt, in one of the worker's queues, to the worker, with a
//! lease; the reply is a grant (with storage capabilities) or the reason it is not yours.
//!
//! Claims that arrive together share one statement (`build_claim_batch`). Whatever the batch
//! statement did not apply takes the one-row path, which decides the exact reply (a re-grant to
//! the holder, a dispatch not committed yet, a stale attempt), so replies are the same as
//! without batching. A batch of one takes the one-row path at once: its statements are keyed by
//! `id = $1`, so Postgres caches their plan, while the batch statement is re-planned on every call
//! (~0.5 ms; see docs/benchmarks.md, "Planning").

use super::context::refusal;
use super::{Handlers, Unavailable};
use chrono::Utc;
use freeagent_shared::announce::{self, Line};
use freeagent_shared::db::builds::{Build, ClaimAsk};
use freeagent_shared::db::{self, Transition};
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::status::BuildStatus;
use freeagent_shared::subjects;
use freeagent_shared::wire::{ClaimReply, ClaimRequest, JobGrant, LogLevel, NotYours};
use std::collections::HashMap;
use std::time::Duration;

/// How long a claim that beat its dispatch's commit waits for the dispatcher to let go of the
/// row. A dispatch commits right after its publish acks, so this is normally a millisecond.
const DISPATCH_COMMIT_WAIT: Duration = Duration::from_secs(1);

impl Handlers {
    /// The one-row path.
    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker_id))]
    pub async fn claim(&self, req: ClaimRequest) -> Result<ClaimReply, Unavailable> {
        let Some(worker) = self.authenticate(req.worker_id).await? else {
            return Ok(ClaimReply::NotYours {
                reason: NotYours::Unauthorized,
                status: None,
            });
        };
        // Draining, or awaiting an operator's approval: either way it takes no new build.
        if !worker.takes_builds() {
            return Ok(ClaimReply::NotYours {
                reason: NotYours::Draining,
                status: None,
            });
        }
        let queues = worker.effective_queue_names();
        let claim = || {
            db::builds::build_claim(
                &self.pool,
                req.build_id,
                req.attempt,
                worker.id,
                &queues,
                self.lease_secs(&worker),
            )
        };
        let mut t = claim().await?;
        // A dispatch can reach a worker before the dispatcher's transaction commits (the publish
        // is acked first). The claim then saw the previous attempt, and Postgres did not wait for
        // the row lock because that version did not match. If the dispatch has committed since,
        // claim again. If not yet, wait (at most DISPATCH_COMMIT_WAIT) for the dispatcher to let
        // go of the row and claim again; only then ask the worker to retry, which costs it a
        // redelivery delay (seconds for the reference worker).
        if let Transition::Stale(c) = &t
            && c.status == BuildStatus::Pending
            && c.attempt <= req.attempt
        {
            // Ok: nobody holds the row any more. Err (a lock timeout): a dispatch still does.
            let released = if c.attempt < req.attempt {
                db::builds::build_wait_for_row(&self.pool, req.build_id, DISPATCH_COMMIT_WAIT)
                    .await
                    .is_ok()
            } else {
                true
            };
            t = claim().await?;
            if let Transition::Stale(c) = &t
                && c.status == BuildStatus::Pending
                && c.attempt < req.attempt
            {
                if !released {
                    return Ok(ClaimReply::Unavailable {
                        message: "this attempt's dispatch is not committed yet; retry".into(),
                    });
                }
                // No transaction holds the row and it never reached this attempt: the dispatch
                // was rolled back, or this database does not know it (restored from a backup).
                // Either way the message is void; the build is dispatched again if it is due.
                return Ok(ClaimReply::NotYours {
                    reason: NotYours::NotFound,
                    status: Some(c.status),
                });
            }
        }
        metrics::counter!(freeagent_shared::metrics::CLAIMS, "outcome" => outcome_label(&t))
            .increment(1);
        let b = match t {
            Transition::Applied(b) => b,
            // Pending at this very attempt, after a second try: the worker is full (the capacity
            // trigger skipped the update), or the queue guard refused it.
            Transition::Stale(c)
                if c.status == BuildStatus::Pending && c.attempt == req.attempt =>
            {
                let full = db::workers::worker_get(&self.pool, worker.id)
                    .await?
                    .is_some_and(|w| w.held >= w.max_concurrent);
                return Ok(ClaimReply::NotYours {
                    reason: if full {
                        NotYours::AtCapacity
                    } else {
                        NotYours::WrongQueue
                    },
                    status: Some(c.status),
                });
            }
            // The holder asks again for the attempt it holds: its first reply was lost. Granting
            // it again is safe (the worker runs a build once per grant it receives, and skips
            // builds it already runs) and spares the build a lost-lease wait.
            Transition::Stale(c)
                if c.worker_id == Some(worker.id)
                    && c.attempt == req.attempt
                    && c.status.is_held() =>
            {
                match db::builds::build_get(&self.pool, req.build_id).await? {
                    Some(b) => b,
                    None => {
                        return Ok(ClaimReply::NotYours {
                            reason: NotYours::NotFound,
                            status: None,
                        });
                    }
                }
            }
            Transition::Stale(c) => {
                return Ok(ClaimReply::NotYours {
                    reason: refusal(&c),
                    status: Some(c.status),
                });
            }
            Transition::NotFound => {
                return Ok(ClaimReply::NotYours {
                    reason: NotYours::NotFound,
                    status: None,
                });
            }
        };
        Ok(self.granted(b).await)
    }

    /// The batch path: one query authenticates every sender, one statement applies every claim
    /// whose guard holds; the rest take the one-row path.
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
            match workers.get(&r.worker_id) {
                None => {
                    replies[i] = Some(ClaimReply::NotYours {
                        reason: NotYours::Unauthorized,
                        status: None,
                    })
                }
                Some(w) if !w.takes_builds() => {
                    replies[i] = Some(ClaimReply::NotYours {
                        reason: NotYours::Draining,
                        status: None,
                    })
                }
                Some(w) => {
                    asks.push(ClaimAsk {
                        id: r.build_id,
                        attempt: r.attempt,
                        worker: w.id,
                        queues: w.effective_queue_names(),
                        lease_secs: self.lease_secs(w),
                    });
                    asked.push(i);
                }
            }
        }
        let mut applied: HashMap<(BuildId, Attempt, WorkerId), Build> = if asks.is_empty() {
            HashMap::new()
        } else {
            db::builds::build_claim_batch(&self.pool, &asks)
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

    /// The reply to a won claim; also frees a slot in the dispatch window, so the dispatcher
    /// runs again at once rather than at its next tick.
    async fn granted(&self, b: Build) -> ClaimReply {
        if let Some(d) = b.dispatched_at.or(Some(b.submitted_at)) {
            let waited = (Utc::now() - d).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!(freeagent_shared::metrics::CLAIM_WAIT_SECONDS).record(waited);
        }
        // Not awaiting JetStream's ack: a claim's latency is the farm's dispatch latency.
        let line =
            freeagent_shared::farm_log::assigned(b.worker_name.as_deref().unwrap_or("a worker"));
        announce::moved(&self.nats, &b, Some(Line::sent(LogLevel::Info, line))).await;
        tracing::debug!(build_id = %b.id, attempt = %b.attempt, "claimed");
        self.wake_dispatcher.notify_one();
        ClaimReply::Granted(Box::new(self.grant(b)))
    }

    fn grant(&self, b: Build) -> JobGrant {
        let lease_end = b.lease_expires_at.unwrap_or_else(Utc::now);
        let caps = &self.caps;
        JobGrant {
            build_id: b.id,
            attempt: b.attempt,
            platform: b.platform,
            source_url: caps.get_url(
                &stored_key(&b.source_key, ObjectKey::Source(b.id)),
                b.id,
                b.attempt,
                lease_end,
            ),
            source_sha256: b.source_sha256.clone(),
            certs_url: b.certs_key.as_ref().map(|k| {
                caps.get_url(
                    &stored_key(k, ObjectKey::Certs(b.id)),
                    b.id,
                    b.attempt,
                    lease_end,
                )
            }),
            certs_sha256: b.certs_sha256.clone(),
            result_url: caps.result_url(b.id, b.attempt, lease_end),
            lease_expires_at: lease_end,
            heartbeat_interval_ms: (self.lease.as_millis() / 3) as u64,
            cancel_subject: b
                .worker_id
                .map(|w| subjects::cancel(w, b.id))
                .unwrap_or_default(),
            metadata: b.metadata,
        }
    }
}

/// The key a build's row names (a retried build shares its original's objects). Rows are written
/// only by us, so a key that does not parse falls back to the build's own.
fn stored_key(raw: &str, fallback: ObjectKey) -> ObjectKey {
    ObjectKey::parse(raw).unwrap_or(fallback)
}

fn outcome_label<T>(t: &Transition<T>) -> &'static str {
    match t {
        Transition::Applied(_) => "granted",
        Transition::Stale(_) => "stale",
        Transition::NotFound => "not_found",
    }
}
