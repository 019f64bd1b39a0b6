//! `POST /api/workers/register`: a worker gets an id and a token. Re-registering an existing id
//! needs that worker's token, the API key that registered it, or an admin key, so one worker's
//! token is never handed to another.

use crate::auth::{self, SCOPE_ADMIN, SCOPE_READ, SCOPE_WORKER};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use freeagent_shared::db::{self, workers::NewWorker};
use freeagent_shared::ids::WorkerId;
use freeagent_shared::status::{Platform, QueueName};
use freeagent_shared::token;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub capabilities: serde_json::Value,
}

/// An optional JSON body: none (or no JSON content type) is the default; a malformed one is 400.
pub fn optional_json<T: Default>(body: std::result::Result<Json<T>, JsonRejection>) -> Result<T> {
    match body {
        Ok(Json(b)) => Ok(b),
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(T::default()),
        Err(e) => Err(bad_json(e)),
    }
}

pub fn bad_json(e: JsonRejection) -> GatewayError {
    GatewayError::bad_request(format!("invalid JSON body: {}", e.body_text()))
}

pub async fn register(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: std::result::Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Response> {
    let key = auth::require_api_key(&st, &headers, SCOPE_WORKER).await?;
    let Json(req) = body.map_err(bad_json)?;
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
    };
    let status = match db::workers::worker_get(&st.pool, id).await? {
        None => match db::workers::worker_insert(&st.pool, &new).await {
            Ok(_) => "registered",
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
            let owns = presented.is_some_and(|t| existing.token_ok(t, chrono::Utc::now()))
                || existing.registered_by == Some(key.id)
                || auth::has_scope(&key, SCOPE_ADMIN);
            if !owns {
                return Err(GatewayError::forbidden(
                    "this worker id belongs to another registration; send its X-Worker-Token",
                ));
            }
            db::workers::worker_reregister(&st.pool, &new).await?;
            "re-registered"
        }
    };
    tracing::info!(worker_id = %id, status, "worker registered");
    let code = if status == "registered" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(json!({"id": id, "access_token": access_token, "expires_at": expires_at, "status": status}))).into_response())
}

/// A worker not heard from for this long shows as `offline`.
pub const OFFLINE_AFTER_SECS: f64 = 30.0;

/// `GET /api/workers`: the registry, with each worker's status as of now and its builds.
pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>> {
    auth::require_api_key(&st, &headers, SCOPE_READ).await?;
    let workers = db::workers::worker_list(&st.pool, OFFLINE_AFTER_SECS).await?;
    let workers: Vec<_> = workers
        .into_iter()
        .map(|w| {
            json!({
                "id": w.id,
                "name": w.name,
                "status": w.status,
                "capabilities": w.capabilities,
                "last_seen_at": w.last_seen_at,
                "registered_at": w.registered_at,
                "builds": w.builds,
            })
        })
        .collect();
    Ok(Json(json!({ "workers": workers })))
}

/// `POST /api/workers/:id/drain`: the worker gets no new build; its running builds finish.
pub async fn drain(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    auth::require_api_key(&st, &headers, SCOPE_ADMIN).await?;
    let id: WorkerId = id.parse().map_err(|_| GatewayError::not_found("worker"))?;
    let w = db::workers::worker_drain(&st.pool, id)
        .await?
        .ok_or_else(|| GatewayError::not_found("worker"))?;
    tracing::info!(worker_id = %id, "worker draining");
    Ok(Json(json!({"id": w.id, "status": "draining"})))
}

/// `GET /api/workers/:id/stats`, in the seed's shape (camelCase), from the attempt records.
pub async fn stats(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    auth::require_api_key(&st, &headers, SCOPE_READ).await?;
    let id: WorkerId = id.parse().map_err(|_| GatewayError::not_found("worker"))?;
    let w = db::workers::worker_get(&st.pool, id)
        .await?
        .ok_or_else(|| GatewayError::not_found("worker"))?;
    let t = db::builds::build_worker_tally(&st.pool, id).await?;
    let offline = w.status != "offline"
        && (chrono::Utc::now() - w.last_seen_at).num_seconds() as f64 > OFFLINE_AFTER_SECS;
    Ok(Json(json!({
        "totalBuilds": t.total,
        "successfulBuilds": t.completed,
        "failedBuilds": t.failed,
        "workerName": w.name,
        "status": if offline { "offline" } else { w.status.as_str() },
        "uptime": (chrono::Utc::now() - w.registered_at).num_seconds(),
    })))
}
