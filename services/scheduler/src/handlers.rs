//! The worker operations: claim, heartbeat, complete, fail, abandon and presence. Each checks the
//! sender (named by the subject, vouched for by NATS) is a registered, unrevoked worker, runs one
//! guarded statement from `db::builds`, and maps the `Transition`
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

/// Signs the storage capabilities a worker gets: minutes long, never past the lease they were
/// granted with, and bound to the attempt (a result URL names its attempt's key).
#[derive(Clone)]
pub struct Capabilities {
    pub signer: Signer,
    pub storage_endpoint: String,
    pub ttl: Duration,
    pub result_limit: u64,
}

impl Capabilities {
    fn exp(&self, lease_end: chrono::DateTime<Utc>) -> i64 {
        let by_ttl = Utc::now().timestamp() + self.ttl.as_secs() as i64;
        by_ttl.min(lease_end.timestamp())
    }

    pub fn get_url(&self, key: &ObjectKey, lease_end: chrono::DateTime<Utc>) -> String {
        let exp = self.exp(lease_end);
        self.signer
            .url(&self.storage_endpoint, Method::Get, key, exp, 0)
    }

    pub fn result_url(
        &self,
        build: freeagent_shared::ids::BuildId,
        attempt: Attempt,
        lease_end: chrono::DateTime<Utc>,
    ) -> String {
        let exp = self.exp(lease_end);
        self.signer.url(
            &self.storage_endpoint,
            Method::Put,
            &ObjectKey::Result(build, attempt),
            exp,
            self.result_limit,
        )
    }
}

#[derive(Clone)]
pub struct Handlers {
    pub pool: Pool,
    pub nats: async_nats::Client,
    pub caps: Capabilities,
    pub lease: Duration,
    pub backoff: Backoff,
    pub heartbeats: HeartbeatBatcher,
    /// Renews workers' NATS credentials (None: NATS without auth).
    pub minter: Option<freeagent_shared::nats_auth::Minter>,
    pub worker_nats_ttl: Duration,
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

/// May this registered worker act? NATS vouched for who it is (the subject); its registration
/// must not have been revoked.
pub fn worker_ok(w: &Worker) -> bool {
    w.revoked_at.is_none()
}

impl Handlers {
    async fn authenticate(&self, worker: WorkerId) -> Result<Option<Worker>, Unavailable> {
        let w = db::workers::worker_get(&self.pool, worker).await?;
        Ok(w.filter(worker_ok))
    }

    /// New NATS credentials for `w` when its current ones are past half their life.
    pub(crate) async fn renew_nats_jwt(&self, w: &Worker) -> Result<Option<String>, Unavailable> {
        let (Some(minter), Some(key), Some(exp)) =
            (&self.minter, &w.nats_public_key, w.nats_jwt_expires_at)
        else {
            return Ok(None);
        };
        let ttl =
            chrono::Duration::from_std(self.worker_nats_ttl).unwrap_or(chrono::Duration::hours(24));
        if exp - Utc::now() > ttl / 2 {
            return Ok(None);
        }
        let new_exp = Utc::now() + ttl;
        let role = freeagent_shared::nats_auth::Role::Worker {
            id: w.id,
            queues: w.effective_queues(),
        };
        let jwt = match minter.user_jwt(&role, key, Some(new_exp.timestamp())) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(worker_id = %w.id, error = %e, "cannot renew a worker's NATS credentials");
                return Ok(None);
            }
        };
        Ok(
            db::workers::worker_nats_renewed(&self.pool, w.id, key, new_exp)
                .await?
                .then_some(jwt),
        )
    }

    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker_id))]
    pub async fn claim(&self, req: ClaimRequest) -> Result<ClaimReply, Unavailable> {
        let Some(worker) = self.authenticate(req.worker_id).await? else {
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
        let queues = worker.effective_queue_names();
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
        let lease_end = b.lease_expires_at.unwrap_or_else(Utc::now);
        let caps = &self.caps;
        JobGrant {
            build_id: b.id,
            attempt: b.attempt,
            platform: b.platform,
            source_url: caps.get_url(
                &stored_key(&b.source_key, ObjectKey::Source(b.id)),
                lease_end,
            ),
            source_sha256: b.source_sha256.clone(),
            certs_url: b
                .certs_key
                .as_ref()
                .map(|k| caps.get_url(&stored_key(k, ObjectKey::Certs(b.id)), lease_end)),
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

    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker_id))]
    pub async fn complete(&self, req: CompleteRequest) -> Result<FinishReply, Unavailable> {
        if self.authenticate(req.worker_id).await?.is_none() {
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
                .caps
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
            req.worker_id,
            &object,
        )
        .await?;
        Ok(self
            .finished(t, req.attempt, req.worker_id, BuildStatus::Completed)
            .await)
    }

    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker_id))]
    pub async fn fail(&self, req: FailRequest) -> Result<FinishReply, Unavailable> {
        if self.authenticate(req.worker_id).await?.is_none() {
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
            req.worker_id,
            &error,
            self.backoff,
        )
        .await?;
        Ok(self
            .finished(t, req.attempt, req.worker_id, BuildStatus::Failed)
            .await)
    }

    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker_id))]
    pub async fn abandon(&self, req: AbandonRequest) -> Result<FinishReply, Unavailable> {
        if self.authenticate(req.worker_id).await?.is_none() {
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
            req.worker_id,
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
