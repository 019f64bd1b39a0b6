//! What an HTTP worker reports: log lines, telemetry, its own heartbeat, a failure, and giving
//! builds back (abandon, unregister); the result upload is `result`. Outcomes are
//! idempotent: the same outcome sent twice gets the same reply; one for a build the worker does
//! not hold is a 409.

use super::adapter::{beat, build_id, finish_reply, held, reported};
use crate::auth::WorkerCaller;
use crate::auth::extract::PathId;
use crate::auth::extract::WorkerAuth;
use crate::error::{GatewayError, Result};
use crate::http::body::bad_json;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::Utc;
use freeagent_shared::api::{
    FailBody, LogBody, LogsAccepted, Outcome, Success, Telemetry, Unregistered, WorkerBeat,
    WorkerBeatReply,
};
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::db::{self, builds::Build};
use freeagent_shared::ids::BuildId;
use freeagent_shared::status::BuildStatus;
use freeagent_shared::subjects;
use freeagent_shared::wire::{
    self, AbandonRequest, FailRequest, FinishReply, LogLevel, LogLine, PresenceRequest,
};
use serde_json::Value;

pub const MAX_LOG_LINE: usize = 16 * 1024;
pub const MAX_LOG_BATCH: usize = 1000;

/// Counts lines against the worker's log budget and the attempt's cap, as the scheduler's log
/// gate counts a NATS worker's (ADR-0018): over the rate a 429 with the wait, past the cap a
/// 413; either way nothing is stored.
fn charge_log(
    st: &AppState,
    caller: &WorkerCaller,
    b: &Build,
    lines: usize,
    sizes: impl Iterator<Item = usize>,
) -> Result<()> {
    let (buckets, attempts) = &*st.log_budget;
    let bytes: u64 = sizes.map(|n| n as u64).sum();
    let cap = buckets.budget().attempt_max_bytes;
    if let Err(wait) = buckets.take(
        caller.id(),
        u32::try_from(lines).unwrap_or(u32::MAX),
        u32::try_from(bytes).unwrap_or(u32::MAX),
    ) {
        metrics::counter!(freeagent_shared::metrics::LOG_LINES_REFUSED, "reason" => "budget")
            .increment(lines as u64);
        return Err(GatewayError::new(
            ErrorCode::RateLimited,
            format!(
                "this worker writes log lines faster than its budget (FREEAGENT_WORKER_LOG_LINES_PER_SEC, FREEAGENT_WORKER_LOG_BYTES_PER_SEC); send them again in {} ms",
                wait.as_millis().max(1)
            ),
        ));
    }
    if !attempts.charge(b.id, b.attempt, bytes, cap) {
        metrics::counter!(freeagent_shared::metrics::LOG_LINES_REFUSED, "reason" => "cap")
            .increment(lines as u64);
        return Err(GatewayError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "this attempt's log is past its cap of {cap} bytes (FREEAGENT_LOG_MAX_BYTES plus its last lines)"
            ),
        ));
    }
    Ok(())
}

/// `POST /api/builds/:id/logs`: `{level, message}` or `{logs: [...]}` from the holder.
pub async fn logs(
    State(st): State<AppState>,
    caller: WorkerCaller,
    PathId(id): PathId<BuildId>,
    body: std::result::Result<Json<LogBody>, JsonRejection>,
) -> Result<Json<LogsAccepted>> {
    let Json(body) = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            return bad_json(e);
        }
        GatewayError::bad_request(format!(
            "expected {{level, message}} or {{logs: [...]}}: {}",
            e.body_text()
        ))
    })?;
    let b = held(&st, &caller, id).await?;
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
    charge_log(
        &st,
        &caller,
        &b,
        lines.len(),
        lines.iter().map(|l| l.message.len()),
    )?;
    // The first sign of life moves the build to building; later lines renew its lease.
    if b.status == BuildStatus::Assigned {
        beat(&st, &caller, &b, None).await?;
    } else {
        super::adapter::renew(&st, &caller, &b).await;
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
            // As the reference worker does: no secret reaches a build's log.
            message: freeagent_shared::redact::redact(&l.message).into_owned(),
            stream: None,
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
        freeagent_shared::nats::stored(ack, subjects::LOGS_STREAM)
            .await
            .map_err(GatewayError::unavailable)?;
    }
    Ok(Json(LogsAccepted {
        success: true,
        count: batch.then_some(lines.len()),
        access_token: caller.token,
    }))
}

