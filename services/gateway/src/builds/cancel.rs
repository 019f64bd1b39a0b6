//! `POST /api/builds/:id/cancel` and `DELETE /api/builds/:id`: one guarded transition to
//! `cancelled` from any non-terminal status, then a cancel message to the worker holding it.
//! A worker that misses the message learns it at its next heartbeat.

use crate::auth::extract::{BuildAccess, Submit};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use freeagent_shared::api::Cancelled;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::db::{self, Transition};
use freeagent_shared::events::{self, BuildChange, FarmEvent};
use freeagent_shared::status::BuildStatus;
use freeagent_shared::wire;
use freeagent_shared::{farm_log, subjects};

/// Submitters with the submit scope (seeing the build's team), or this build's token.
pub async fn cancel(
    State(st): State<AppState>,
    BuildAccess(b, ..): BuildAccess<Submit>,
) -> Result<Json<Cancelled>> {
    let id = b.id;
    match db::builds::build_cancel(&st.pool, id).await? {
        Transition::Applied(b) => {
            metrics::counter!(freeagent_shared::metrics::CANCELS).increment(1);
            // Only the scheduler may publish to a worker's cancel subject: it forwards this.
            if let Some(worker_id) = b.worker_id {
                let notice = wire::CancelNotice {
                    build_id: id,
                    attempt: b.attempt,
                    worker_id,
                };
                if let Err(e) = st
                    .nats
                    .publish(subjects::CANCELLED, wire::encode(&notice).into())
                    .await
                {
                    tracing::warn!(build_id = %id, error = %e, "could not send the cancel message; the worker stops at its next heartbeat");
                }
            }
            farm_log::write(
                &st.nats,
                id,
                b.attempt,
                wire::LogLevel::Info,
                farm_log::CANCELLED,
            )
            .await;
            events::publish(&st.nats, &FarmEvent::build(&b, BuildChange::Cancelled)).await;
            tracing::info!(build_id = %id, "build cancelled");
            Ok(Json(Cancelled {
                id,
                status: BuildStatus::Cancelled,
            }))
        }
        Transition::Stale(c) => Err(GatewayError::new(
            ErrorCode::BuildAlreadyFinished,
            "Build already finished",
        )
        .hint(format!("the build is {}", c.status))),
        Transition::NotFound => Err(GatewayError::not_found("build")),
    }
}
