//! `POST /api/workers/register`: a worker gets an id and a token, and, when it sends the public
//! half of an nkey it generated (`nats_public_key`), its own NATS credentials: a user JWT with
//! only its own subjects (ADR-0009). Re-registering an existing id needs that worker's token, the
//! API key that registered it, or an admin key, so one worker's token is never handed to another;
//! the NATS key it replaces is revoked.

use crate::auth::extract::{Key, Register};
use crate::auth::{self, SCOPE_ADMIN, SCOPE_WORKER};
use crate::error::{GatewayError, Result};
use crate::http::body::bad_json;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use chrono::Utc;
use freeagent_shared::api::Registered;
use freeagent_shared::db::{self, workers::NewWorker};
use freeagent_shared::events::{self, FarmEvent, WorkerChange};
use freeagent_shared::ids::WorkerId;
use freeagent_shared::status::{Platform, QueueName, WorkerStatus};
use freeagent_shared::{subjects, token};
use serde_json::json;

pub use freeagent_shared::api::RegisterRequest;

pub async fn register(
    State(st): State<AppState>,
    Key { key, .. }: Key<Register>,
    headers: HeaderMap,
    body: std::result::Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Json<Registered>> {
    let Json(req) = body.map_err(bad_json)?;
    crate::http::multipart::no_nul("name", &req.name)?;
    crate::http::multipart::no_nul_json("capabilities", &req.capabilities)?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(GatewayError::bad_request(
            "name must be 1 to 200 characters",
        ));
    }
    let caps = if req.capabilities.is_null() {
        json!({})
    } else {
        req.capabilities.clone()
    };
    let platforms: Vec<String> = match caps.get("platforms") {
        None => vec![],
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .map(|p| {
                p.as_str()
                    .and_then(|s| s.parse::<Platform>().ok())
                    .map(|p| p.as_str().to_owned())
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                GatewayError::bad_request("capabilities.platforms must list 'ios' and/or 'android'")
            })?,
        Some(_) => {
            return Err(GatewayError::bad_request(
                "capabilities.platforms must be a list",
            ));
        }
    };
    let queues: Vec<String> = match caps.get("queues") {
        None => platforms.clone(),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .map(|q| {
                q.as_str()
                    .and_then(|s| QueueName::parse(s).ok())
                    .map(|q| q.as_str().to_owned())
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                GatewayError::bad_request(
                    "capabilities.queues must list queue names (a-z, 0-9, '-', '_')",
                )
            })?,
        Some(_) => {
            return Err(GatewayError::bad_request(
                "capabilities.queues must be a list",
            ));
        }
    };
    // A scoped registration key registers workers for its queues only.
    if let Some(allowed) = &key.worker_queues
        && let Some(q) = queues.iter().find(|q| !allowed.contains(q))
    {
        return Err(GatewayError::forbidden(format!(
            "this key registers workers for the queues {} only, not '{q}'",
            allowed.join(", ")
        )));
    }
    let max_concurrent = match caps.get("max_concurrent_builds") {
        None => 1,
        Some(v) => v
            .as_i64()
            .filter(|n| (1..=1024).contains(n))
            .ok_or_else(|| {
                GatewayError::bad_request("capabilities.max_concurrent_builds must be 1 to 1024")
            })? as i32,
    };
    let id = match &req.id {
        None => WorkerId::new(),
        Some(raw) => raw.parse().map_err(|_| {
            GatewayError::bad_request(
                "id must be a worker id (a UUID) returned by an earlier registration",
            )
        })?,
    };
    let access_token = token::generate(token::TokenKind::Worker);
    let expires_at = Utc::now() + st.config.worker_token_ttl;
    // The worker's NATS key, when the farm mints NATS credentials (HTTP workers need none); the
    // credentials themselves are minted once the row says whether it is approved.
    let nats_key = st.minter.as_ref().and(req.nats_public_key.clone());
    let nats_exp = Utc::now() + st.config.worker_nats_ttl;
    let new = NewWorker {
        id,
        name: name.to_owned(),
        platforms,
        capabilities: caps,
        token_hash: token::hash(&access_token),
        token_expires_at: expires_at,
        registered_by: Some(key.id),
        queues,
        max_concurrent,
        nats_public_key: nats_key.clone(),
        nats_jwt_expires_at: nats_key.as_ref().map(|_| nats_exp),
        // The seed's clients send no NATS key: they poll over HTTP, on the HTTP lease.
        polls_over_http: req.nats_public_key.is_none(),
        approved: !st.config.worker_approval_required,
    };
    let (status, row) = match db::workers::worker_get(&st.pool, id).await? {
        None => match db::workers::worker_insert_within(
            &st.pool,
            &new,
            key.max_workers,
            st.config.worker_offline_after.as_secs_f64(),
        )
        .await
        {
            Ok(db::workers::Registration::Inserted(w)) => ("registered", Some(*w)),
            Ok(db::workers::Registration::Full(live)) => {
                return Err(GatewayError::forbidden(format!(
                    "this key already has {live} live workers, its maximum (max_workers); unregister one, or ask an admin for a key that allows more"
                )));
            }
            Err(db::Error::UniqueViolation) => {
                return Err(GatewayError::new(
                    freeagent_shared::api_error::ErrorCode::Conflict,
                    "this worker id was registered concurrently; retry",
                ));
            }
            Err(e) => return Err(e.into()),
        },
        Some(existing) => {
            let presented = headers.get("x-worker-token").and_then(|v| v.to_str().ok());
            // A registration-only key (held by every worker machine) may not take over another
            // worker's id: that needs the worker's own token, or a worker or admin key.
            let registered_it =
                existing.registered_by == Some(key.id) && auth::has_scope(&key, SCOPE_WORKER);
            // A worker that kept its NATS key (a restart) proves it with that key; a revoked
            // registration is not taken back this way (it registers anew, to be approved again).
            let proved = match (&req.identity_proof, &existing.nats_public_key) {
                (Some(p), Some(on_record)) => {
                    existing.revoked_at.is_none()
                        && new.nats_public_key.as_ref() == Some(on_record)
                        && freeagent_shared::worker_identity::verify(
                            on_record,
                            id,
                            p.at,
                            &p.sig,
                            Utc::now().timestamp(),
                        )
                }
                _ => false,
            };
            let owns = presented.is_some_and(|t| existing.token_ok(t, chrono::Utc::now()))
                || proved
                || registered_it
                || auth::has_scope(&key, SCOPE_ADMIN);
            if !owns {
                return Err(GatewayError::forbidden(
                    "this worker id belongs to another registration; send its X-Worker-Token (or a proof signed with its NATS key)",
                ));
            }
            if let Some(old) = &existing.nats_public_key
                && Some(old) != new.nats_public_key.as_ref()
            {
                db::nats_revocations::revoke(&st.pool, old, id, existing.nats_jwt_expires_at)
                    .await?;
                let _ = st
                    .nats
                    .publish(subjects::REVOKED, bytes::Bytes::new())
                    .await;
            }
            let w = db::workers::worker_reregister(&st.pool, &new).await?;
            ("re-registered", w)
        }
    };
    let approved = row.as_ref().is_some_and(|w| w.approved_at.is_some());
    // Credentials for its queues once approved; before that, none to pull with (the scheduler
    // renews them at the worker's first presence report after its approval).
    let nats = match (&st.minter, &row) {
        (Some(minter), Some(w)) => match &w.nats_public_key {
            Some(key) => {
                let jwt = freeagent_shared::worker_credentials::mint(minter, w, key, nats_exp)
                    .map_err(|e| GatewayError::bad_request(e.to_string()))?;
                if w.nats_jwt_pulls != approved {
                    db::workers::worker_nats_renewed(&st.pool, id, key, nats_exp, approved).await?;
                }
                Some((jwt, nats_exp))
            }
            None => None,
        },
        _ => None,
    };
    // Workers may pull from their queues' consumers but not create them: make them here.
    let js = async_nats::jetstream::new(st.nats.clone());
    for q in new.queues.iter().filter_map(|q| QueueName::parse(q).ok()) {
        freeagent_shared::nats::ensure_queue_consumer(&js, &q)
            .await
            .map_err(GatewayError::unavailable)?;
    }
    if approved {
        tracing::info!(worker_id = %id, status, "worker registered");
    } else {
        tracing::warn!(
            worker_id = %id,
            status,
            "worker registered, awaiting approval: it takes no build until `freeagent workers approve {id}`"
        );
    }
    let event = FarmEvent::worker(
        id,
        WorkerChange::Registered,
        WorkerStatus::Idle,
        Some(new.name.clone()),
    );
    events::publish(&st.nats, &event).await;
    let (nats_jwt, nats_jwt_expires_at) = match nats {
        Some((jwt, exp)) => (Some(jwt), Some(exp)),
        None => (None, None),
    };
    // Always 200, never 201: the old macOS worker app accepts exactly 200.
    Ok(Json(Registered {
        id,
        access_token,
        expires_at,
        status: status.into(),
        nats_jwt,
        nats_jwt_expires_at,
        approved,
    }))
}