/// `POST /api/builds/:id/telemetry` `{type, timestamp, data}` from the holder (the old VM
/// monitor: cpu, memory, disk, stage): kept as a `debug` line of the build's log.
pub async fn telemetry(
    State(st): State<AppState>,
    caller: WorkerCaller,
    PathId(id): PathId<BuildId>,
    body: std::result::Result<Json<Telemetry>, JsonRejection>,
) -> Result<Json<Success>> {
    let Json(body) = body.map_err(bad_json)?;
    let b = held(&st, &caller, id).await?;
    super::adapter::renew(&st, &caller, &b).await;
    let kind = body.kind.as_deref().unwrap_or("telemetry");
    let data = body.data.unwrap_or(Value::Null);
    let mut message =
        freeagent_shared::redact::redact(&format!("telemetry {kind}: {data}")).into_owned();
    if message.len() > MAX_LOG_LINE {
        let mut end = MAX_LOG_LINE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    charge_log(&st, &caller, &b, 1, std::iter::once(message.len()))?;
    let line = LogLine {
        build_id: b.id,
        attempt: b.attempt,
        seq: 1,
        timestamp: Utc::now(),
        level: LogLevel::Debug,
        message,
        stream: None,
    };
    async_nats::jetstream::new(st.nats.clone())
        .publish(
            subjects::logs(b.id, caller.id()),
            wire::encode(&line).into(),
        )
        .await
        .map_err(GatewayError::unavailable)?
        .await
        .map_err(GatewayError::unavailable)?;
    Ok(Json(Success::new(caller.token)))
}

/// `POST /api/workers/heartbeat` `{build_id?, progress?}`: presence, plus a lease renewal.
pub async fn worker_heartbeat(
    State(st): State<AppState>,
    WorkerAuth(credential): WorkerAuth,
    headers: HeaderMap,
    body: std::result::Result<Json<WorkerBeat>, JsonRejection>,
) -> Result<Json<WorkerBeatReply>> {
    let body = crate::http::body::optional_json(body)?;
    let caller = credential
        .caller(&st, &headers, body.worker_id.as_deref())
        .await?;
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
            let stop = if b.status.is_held() {
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
    Ok(Json(WorkerBeatReply {
        success: true,
        access_token: caller.token,
        cancel_builds,
    }))
}

/// `POST /api/workers/fail` `{build_id, error}`.
pub async fn fail(
    State(st): State<AppState>,
    WorkerAuth(credential): WorkerAuth,
    headers: HeaderMap,
    body: std::result::Result<Json<FailBody>, JsonRejection>,
) -> Result<Json<Outcome>> {
    let Json(body) = body.map_err(bad_json)?;
    for (field, text) in [("error", &body.error), ("reason", &body.reason)] {
        crate::http::multipart::no_nul(field, text.as_deref().unwrap_or_default())?;
    }
    let caller = credential
        .caller(&st, &headers, body.worker_id.as_deref())
        .await?;
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
    WorkerAuth(credential): WorkerAuth,
    headers: HeaderMap,
    body: std::result::Result<Json<FailBody>, JsonRejection>,
) -> Result<Json<Success>> {
    let Json(body) = body.map_err(bad_json)?;
    for (field, text) in [("error", &body.error), ("reason", &body.reason)] {
        crate::http::multipart::no_nul(field, text.as_deref().unwrap_or_default())?;
    }
    let caller = credential
        .caller(&st, &headers, body.worker_id.as_deref())
        .await?;
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
        .map(|_| Json(Success::new(caller.token.clone())))
}

/// `POST /api/workers/unregister` (alias `POST /api/workers/:id/unregister`): every build the
/// worker holds goes back to the queue, and its registration ends.
pub async fn unregister(
    State(st): State<AppState>,
    WorkerAuth(credential): WorkerAuth,
    headers: HeaderMap,
    path: Option<Path<String>>,
    body: std::result::Result<Json<Value>, JsonRejection>,
) -> Result<Json<Unregistered>> {
    let body: Value = crate::http::body::optional_json(body)?;
    let named = path
        .as_ref()
        .map(|Path(id)| id.as_str())
        .or_else(|| body.get("worker_id").and_then(Value::as_str));
    let caller = credential.caller(&st, &headers, named).await?;
    if let Some(Path(id)) = &path
        && id.parse::<freeagent_shared::ids::WorkerId>().ok() != Some(caller.worker.id)
    {
        return Err(GatewayError::forbidden(
            "a worker may unregister only itself",
        ));
    }
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
    // Refused from now on, and its NATS key revoked (the scheduler pushes the revocation to the
    // servers at once).
    freeagent_shared::worker_revocation::revoke(&st.pool, &st.nats, caller.worker.id).await?;
    Ok(Json(Unregistered {
        success: true,
        builds_reassigned: n,
        access_token: caller.token,
    }))
}
