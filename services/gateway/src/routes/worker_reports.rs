//! What an HTTP worker reports: log lines, its own heartbeat, the outcome (result upload or
//! failure), and giving builds back (abandon, unregister). Outcomes are idempotent: the same
//! outcome sent twice gets the same reply; one for a build the worker does not hold is a 409.

use super::worker_protocol::{beat, held};
use crate::auth::{self, WorkerCaller};
use crate::error::{GatewayError, Result};
use crate::multipart::{self, malformed};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Multipart, Path, State, multipart::MultipartRejection};
use axum::http::HeaderMap;
use chrono::Utc;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::db::{self, builds::Build};
use freeagent_shared::ids::BuildId;
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::status::BuildStatus;
use freeagent_shared::subjects;
use freeagent_shared::wire::{
    self, AbandonRequest, CompleteRequest, FailRequest, FinishReply, LogLevel, LogLine,
    PresenceRequest,
};
use serde::Deserialize;
use serde_json::{Value, json};

pub const MAX_LOG_LINE: usize = 16 * 1024;
pub const MAX_LOG_BATCH: usize = 1000;

#[derive(Deserialize)]
pub struct Line {
    level: Option<LogLevel>,
    message: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum LogBody {
    Batch { logs: Vec<Line> },
    One(Line),
}

fn bad_json(e: JsonRejection) -> GatewayError {
    super::workers::bad_json(e)
}

fn build_id(raw: &str) -> Result<BuildId> {
    raw.parse().map_err(|_| GatewayError::not_found("build"))
}

/// `POST /api/builds/:id/logs`: `{level, message}` or `{logs: [...]}` from the holder.
pub async fn logs(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: std::result::Result<Json<LogBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let caller = auth::worker_caller(&st, &headers, None).await?;
    let Json(body) = body.map_err(|e| {
        GatewayError::bad_request(format!(
            "expected {{level, message}} or {{logs: [...]}}: {}",
            e.body_text()
        ))
    })?;
    let b = held(&st, &caller, build_id(&id)?).await?;
    let (lines, batch) = match body {
        LogBody::Batch { logs } => (logs, true),
        LogBody::One(l) => (vec![l], false),
    };
    if lines.len() > MAX_LOG_BATCH {
        return Err(GatewayError::new(
            ErrorCode::PayloadTooLarge,
            format!("at most {MAX_LOG_BATCH} lines per request"),
        ));
    }
    if lines.iter().any(|l| l.message.len() > MAX_LOG_LINE) {
        return Err(GatewayError::new(
            ErrorCode::PayloadTooLarge,
            format!("a log line is longer than {MAX_LOG_LINE} bytes"),
        ));
    }
    // The first sign of life moves the build to building.
    if b.status == BuildStatus::Assigned {
        beat(&st, &caller, &b, None).await?;
    }
    let js = async_nats::jetstream::new(st.nats.clone());
    let mut acks = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let line = LogLine {
            build_id: b.id,
            attempt: b.attempt,
            seq: i as u64 + 1,
            timestamp: Utc::now(),
            level: l.level.unwrap_or(LogLevel::Info),
            message: l.message.clone(),
        };
        acks.push(
            js.publish(
                subjects::logs(b.id, caller.id()),
                wire::encode(&line).into(),
            )
            .await
            .map_err(GatewayError::unavailable)?,
        );
    }
    for ack in acks {
        ack.await.map_err(GatewayError::unavailable)?;
    }
    Ok(Json(if batch {
        json!({"success": true, "count": lines.len(), "access_token": caller.token})
    } else {
        json!({"success": true, "access_token": caller.token})
    }))
}

#[derive(Deserialize, Default)]
pub struct WorkerBeat {
    build_id: Option<String>,
    progress: Option<u8>,
    worker_id: Option<String>,
}

/// `POST /api/workers/heartbeat` `{build_id?, progress?}`: presence, plus a lease renewal.
pub async fn worker_heartbeat(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: std::result::Result<Json<WorkerBeat>, JsonRejection>,
) -> Result<Json<Value>> {
    let body = super::workers::optional_json(body)?;
    let caller = auth::worker_caller(&st, &headers, body.worker_id.as_deref()).await?;
    let held_now = db::builds::build_held_by(&st.pool, caller.worker.id).await?;
    let _ = st
        .scheduler
        .presence(&PresenceRequest {
            worker_id: caller.id(),
            running: held_now.len() as u32,
        })
        .await;
    let mut cancel_builds = vec![];
    if let Some(raw) = &body.build_id {
        let id = build_id(raw)?;
        let b = db::builds::build_get(&st.pool, id)
            .await?
            .ok_or_else(|| GatewayError::not_found("build"))?;
        if b.worker_id == Some(caller.worker.id) {
            let stop = if matches!(b.status, BuildStatus::Assigned | BuildStatus::Building) {
                beat(&st, &caller, &b, body.progress.map(|p| p.min(100))).await?
            } else {
                true
            };
            if stop {
                cancel_builds.push(b.id);
            }
        } else {
            cancel_builds.push(id);
        }
    }
    Ok(Json(
        json!({"success": true, "access_token": caller.token, "cancel_builds": cancel_builds}),
    ))
}

