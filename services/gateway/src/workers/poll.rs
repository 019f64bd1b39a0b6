//! The HTTP worker protocol (the seed's polling workers): poll for a job, fetch its inputs,
//! report logs, progress and the outcome. Every operation goes to the scheduler's one
//! implementation (claim, heartbeat, complete, fail, abandon) with the worker's credential; the
//! gateway only adapts HTTP to it. A job is taken from the same JetStream queue NATS workers use.

use super::adapter::{beat, held};
use crate::auth::WorkerCaller;
use crate::auth::extract::PathId;
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use async_nats::jetstream::AckKind;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};

use freeagent_shared::api::{BuildBeat, BuildBeatReply, Job, PollQuery, PollReply};
use freeagent_shared::db::{self, builds::Build};
use freeagent_shared::ids::{BuildId, WorkerId};
use freeagent_shared::status::QueueName;
use freeagent_shared::wire::{self, ClaimReply, ClaimRequest, Dispatch, NotYours};
use futures::StreamExt;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How long past its `wait` a poll waits for its last pull and the claim of what it brought.
/// A poll without `wait` makes one pull that returns at once, so this is reached only on a
/// stalled farm. Shorter (it was 100 ms), a loaded machine starved clients polling without
/// `wait`: their dispatches arrived past the budget and were handed back, again and again; and
/// claiming one for a client that already had its answer held a build for a worker that may
/// never poll again (a stopped worker's build waited its whole lease).
const ANSWER_GRACE: Duration = Duration::from_secs(2);

fn job(b: &Build) -> Job {
    Job {
        id: b.id,
        platform: b.platform,
        // Paths, not URLs: old workers prepend their controller URL.
        source_url: format!("/api/builds/{}/source", b.id),
        certs_url: b
            .certs_key
            .as_ref()
            .map(|_| format!("/api/builds/{}/certs", b.id)),
        submitted_at: b.submitted_at,
        attempt: b.attempt,
        metadata: b.metadata.clone(),
    }
}

/// `GET /api/workers/poll?wait=<s>`: the job this worker holds, else a new one from its queues.
/// Without `wait` the answer comes at once, job or not; with it, when a job arrives or after
/// `wait` seconds (60 at most).
pub async fn poll(
    State(st): State<AppState>,
    caller: WorkerCaller,
    Query(q): Query<PollQuery>,
) -> Result<Json<PollReply>> {
    let wait = match q.wait.as_deref().filter(|s| !s.is_empty()) {
        None => Duration::ZERO,
        Some(v) => Duration::from_secs_f64(
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| GatewayError::bad_request("wait must be a number of seconds"))?,
        )
        .min(MAX_WAIT),
    };
    let reply = |b: Option<Build>| {
        Json(PollReply {
            job: b.as_ref().map(job),
            access_token: caller.token.clone(),
        })
    };
    if let Some(b) = held_job(&st, &caller).await? {
        return Ok(reply(Some(b)));
    }
    // Draining, or awaiting an operator's approval.
    if !caller.worker.takes_builds() {
        return Ok(reply(None));
    }
    let queues = dedup(caller.worker.effective_queues());
    if queues.is_empty() {
        return Err(GatewayError::bad_request(
            "this worker declared no platform or queue; register with capabilities.platforms",
        ));
    }
    // The pulls run in a task of their own: a dispatch once received is always claimed or
    // handed back, even when the client hangs up (the handler is dropped) or the budget runs
    // out. Dropped unanswered, it would wait the consumer's ack wait (30 s) for redelivery.
    let hung_up = CancellationToken::new();
    let _on_drop = hung_up.clone().drop_guard();
    let task = tokio::spawn(take_job(
        st.clone(),
        caller.worker.id,
        queues,
        wait,
        hung_up.clone(),
    ));
    match tokio::time::timeout(wait + ANSWER_GRACE, task).await {
        Ok(Ok(found)) => Ok(reply(found?)),
        Ok(Err(e)) => Err(GatewayError::unavailable(e)),
        // Out of time (a stalled farm): what the task still brings goes back for another
        // worker; a claim already under way lands, and this poll or the next returns it.
        Err(_) => {
            hung_up.cancel();
            Ok(reply(held_job(&st, &caller).await?))
        }
    }
}

async fn held_job(st: &AppState, caller: &WorkerCaller) -> Result<Option<Build>> {
    Ok(db::builds::build_held_by(&st.pool, caller.worker.id)
        .await?
        .into_iter()
        .next())
}

