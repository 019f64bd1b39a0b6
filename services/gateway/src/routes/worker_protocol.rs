//! The HTTP worker protocol (the seed's polling workers): poll for a job, fetch its inputs,
//! report logs, progress and the outcome. Every operation goes to the scheduler's one
//! implementation (claim, heartbeat, complete, fail, abandon) with the worker's credential; the
//! gateway only adapts HTTP to it. A job is taken from the same JetStream queue NATS workers use.

use crate::auth::{self, WorkerCaller};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use async_nats::jetstream::AckKind;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::db::{self, builds::Build};
use freeagent_shared::ids::BuildId;
use freeagent_shared::status::{BuildStatus, QueueName};
use freeagent_shared::wire::{
    self, ClaimReply, ClaimRequest, Dispatch, HeartbeatReply, HeartbeatRequest, NotYours,
};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Where the worker fetches inputs: this gateway, as the request reached it.
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{proto}://{host}")
}

fn job(b: &Build, base: &str) -> Value {
    json!({
        "id": b.id,
        "platform": b.platform,
        "source_url": format!("{base}/api/builds/{}/source", b.id),
        "certs_url": b.certs_key.as_ref().map(|_| format!("{base}/api/builds/{}/certs", b.id)),
        "submitted_at": b.submitted_at,
        "attempt": b.attempt,
        "metadata": b.metadata,
    })
}

/// The build, if this worker holds it now (assigned or building, its id on the row).
pub async fn held(st: &AppState, caller: &WorkerCaller, id: BuildId) -> Result<Build> {
    let b = db::builds::build_get(&st.pool, id)
        .await?
        .ok_or_else(|| GatewayError::not_found("build"))?;
    if b.worker_id != Some(caller.worker.id)
        || !matches!(b.status, BuildStatus::Assigned | BuildStatus::Building)
    {
        return Err(
            GatewayError::new(ErrorCode::Conflict, "this worker does not hold that build")
                .hint("poll for a new job"),
        );
    }
    Ok(b)
}

/// `GET /api/workers/poll?wait=<s>`: the job this worker holds, else a new one from its queues,
/// waiting up to `wait` seconds (60 at most) for one to arrive.
pub async fn poll(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let caller = auth::worker_caller(&st, &headers, q.get("worker_id").map(String::as_str)).await?;
    let wait = match q.get("wait").filter(|s| !s.is_empty()) {
        None => Duration::ZERO,
        Some(v) => Duration::from_secs_f64(
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| GatewayError::bad_request("wait must be a number of seconds"))?,
        )
        .min(MAX_WAIT),
    };
    let base = base_url(&headers);
    if let Some(b) = db::builds::build_held_by(&st.pool, caller.worker.id)
        .await?
        .into_iter()
        .next()
    {
        return Ok(Json(
            json!({"job": job(&b, &base), "access_token": caller.token}),
        ));
    }
    if caller.worker.status == freeagent_shared::status::WorkerStatus::Draining {
        return Ok(Json(json!({"job": null, "access_token": caller.token})));
    }
    let queues: Vec<QueueName> = caller.worker.effective_queues();
    let js = async_nats::jetstream::new(st.nats.clone());
    let deadline = Instant::now() + wait;
    let mut consumers = Vec::new();
    for q in dedup(queues) {
        consumers.push(
            freeagent_shared::nats::ensure_queue_consumer(&js, &q)
                .await
                .map_err(GatewayError::unavailable)?,
        );
    }
    if consumers.is_empty() {
        return Err(GatewayError::bad_request(
            "this worker declared no platform or queue; register with capabilities.platforms",
        ));
    }
    loop {
        // Queues take turns with short pulls, so one idle queue does not hold up another.
        // Short pulls: a poll whose client hung up leaves its pull request behind at most this long
        // (a dispatch delivered to it is redelivered after the consumer's ack wait).
        let slice = if consumers.len() > 1 {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        };
        for consumer in &consumers {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut batch = if left.is_zero() {
                consumer.fetch().max_messages(1).messages().await
            } else {
                consumer
                    .batch()
                    .max_messages(1)
                    .expires(left.min(slice).max(Duration::from_millis(100)))
                    .messages()
                    .await
            }
            .map_err(GatewayError::unavailable)?;
            let msg = match batch.next().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::warn!(worker_id = %caller.worker.id, error = %e, "pull failed");
                    continue;
                }
                None => continue,
            };
            let Ok(d) = wire::decode::<Dispatch>(&msg.payload) else {
                let _ = msg.ack_with(AckKind::Term).await;
                continue;
            };
            let req = ClaimRequest {
                build_id: d.build_id,
                attempt: d.attempt,
                worker_id: caller.id(),
            };
            let claimed = st.scheduler.claim(&req).await;
            tracing::debug!(worker_id = %caller.worker.id, build_id = %d.build_id, attempt = %d.attempt, reply = ?claimed, "http worker claim");
            match claimed {
                Ok(ClaimReply::Granted(_)) => {
                    let _ = msg.ack().await;
                    let b = db::builds::build_get(&st.pool, d.build_id)
                        .await?
                        .ok_or_else(|| GatewayError::not_found("build"))?;
                    return Ok(Json(
                        json!({"job": job(&b, &base), "access_token": caller.token}),
                    ));
                }
                // The worker is full (concurrent polls): the dispatch goes to someone else.
                Ok(ClaimReply::NotYours {
                    reason: NotYours::AtCapacity,
                    ..
                }) => {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    return Ok(Json(json!({"job": null, "access_token": caller.token})));
                }
                // Not ours to run, or a dispatch this farm does not know: ended, not redelivered.
                Ok(ClaimReply::NotYours { .. }) => {
                    let _ = msg.ack_with(AckKind::Term).await;
                }
                Ok(_) | Err(_) => {
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
        }
        if Instant::now() >= deadline {
            return Ok(Json(json!({"job": null, "access_token": caller.token})));
        }
    }
}

