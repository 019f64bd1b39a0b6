//! `POST /api/builds/:id/cancel` and `DELETE /api/builds/:id`: the gateway checks who asks (the
//! submit scope and the build's team, or the build's token) and forwards the cancel to the
//! scheduler, which owns the transition (`scheduler.cancel`): one guarded statement to
//! `cancelled` from any status that has not ended, then the order to the worker holding it.
//! A worker that misses the order learns it at its next heartbeat.

use crate::auth::extract::{BuildAccess, Submit};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use freeagent_shared::api::Cancelled;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::status::BuildStatus;
use freeagent_shared::wire::{CancelReply, CancelRequest};

/// Submitters with the submit scope (seeing the build's team), or this build's token.
pub async fn cancel(
    State(st): State<AppState>,
    BuildAccess(b, ..): BuildAccess<Submit>,
) -> Result<Json<Cancelled>> {
    let id = b.id;
    match st.scheduler.cancel(&CancelRequest { build_id: id }).await {
        Ok(CancelReply::Cancelled) => Ok(Json(Cancelled {
            id,
            status: BuildStatus::Cancelled,
        })),
        Ok(CancelReply::Finished { status }) => Err(GatewayError::new(
            ErrorCode::BuildAlreadyFinished,
            "Build already finished",
        )
        .hint(format!("the build is {status}"))),
        Ok(CancelReply::NotFound) => Err(GatewayError::not_found("build")),
        Ok(CancelReply::Error { message }) => Err(GatewayError::unavailable(message)),
        Ok(CancelReply::Unavailable { message }) => Err(GatewayError::unavailable(message)),
        Err(e) => Err(GatewayError::unavailable(e)),
    }
}
