//! `POST /api/builds/:id/retry`: a new build of any build (finished or not), with the same inputs (it shares
//! the original's stored source and certs), a new token and `original_build_id`.

use crate::auth::extract::{Access, BuildAccess, Submit};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use freeagent_shared::announce::{self, Line};
use freeagent_shared::api::Retried;
use freeagent_shared::db::{self, builds::NewBuild, builds::NewObject};
use freeagent_shared::ids::BuildId;
use freeagent_shared::wire::LogLevel;
use freeagent_shared::{farm_log, token};

/// From any status, as the contract says: a running build keeps running. Another team's build
/// is refused (404) by `BuildAccess`, so its certs never serve another team's retry.
pub async fn retry(
    State(st): State<AppState>,
    BuildAccess(original, access, _): BuildAccess<Submit>,
) -> Result<Response> {
    // A build token may retry its build once (the new build gets a token of its own, which may
    // retry once in turn), and the tokens of one chain of retries a few times together; API
    // keys are not limited. Otherwise one leaked token could queue builds, with the original's
    // certs, without end.
    let key = match access {
        Access::Key(key) => Some(key),
        Access::BuildToken => {
            let mut tx = st.pool.begin().await.map_err(db::Error::from_sqlx)?;
            if !db::builds::build_take_token_retry(&mut tx, original.id).await? {
                tx.rollback().await.map_err(db::Error::from_sqlx)?;
                return Err(GatewayError::forbidden(format!(
                    "this build token has already retried its build once, or its chain of retries has used its {} retries by build token",
                    db::builds::TOKEN_RETRIES_PER_CHAIN
                ))
                .hint("retry the new build with its own token, or use an API key"));
            }
            tx.commit().await.map_err(db::Error::from_sqlx)?;
            None
        }
    };
    let access_token = token::generate(token::TokenKind::Build);
    let new = NewBuild {
        id: BuildId::new(),
        platform: original.platform,
        queue: original.queue.clone(),
        priority: original.priority,
        max_attempts: original.max_attempts,
        metadata: original.metadata.clone(),
        source: NewObject {
            key: original.source_key.clone(),
            size: original.source_size,
            sha256: original.source_sha256.clone(),
        },
        certs: match (
            &original.certs_key,
            original.certs_size,
            &original.certs_sha256,
        ) {
            (Some(key), Some(size), Some(sha256)) => Some(NewObject {
                key: key.clone(),
                size,
                sha256: sha256.clone(),
            }),
            _ => None,
        },
        token_hash: token::hash(&access_token),
        original_build_id: Some(original.id),
        timeout_secs: original.timeout_secs,
        retry_on_failure: original.retry_on_failure,
        // The original's team, whoever retries it (only an admin key reaches another team's).
        team: original.team.clone(),
        submitted_by: key.as_ref().map(|k| k.id),
    };
    let b = db::builds::build_insert(&st.pool, &new).await?;
    announce::submitted(
        &st.nats,
        &b,
        Line::sent(LogLevel::Info, farm_log::submitted_retry(original.id)),
    )
    .await;
    tracing::info!(build_id = %b.id, original = %original.id, "build retried");
    let body = Retried {
        id: b.id,
        status: b.status,
        submitted_at: b.submitted_at,
        access_token,
        original_build_id: original.id,
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}