fn dedup(mut q: Vec<QueueName>) -> Vec<QueueName> {
    let mut seen = std::collections::HashSet::new();
    q.retain(|x| seen.insert(x.clone()));
    q
}

/// `GET /api/builds/:id/source` and `/certs`: streamed, only to the worker holding the build.
pub async fn input(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((id, kind)): Path<(String, &'static str)>,
) -> Result<axum::response::Response> {
    let caller = auth::worker_caller(&st, &headers, None).await?;
    let id: BuildId = id.parse().map_err(|_| GatewayError::not_found("build"))?;
    let b = held(&st, &caller, id).await?;
    let (key, sha) = match kind {
        "source" => (
            freeagent_shared::object_key::ObjectKey::parse(&b.source_key)
                .map_err(GatewayError::unavailable)?,
            Some(b.source_sha256.clone()),
        ),
        _ => match &b.certs_key {
            Some(k) => (
                freeagent_shared::object_key::ObjectKey::parse(k)
                    .map_err(GatewayError::unavailable)?,
                b.certs_sha256.clone(),
            ),
            None => return Err(GatewayError::not_found("certs")),
        },
    };
    let upstream = st
        .storage
        .get(&key, None)
        .await
        .map_err(GatewayError::unavailable)?;
    if !upstream.status().is_success() {
        return Err(GatewayError::unavailable(format!(
            "storage answered {} for {key}",
            upstream.status()
        )));
    }
    let mut resp =
        axum::response::Response::builder().header("content-type", "application/octet-stream");
    if let Some(len) = upstream.headers().get("content-length") {
        resp = resp.header("content-length", len.clone());
    }
    if let Some(sha) = sha {
        resp = resp.header("x-checksum-sha256", sha);
    }
    resp.body(axum::body::Body::from_stream(upstream.bytes_stream()))
        .map_err(GatewayError::unavailable)
}

pub async fn source(
    st: State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::response::Response> {
    input(st, headers, Path((id, "source"))).await
}

pub async fn certs(
    st: State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::response::Response> {
    input(st, headers, Path((id, "certs"))).await
}

/// Renews the lease of a held build; `true` when the worker must stop it.
pub async fn beat(
    st: &AppState,
    caller: &WorkerCaller,
    b: &Build,
    progress: Option<u8>,
) -> Result<bool> {
    let req = HeartbeatRequest {
        build_id: b.id,
        attempt: b.attempt,
        worker_id: caller.id(),
        progress,
    };
    match st.scheduler.heartbeat(&req, Duration::from_secs(5)).await {
        Ok(HeartbeatReply::Renewed { .. }) => Ok(false),
        Ok(HeartbeatReply::Stop { .. }) => Ok(true),
        Ok(other) => Err(GatewayError::unavailable(format!("heartbeat: {other:?}"))),
        Err(e) => Err(GatewayError::unavailable(e)),
    }
}

/// `POST /api/builds/:id/heartbeat` `{progress?}`.
pub async fn build_heartbeat(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: std::result::Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>> {
    let caller = auth::worker_caller(&st, &headers, None).await?;
    let body: Value = super::workers::optional_json(body)?;
    let progress = parse_progress(&body)?;
    let id: BuildId = id.parse().map_err(|_| GatewayError::not_found("build"))?;
    let b = db::builds::build_get(&st.pool, id)
        .await?
        .ok_or_else(|| GatewayError::not_found("build"))?;
    if b.worker_id != Some(caller.worker.id) {
        return Err(GatewayError::new(
            ErrorCode::Conflict,
            "this worker does not hold that build",
        ));
    }
    // A build that ended meanwhile (cancelled, timed out, lost) tells its old holder to stop.
    let cancel = if matches!(b.status, BuildStatus::Assigned | BuildStatus::Building) {
        beat(&st, &caller, &b, progress).await?
    } else {
        true
    };
    Ok(Json(
        json!({"status": "ok", "timestamp": chrono::Utc::now(), "cancel": cancel, "access_token": caller.token}),
    ))
}

fn parse_progress(body: &Value) -> Result<Option<u8>> {
    match body.get("progress") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|p| *p <= 100)
            .map(|p| Some(p as u8))
            .ok_or_else(|| GatewayError::bad_request("progress must be an integer from 0 to 100")),
    }
}