fn finish_reply(
    reply: std::result::Result<FinishReply, freeagent_shared::scheduler_client::RequestError>,
    token: &Option<String>,
) -> Result<Json<Value>> {
    match reply {
        Ok(FinishReply::Recorded { status }) => Ok(Json(
            json!({"success": true, "status": status, "access_token": token}),
        )),
        Ok(FinishReply::NotYours { status, .. }) => Err(GatewayError::new(
            ErrorCode::Conflict,
            "this worker does not hold that build; nothing changed",
        )
        .hint(
            status
                .map(|s| format!("the build is {s}"))
                .unwrap_or_else(|| "unknown build".into()),
        )),
        Ok(FinishReply::Error { message }) => Err(GatewayError::bad_request(message)),
        Ok(FinishReply::Unavailable { message }) => Err(GatewayError::unavailable(message)),
        Err(e) => Err(GatewayError::unavailable(e)),
    }
}

/// A report about a build this worker held: the build as it is now, or 409.
async fn reported(st: &AppState, caller: &WorkerCaller, id: BuildId) -> Result<Build> {
    let b = db::builds::build_get(&st.pool, id)
        .await?
        .ok_or_else(|| GatewayError::not_found("build"))?;
    if b.worker_id != Some(caller.worker.id) {
        return Err(GatewayError::new(
            ErrorCode::Conflict,
            "this worker does not hold that build; nothing changed",
        ));
    }
    Ok(b)
}

