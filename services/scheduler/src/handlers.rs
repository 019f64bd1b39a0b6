//! The worker operations: claim, heartbeat, complete and fail. Each checks the worker credential,
//! runs one guarded statement from `db::builds`, and maps the `Transition` to a reply. There is
//! one implementation of each, whether the worker speaks NATS or HTTP (through the gateway).

use crate::events;
use chrono::Utc;
use freeagent_shared::capability::{Method, Signer};
use freeagent_shared::db::{self, Pool, Transition, builds::Current};
use freeagent_shared::ids::{Attempt, WorkerId};
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::status::BuildStatus;
use freeagent_shared::subjects;
use freeagent_shared::token;
use freeagent_shared::wire::*;
use std::time::Duration;

#[derive(Clone)]
pub struct Handlers {
    pub pool: Pool,
    pub nats: async_nats::Client,
    pub signer: Signer,
    pub storage_endpoint: String,
    pub lease: Duration,
    pub url_ttl: Duration,
    pub result_limit: u64,
}

/// Why a request could not be handled at all (not a refusal: an outage).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(String);

impl From<db::Error> for Unavailable {
    fn from(e: db::Error) -> Self {
        tracing::error!(error = %e, "database error in a worker operation");
        Unavailable("the scheduler cannot reach its database; retry".into())
    }
}

/// The refusal that matches what the guard saw.
fn refusal(current: &Current) -> NotYours {
    if current.status.is_terminal() {
        NotYours::Finished
    } else {
        NotYours::Stale
    }
}

impl Handlers {
    async fn authenticate(&self, cred: &WorkerCredential) -> Result<bool, Unavailable> {
        let Some(w) = db::workers::worker_get(&self.pool, cred.worker_id).await? else {
            return Ok(false);
        };
        Ok(token::verify(&cred.worker_token, &w.token_hash) && w.token_expires_at > Utc::now())
    }

    fn exp(&self) -> i64 {
        Utc::now().timestamp() + self.url_ttl.as_secs() as i64
    }

    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker.worker_id))]
    pub async fn claim(&self, req: ClaimRequest) -> Result<ClaimReply, Unavailable> {
        if !self.authenticate(&req.worker).await? {
            return Ok(ClaimReply::NotYours {
                reason: NotYours::Unauthorized,
                status: None,
            });
        }
        let t = db::builds::build_claim(
            &self.pool,
            req.build_id,
            req.attempt,
            req.worker.worker_id,
            self.lease.as_secs_f64(),
        )
        .await?;
        metrics::counter!(freeagent_shared::metrics::CLAIMS, "outcome" => outcome_label(&t))
            .increment(1);
        let b = match t {
            Transition::Applied(b) => b,
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
        events::publish(&self.nats, b.id, b.attempt, BuildStatus::Assigned).await;
        let exp = self.exp();
        let base = &self.storage_endpoint;
        let grant = JobGrant {
            build_id: b.id,
            attempt: b.attempt,
            platform: b.platform,
            source_url: self
                .signer
                .url(base, Method::Get, &ObjectKey::Source(b.id), exp, 0),
            source_sha256: b.source_sha256.clone(),
            certs_url: b.certs_key.as_ref().map(|_| {
                self.signer
                    .url(base, Method::Get, &ObjectKey::Certs(b.id), exp, 0)
            }),
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
        };
        tracing::info!("claimed");
        Ok(ClaimReply::Granted(Box::new(grant)))
    }

    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker.worker_id))]
    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatReply, Unavailable> {
        if !self.authenticate(&req.worker).await? {
            return Ok(HeartbeatReply::Stop {
                reason: NotYours::Unauthorized,
                status: None,
            });
        }
        let progress = req.progress.map(|p| i16::from(p.min(100)));
        let t = db::builds::build_heartbeat(
            &self.pool,
            req.build_id,
            req.attempt,
            req.worker.worker_id,
            self.lease.as_secs_f64(),
            progress,
        )
        .await?;
        Ok(match t {
            Transition::Applied(r) => {
                if r.started {
                    events::publish(&self.nats, req.build_id, req.attempt, BuildStatus::Building)
                        .await;
                }
                HeartbeatReply::Renewed {
                    lease_expires_at: r.lease_expires_at,
                }
            }
            Transition::Stale(c) => HeartbeatReply::Stop {
                reason: refusal(&c),
                status: Some(c.status),
            },
            Transition::NotFound => HeartbeatReply::Stop {
                reason: NotYours::NotFound,
                status: None,
            },
        })
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
        if !self.authenticate(&req.worker).await? {
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
            return Ok(FinishReply::Error { message: "the result receipt does not match this build's attempt; upload to the result URL of the claim".into() });
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
        if !self.authenticate(&req.worker).await? {
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
        )
        .await?;
        Ok(self
            .finished(t, req.attempt, req.worker.worker_id, BuildStatus::Failed)
            .await)
    }

    async fn finished(
        &self,
        t: Transition<db::builds::Build>,
        attempt: Attempt,
        worker: WorkerId,
        status: BuildStatus,
    ) -> FinishReply {
        match t {
            Transition::Applied(b) => {
                metrics::counter!(freeagent_shared::metrics::BUILDS_FINISHED, "status" => status.as_str()).increment(1);
                events::publish(&self.nats, b.id, b.attempt, status).await;
                tracing::info!(%status, "build finished");
                FinishReply::Recorded { status }
            }
            Transition::Stale(c) => Self::replay(&c, attempt, worker, status),
            Transition::NotFound => FinishReply::NotYours {
                reason: NotYours::NotFound,
                status: None,
            },
        }
    }
}

fn outcome_label<T>(t: &Transition<T>) -> &'static str {
    match t {
        Transition::Applied(_) => "granted",
        Transition::Stale(_) => "stale",
        Transition::NotFound => "not_found",
    }
}