/// Pulls dispatches from `queues` in turn and claims the first that is this worker's to run,
/// until `wait` has passed (one round when it is zero) or the poll is `hung_up`. A pull under
/// way when the poll hangs up is finished, not dropped (it lasts a second at most), and a
/// dispatch it brings is handed back at once for another worker.
async fn take_job(
    st: AppState,
    worker_id: WorkerId,
    queues: Vec<QueueName>,
    wait: Duration,
    hung_up: CancellationToken,
) -> Result<Option<Build>> {
    let deadline = Instant::now() + wait;
    // Queues take turns with short pulls, so one idle queue does not hold up another, and a
    // poll that hangs up ends its last pull soon.
    let slice = if queues.len() > 1 {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    loop {
        for queue in &queues {
            if hung_up.is_cancelled() {
                return Ok(None);
            }
            let consumer = st
                .consumers
                .get(&st.nats, queue)
                .await
                .map_err(GatewayError::unavailable)?;
            let left = deadline.saturating_duration_since(Instant::now());
            let batch = if left.is_zero() {
                consumer.fetch().max_messages(1).messages().await
            } else {
                consumer
                    .batch()
                    .max_messages(1)
                    .expires(left.min(slice).max(Duration::from_millis(100)))
                    .messages()
                    .await
            };
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    st.consumers.forget(queue);
                    return Err(GatewayError::unavailable(e));
                }
            };
            let msg = match batch.next().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::warn!(%worker_id, error = %e, "pull failed");
                    continue;
                }
                None => continue,
            };
            let Ok(d) = wire::decode::<Dispatch>(&msg.payload) else {
                let _ = msg.ack_with(AckKind::Term).await;
                continue;
            };
            if hung_up.is_cancelled() {
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                return Ok(None);
            }
            let req = ClaimRequest {
                build_id: d.build_id,
                attempt: d.attempt,
                worker_id,
            };
            let claimed = st.scheduler.claim(&req).await;
            tracing::debug!(%worker_id, build_id = %d.build_id, attempt = %d.attempt, reply = ?claimed, "http worker claim");
            match claimed {
                Ok(ClaimReply::Granted(_)) => {
                    let _ = msg.ack().await;
                    return Ok(Some(
                        db::builds::build_get(&st.pool, d.build_id)
                            .await?
                            .ok_or_else(|| GatewayError::not_found("build"))?,
                    ));
                }
                // The worker is full (concurrent polls): the dispatch goes to someone else.
                Ok(ClaimReply::NotYours {
                    reason: NotYours::AtCapacity,
                    ..
                }) => {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    return Ok(None);
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
            return Ok(None);
        }
    }
}

fn dedup(mut q: Vec<QueueName>) -> Vec<QueueName> {
    let mut seen = std::collections::HashSet::new();
    q.retain(|x| seen.insert(x.clone()));
    q
}

/// `GET /api/builds/:id/source` and `/certs`: streamed, only to the worker holding the build.
async fn input(
    st: &AppState,
    caller: WorkerCaller,
    id: BuildId,
    kind: &'static str,
) -> Result<axum::response::Response> {
    let b = held(st, &caller, id).await?;
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
    let upstream = super::adapter::fetch_input(st, &key).await?;
    let length = upstream.headers().get("content-length").cloned();
    // The type comes from the bytes (old workers pick how to unpack by it): look at the first
    // chunk, then send it on ahead of the rest.
    let mut body = upstream.bytes_stream();
    let first = match body.next().await {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Err(GatewayError::unavailable(e)),
        None => bytes::Bytes::new(),
    };
    let mut resp = axum::response::Response::builder().header("content-type", sniff(&first));
    if let Some(len) = length {
        resp = resp.header("content-length", len);
    }
    if let Some(sha) = sha {
        resp = resp.header("x-checksum-sha256", sha);
    }
    let rest = futures::stream::once(async move { Ok::<_, reqwest::Error>(first) }).chain(body);
    resp.body(axum::body::Body::from_stream(rest))
        .map_err(GatewayError::unavailable)
}

pub async fn source(
    State(st): State<AppState>,
    caller: WorkerCaller,
    PathId(id): PathId<BuildId>,
) -> Result<axum::response::Response> {
    input(&st, caller, id, "source").await
}

pub async fn certs(
    State(st): State<AppState>,
    caller: WorkerCaller,
    PathId(id): PathId<BuildId>,
) -> Result<axum::response::Response> {
    input(&st, caller, id, "certs").await
}

/// The media type of an input, from its first bytes.
pub fn sniff(head: &[u8]) -> &'static str {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        "application/zip"
    } else if head.starts_with(&[0x1f, 0x8b]) {
        "application/gzip"
    } else {
        "application/octet-stream"
    }
}

/// `POST /api/builds/:id/heartbeat` `{progress?}`.
pub async fn build_heartbeat(
    State(st): State<AppState>,
    caller: WorkerCaller,
    PathId(id): PathId<BuildId>,
    body: std::result::Result<Json<BuildBeat>, JsonRejection>,
) -> Result<Json<BuildBeatReply>> {
    let body: BuildBeat = crate::http::body::optional_json(body)?;
    let progress = parse_progress(body.progress.as_ref())?;
    let b = super::adapter::reported(&st, &caller, id).await?;
    // A build that ended meanwhile (cancelled, timed out, lost) tells its old holder to stop.
    let cancel = if b.status.is_held() {
        beat(&st, &caller, &b, progress).await?
    } else {
        true
    };
    Ok(Json(BuildBeatReply {
        status: "ok".into(),
        timestamp: chrono::Utc::now(),
        cancel,
        access_token: caller.token,
    }))
}

fn parse_progress(progress: Option<&Value>) -> Result<Option<u8>> {
    match progress {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|p| *p <= 100)
            .map(|p| Some(p as u8))
            .ok_or_else(|| GatewayError::bad_request("progress must be an integer from 0 to 100")),
    }
}
