//! The HTTP worker adapter's shared steps: find the build a report is about, renew its lease
//! (reports count as heartbeats, as the seed's controller treated them), and word the
//! scheduler's answer to an outcome. Every route of the HTTP worker protocol goes through them.

use crate::auth::WorkerCaller;
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use freeagent_shared::api::Outcome;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::db::{self, builds::Build};
use freeagent_shared::ids::BuildId;
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::wire::{FinishReply, HeartbeatReply, HeartbeatRequest};
use std::time::Duration;

/// How often a long piece of work for a held build (a result upload) renews its lease.
const DURING_WORK: Duration = Duration::from_secs(20);

/// A build id from a path or a body: a malformed one names no build.
pub(crate) fn build_id(raw: &str) -> Result<BuildId> {
    raw.parse().map_err(|_| GatewayError::not_found("build"))
}

/// The build, if this worker holds it now (assigned or building, its id on the row).
pub(crate) async fn held(st: &AppState, caller: &WorkerCaller, id: BuildId) -> Result<Build> {
    let b = db::builds::build_get(&st.pool, id)
        .await?
        .ok_or_else(|| GatewayError::not_found("build"))?;
    if b.worker_id != Some(caller.worker.id) || !b.status.is_held() {
        return Err(
            GatewayError::new(ErrorCode::Conflict, "this worker does not hold that build")
                .hint("poll for a new job"),
        );
    }
    Ok(b)
}

/// A report about a build this worker held: the build as it is now, or 409.
pub(crate) async fn reported(st: &AppState, caller: &WorkerCaller, id: BuildId) -> Result<Build> {
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

pub(crate) fn finish_reply(
    reply: std::result::Result<FinishReply, freeagent_shared::scheduler_client::RequestError>,
    token: &Option<String>,
) -> Result<Json<Outcome>> {
    match reply {
        Ok(FinishReply::Recorded { status }) => Ok(Json(Outcome {
            success: true,
            status,
            access_token: token.clone(),
        })),
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

/// Runs `work` (a result upload) while renewing `b`'s lease every `DURING_WORK`: an upload that
/// outlasts the lease must not lose the build it completes. A short one costs no renewal.
pub(crate) async fn while_renewing<T>(
    st: &AppState,
    caller: &WorkerCaller,
    b: &Build,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + DURING_WORK, DURING_WORK);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => renew(st, caller, b).await,
        }
    }
}

/// Renews `b`'s lease for its holder if a renewal is due. A failed renewal does not fail the
/// report that carried it: the next report (or the lease's end) settles it.
pub(crate) async fn renew(st: &AppState, caller: &WorkerCaller, b: &Build) {
    if !st.lease_renewals.due(b) {
        return;
    }
    if let Err(e) = beat(st, caller, b, None).await {
        tracing::warn!(build_id = %b.id, worker_id = %caller.id(), error = %e.detail(), "a report could not renew its build's lease");
    }
}

/// Renews the lease of a held build; `true` when the worker must stop it.
pub(crate) async fn beat(
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

/// An input of a held build (its source or certs), streamed from storage; anything but a
/// success from storage is the farm's failure (503), never the worker's.
pub(crate) async fn fetch_input(st: &AppState, key: &ObjectKey) -> Result<reqwest::Response> {
    let upstream = st
        .storage
        .get(key, None)
        .await
        .map_err(GatewayError::unavailable)?;
    if !upstream.status().is_success() {
        return Err(GatewayError::unavailable(format!(
            "storage answered {} for {key}",
            upstream.status()
        )));
    }
    Ok(upstream)
}
