//! `POST /api/builds/:id/cancel` and `DELETE /api/builds/:id`: one guarded transition to
//! `cancelled` from any non-terminal status, then a cancel message to the worker holding it.
//! A worker that misses the message learns it at its next heartbeat.

use crate::auth::parse_or_auth;
use crate::auth::{self, SCOPE_SUBMIT};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use freeagent_shared::api::Cancelled;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::db::{self, Transition};
use freeagent_shared::events::{self, BuildChange, FarmEvent};
use freeagent_shared::status::BuildStatus;
use freeagent_shared::wire;
use freeagent_shared::{farm_log, subjects, token};

pub async fn cancel(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Cancelled>> {
    let id = parse_or_auth(&st, &headers, &id).await?;
    // Submitters with the submit scope, or this build's token.
    if auth::presents_api_key(&headers) {
        let key = auth::require_api_key(&st, &headers, SCOPE_SUBMIT).await?;
        // Another team's build is not this key's to cancel, nor to know of.
        if auth::team_scope(&key).is_some() {
            auth::build_for_key(&st, &key, id).await?;
        }
    } else {
        let b = auth::build_reader(&st, &headers, id).await?;
        let presented = headers
            .get("x-build-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // A dashboard session opened with the build's token stands for it (`build_reader`
        // checked that it was opened for this build).
        let by_session = presented.is_empty() && crate::auth::session::claims_build(&headers);
        if !by_session && !token::verify(presented, &b.token_hash) {
            return Err(GatewayError::forbidden(
                "this build token does not grant access to this build",
            ));
        }
    }
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