/// `POST /api/workers/result` (alias `/upload`): multipart `build_id`, `success`,
/// `error_message`, file `result` (after `build_id`), streamed to storage.
pub async fn result(
    State(st): State<AppState>,
    headers: HeaderMap,
    mp: std::result::Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>> {
    // Credentials first: a stranger gets 401/403, not a complaint about the body. A legacy
    // worker names itself in a form field, so its key is checked now and its id after parsing.
    let mut caller: Option<WorkerCaller> = None;
    if headers.contains_key("x-worker-token") {
        caller = Some(auth::worker_caller(&st, &headers, None).await?);
    } else {
        auth::require_api_key(&st, &headers, auth::SCOPE_WORKER).await?;
    }
    let mut mp = mp.map_err(|e| {
        GatewayError::new(
            ErrorCode::NotMultipart,
            format!("expected multipart/form-data: {}", e.body_text()),
        )
    })?;
    let (mut id, mut success, mut error, mut worker_id, mut stored) =
        (None, None, None, None, None);
    while let Some(field) = mp.next_field().await.map_err(malformed)? {
        match field.name().unwrap_or_default() {
            "build_id" => {
                id = Some(build_id(
                    multipart::text(field, "build_id", 64).await?.trim(),
                )?)
            }
            "worker_id" => worker_id = Some(multipart::text(field, "worker_id", 64).await?),
            "success" => {
                success = Some(matches!(
                    multipart::text(field, "success", 16).await?.trim(),
                    "true" | "1"
                ))
            }
            "error_message" => error = Some(multipart::text(field, "error_message", 4096).await?),
            "result" => {
                let id = id.ok_or_else(|| {
                    GatewayError::bad_request("send the build_id part before the result file")
                })?;
                let c = match caller.take() {
                    Some(c) => c,
                    None => auth::worker_caller(&st, &headers, worker_id.as_deref()).await?,
                };
                let b = reported(&st, &c, id).await?;
                if b.status == BuildStatus::Completed {
                    // A replay of a recorded completion: keep the stored artifact as it is.
                    drop(field);
                } else {
                    let b = held(&st, &c, id).await?;
                    let key = ObjectKey::Result(b.id, b.attempt);
                    stored = Some((
                        b.attempt,
                        multipart::to_storage(
                            &st.storage,
                            field,
                            "result",
                            &key,
                            st.config.result_limit,
                        )
                        .await?,
                    ));
                }
                caller = Some(c);
            }
            _ => drop(field),
        }
    }
    let id = id.ok_or_else(|| GatewayError::bad_request("the build_id part is required"))?;
    let caller = match caller {
        Some(c) => c,
        None => auth::worker_caller(&st, &headers, worker_id.as_deref()).await?,
    };
    let b = reported(&st, &caller, id).await?;
    if success.unwrap_or(stored.is_some()) {
        if b.status == BuildStatus::Completed {
            return Ok(Json(
                json!({"success": true, "status": "completed", "access_token": caller.token}),
            ));
        }
        let Some((attempt, result)) = stored else {
            return Err(GatewayError::bad_request(
                "success=true needs the result file",
            ));
        };
        let req = CompleteRequest {
            build_id: id,
            attempt,
            worker_id: caller.id(),
            result,
        };
        finish_reply(st.scheduler.complete(&req).await, &caller.token)
    } else {
        let req = FailRequest {
            build_id: id,
            attempt: b.attempt,
            worker_id: caller.id(),
            error: error.unwrap_or_else(|| "the worker reported a failure".into()),
        };
        finish_reply(st.scheduler.fail(&req).await, &caller.token)
    }
}

#[derive(Deserialize)]
pub struct FailBody {
    build_id: String,
    error: Option<String>,
    reason: Option<String>,
    worker_id: Option<String>,
}

/// `POST /api/workers/fail` `{build_id, error}`.
pub async fn fail(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: std::result::Result<Json<FailBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(body) = body.map_err(bad_json)?;
    let caller = auth::worker_caller(&st, &headers, body.worker_id.as_deref()).await?;
    let b = reported(&st, &caller, build_id(&body.build_id)?).await?;
    let req = FailRequest {
        build_id: b.id,
        attempt: b.attempt,
        worker_id: caller.id(),
        error: body
            .error
            .unwrap_or_else(|| "the worker reported a failure".into()),
    };
    finish_reply(st.scheduler.fail(&req).await, &caller.token)
}

/// `POST /api/workers/abandon` `{build_id, reason}`: the build goes back to the queue.
pub async fn abandon(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: std::result::Result<Json<FailBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(body) = body.map_err(bad_json)?;
    let caller = auth::worker_caller(&st, &headers, body.worker_id.as_deref()).await?;
    let b = held(&st, &caller, build_id(&body.build_id)?).await?;
    let req = AbandonRequest {
        build_id: b.id,
        attempt: b.attempt,
        worker_id: caller.id(),
        reason: body
            .reason
            .unwrap_or_else(|| "abandoned by the worker".into()),
    };
    finish_reply(st.scheduler.abandon(&req).await, &caller.token)
        .map(|_| Json(json!({"success": true, "access_token": caller.token})))
}

/// `POST /api/workers/unregister`: every build the worker holds goes back to the queue.
pub async fn unregister(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: std::result::Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>> {
    let body: Value = super::workers::optional_json(body)?;
    let caller =
        auth::worker_caller(&st, &headers, body.get("worker_id").and_then(Value::as_str)).await?;
    let mut n = 0;
    for b in db::builds::build_held_by(&st.pool, caller.worker.id).await? {
        let req = AbandonRequest {
            build_id: b.id,
            attempt: b.attempt,
            worker_id: caller.id(),
            reason: "the worker unregistered".into(),
        };
        if matches!(
            st.scheduler.abandon(&req).await,
            Ok(FinishReply::Recorded { .. })
        ) {
            n += 1;
        }
    }
    revoke(&st, caller.worker.id).await?;
    Ok(Json(
        json!({"success": true, "builds_reassigned": n, "access_token": caller.token}),
    ))
}

/// Ends a worker's registration: refused from now on, and its NATS key revoked (the scheduler
/// pushes the revocation to the servers at once).
pub async fn revoke(st: &AppState, worker: freeagent_shared::ids::WorkerId) -> Result<()> {
    if let Some(w) = db::workers::worker_revoke(&st.pool, worker).await?
        && let Some(key) = &w.nats_public_key
    {
        db::nats_revocations::revoke(&st.pool, key, w.id, w.nats_jwt_expires_at).await?;
        if let Err(e) = st
            .nats
            .publish(subjects::REVOKED, bytes::Bytes::new())
            .await
        {
            tracing::warn!(worker_id = %w.id, error = %e, "could not wake the scheduler; the revocation reaches NATS at its next tick");
        }
    }
    Ok(())
}
