//! The worker operations: claim, heartbeat, complete, fail, abandon and presence. Each checks the
//! worker credential, runs one guarded statement from `db::builds`, and maps the `Transition`
//! to a reply. There is one implementation of each, whether the worker speaks NATS or HTTP
//! (through the gateway). Heartbeats are applied in batches (`heartbeat_batch`).

use crate::events;
use crate::heartbeat_batch::HeartbeatBatcher;
use chrono::Utc;
use freeagent_shared::capability::{Method, Signer};
use freeagent_shared::db::builds::{Backoff, Build, Current};
use freeagent_shared::db::workers::Worker;
use freeagent_shared::db::{self, Pool, Transition};
use freeagent_shared::ids::{Attempt, WorkerId};
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::status::BuildStatus;
use freeagent_shared::subjects;
use freeagent_shared::wire::*;
use std::time::Duration;

/// How long a claim that beat its dispatch's commit waits for the dispatcher to let go of the
/// row. A dispatch commits right after its publish acks, so this is normally a millisecond.
const DISPATCH_COMMIT_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Handlers {
    pub pool: Pool,
    pub nats: async_nats::Client,
    pub signer: Signer,
    pub storage_endpoint: String,
    pub lease: Duration,
    pub url_ttl: Duration,
    pub result_limit: u64,
    pub backoff: Backoff,
    pub heartbeats: HeartbeatBatcher,
    pub token_policy: db::workers::TokenPolicy,
    /// Notified when a claim frees a slot in a queue's dispatch window.
    pub wake_dispatcher: std::sync::Arc<tokio::sync::Notify>,
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
pub fn refusal(current: &Current) -> NotYours {
    if current.status.is_terminal() {
        NotYours::Finished
    } else {
        NotYours::Stale
    }
}

/// Checks a credential against a stored worker row: the worker's own token (constant-time,
/// expiry included), or a live vouch the gateway signed for a worker it authenticated.
pub fn credential_ok(cred: &WorkerCredential, w: &Worker, signer: &Signer) -> bool {
    if cred
        .worker_token
        .starts_with(freeagent_shared::capability::VOUCH_PREFIX)
    {
        return signer.verify_vouch(&w.id, &cred.worker_token, Utc::now().timestamp());
    }
    w.token_ok(&cred.worker_token, Utc::now())
}

impl Handlers {
    async fn authenticate(&self, cred: &WorkerCredential) -> Result<Option<Worker>, Unavailable> {
        let w = db::workers::worker_get(&self.pool, cred.worker_id).await?;
        Ok(w.filter(|w| credential_ok(cred, w, &self.signer)))
    }

    fn exp(&self) -> i64 {
        Utc::now().timestamp() + self.url_ttl.as_secs() as i64
    }

    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker.worker_id))]
    pub async fn claim(&self, req: ClaimRequest) -> Result<ClaimReply, Unavailable> {
        let Some(worker) = self.authenticate(&req.worker).await? else {
            return Ok(ClaimReply::NotYours {
                reason: NotYours::Unauthorized,
                status: None,
            });
        };
        if worker.status == "draining" {
            return Ok(ClaimReply::NotYours {
                reason: NotYours::Draining,
                status: None,
            });
        }
        let queues = if worker.queues.is_empty() {
            worker.platforms.clone()
        } else {
            worker.queues.clone()
        };
        let claim = || {
            db::builds::build_claim(
                &self.pool,
                req.build_id,
                req.attempt,
                worker.id,
                &queues,
                self.lease.as_secs_f64(),
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
            if c.attempt < req.attempt {
                // An error here (a timeout) leaves `t` stale: the reply below says retry.
                let _ =
                    db::builds::build_wait_for_row(&self.pool, req.build_id, DISPATCH_COMMIT_WAIT)
                        .await;
            }
            t = claim().await?;
            if let Transition::Stale(c) = &t
                && c.status == BuildStatus::Pending
                && c.attempt < req.attempt
            {
                return Ok(ClaimReply::Unavailable {
                    message: "this attempt's dispatch is not committed yet; retry".into(),
                });
            }
        }
        metrics::counter!(freeagent_shared::metrics::CLAIMS, "outcome" => outcome_label(&t))
            .increment(1);
        let b = match t {
            Transition::Applied(b) => b,
            // Pending at this very attempt, after a second try: only the queue guard refuses it.
            Transition::Stale(c)
                if c.status == BuildStatus::Pending && c.attempt == req.attempt =>
            {
                return Ok(ClaimReply::NotYours {
                    reason: NotYours::WrongQueue,
                    status: Some(c.status),
                });
            }
            // The holder asks again for the attempt it holds: its first reply was lost. Granting
            // it again is safe (the worker runs a build once per grant it receives, and skips
            // builds it already runs) and spares the build a lost-lease wait.
            Transition::Stale(c)
                if c.worker_id == Some(worker.id)
                    && c.attempt == req.attempt
                    && matches!(c.status, BuildStatus::Assigned | BuildStatus::Building) =>
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

    /// The reply to a won claim; also frees a slot in the dispatch window, so the dispatcher
    /// runs again at once rather than at its next tick.
    pub(crate) async fn granted(&self, b: Build) -> ClaimReply {
        if let Some(d) = b.dispatched_at.or(Some(b.submitted_at)) {
            let waited = (Utc::now() - d).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!(freeagent_shared::metrics::CLAIM_WAIT_SECONDS).record(waited);
        }
        events::publish(&self.nats, b.id, b.attempt, BuildStatus::Assigned).await;
        tracing::debug!(build_id = %b.id, attempt = %b.attempt, "claimed");
        self.wake_dispatcher.notify_one();
        ClaimReply::Granted(Box::new(self.grant(b)))
    }

    fn grant(&self, b: Build) -> JobGrant {
        let exp = self.exp();
        let base = &self.storage_endpoint;
        JobGrant {
            build_id: b.id,
            attempt: b.attempt,
            platform: b.platform,
            source_url: self.signer.url(
                base,
                Method::Get,
                &stored_key(&b.source_key, ObjectKey::Source(b.id)),
                exp,
                0,
            ),
            source_sha256: b.source_sha256.clone(),
            certs_url: b.certs_key.as_ref().map(|k| {
                self.signer.url(
                    base,
                    Method::Get,
                    &stored_key(k, ObjectKey::Certs(b.id)),
                    exp,
                    0,
                )
            }),
            certs_sha256: b.certs_sha256.clone(),
            result_url: self.signer.url(
                base,
                Method::Put,
                &ObjectKey::Result(b.id, b.attempt),
                exp,
                self.result_limit,
            ),
            lease_expires_at: b.lease_expires_at.unwrap_or_else(Utc::now),
            heartbeat_interval_ms: (self.lease.as_millis() / 3) as u64,
            cancel_subject: subjects::cancel(b.id),
            metadata: b.metadata,
        }
    }

    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatReply, Unavailable> {
        self.heartbeats.beat(req).await
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

    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker.worker_id))]
    pub async fn complete(&self, req: CompleteRequest) -> Result<FinishReply, Unavailable> {
        if self.authenticate(&req.worker).await?.is_none() {
            return Ok(FinishReply::NotYours {
                reason: NotYours::Unauthorized,
                status: None,
            });
        }
        // Record only what storage computed: the receipt binds key, size and checksum.
        let key = ObjectKey::Result(req.build_id, req.attempt);
        let r = &req.result;
        if r.key != key.to_string()
            || !self
                .signer
                .verify_receipt(&key, r.size, &r.sha256, &r.receipt)
        {
            return Ok(FinishReply::Error {
                message: "the result receipt does not match this build's attempt; upload to the result URL of the claim".into(),
            });
        }
        let object = db::builds::NewObject {
            key: r.key.clone(),
            size: r.size as i64,
            sha256: r.sha256.clone(),
        };
        let t = db::builds::build_complete(
            &self.pool,
            req.build_id,
            req.attempt,
            req.worker.worker_id,
            &object,
        )
        .await?;
        Ok(self
            .finished(t, req.attempt, req.worker.worker_id, BuildStatus::Completed)
            .await)
    }

    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker.worker_id))]
    pub async fn fail(&self, req: FailRequest) -> Result<FinishReply, Unavailable> {
        if self.authenticate(&req.worker).await?.is_none() {
            return Ok(FinishReply::NotYours {
                reason: NotYours::Unauthorized,
                status: None,
            });
        }
        let error: String = req.error.chars().take(4096).collect();
        let t = db::builds::build_fail(
            &self.pool,
            req.build_id,
            req.attempt,
            req.worker.worker_id,
            &error,
            self.backoff,
        )
        .await?;
        Ok(self
            .finished(t, req.attempt, req.worker.worker_id, BuildStatus::Failed)
            .await)
    }

    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker.worker_id))]
    pub async fn abandon(&self, req: AbandonRequest) -> Result<FinishReply, Unavailable> {
        if self.authenticate(&req.worker).await?.is_none() {
            return Ok(FinishReply::NotYours {
                reason: NotYours::Unauthorized,
                status: None,
            });
        }
        let reason: String = req.reason.chars().take(1024).collect();
        let t = db::builds::build_abandon(
            &self.pool,
            req.build_id,
            req.attempt,
            req.worker.worker_id,
            &reason,
            self.backoff,
        )
        .await?;
        Ok(match t {
            Transition::Applied(b) => {
                metrics::counter!(freeagent_shared::metrics::RETRIES, "cause" => "abandoned")
                    .increment(1);
                events::publish(&self.nats, b.id, b.attempt, b.status).await;
                tracing::info!(to = %b.status, "build handed back");
                FinishReply::Recorded { status: b.status }
            }
            // Already handed back (or moved on): nothing more to do.
            Transition::Stale(c) => FinishReply::NotYours {
                reason: refusal(&c),
                status: Some(c.status),
            },
            Transition::NotFound => FinishReply::NotYours {
                reason: NotYours::NotFound,
                status: None,
            },
        })
    }

    pub(crate) async fn finished(
        &self,
        t: Transition<Build>,
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
                events::publish(&self.nats, b.id, b.attempt, b.status).await;
                tracing::debug!(build_id = %b.id, status = %b.status, "build finished");
                FinishReply::Recorded { status: b.status }
            }
            Transition::Stale(c) => Self::replay(&c, attempt, worker, status),
            Transition::NotFound => FinishReply::NotYours {
                reason: NotYours::NotFound,
                status: None,
            },
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
