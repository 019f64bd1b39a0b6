//! Every query on `ui_sessions`: the dashboard's sign-in sessions (ADR-0011). A session is found
//! by the SHA-256 of its cookie secret and only while unexpired; it carries the API key it
//! speaks for (revoked and expired keys included: the gateway refuses them as it refuses the
//! key itself) or the one build it was opened for.

use super::Error;
use super::api_keys::ApiKey;
use crate::ids::{ApiKeyId, BuildId};
use crate::team::TeamName;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// What a session speaks for.
#[derive(Debug, Clone)]
pub enum SessionFor {
    Key(ApiKey),
    Build(BuildId),
}

#[derive(Debug, Clone)]
pub struct UiSession {
    pub speaks_for: SessionFor,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// A new session: exactly one of `api_key_id` and `build_id`.
pub struct NewUiSession<'a> {
    pub id_hash: &'a [u8],
    pub api_key_id: Option<ApiKeyId>,
    pub build_id: Option<BuildId>,
    pub csrf_token: &'a str,
    pub expires_at: DateTime<Utc>,
}

pub async fn ui_session_insert(db: impl PgExecutor<'_>, s: &NewUiSession<'_>) -> Result<(), Error> {
    sqlx::query(crate::db::sql!("sql/ui_sessions/insert.sql"))
        .bind(s.id_hash)
        .bind(s.api_key_id)
        .bind(s.build_id)
        .bind(s.csrf_token)
        .bind(s.expires_at)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    build_id: Option<BuildId>,
    csrf_token: String,
    expires_at: DateTime<Utc>,
    key_id: Option<ApiKeyId>,
    key_name: Option<String>,
    key_scopes: Option<Vec<String>>,
    key_created_at: Option<DateTime<Utc>>,
    key_revoked_at: Option<DateTime<Utc>>,
    key_expires_at: Option<DateTime<Utc>>,
    key_last_used_at: Option<DateTime<Utc>>,
    key_worker_queues: Option<Vec<String>>,
    key_max_workers: Option<i32>,
    key_team: Option<TeamName>,
}

/// The live (unexpired) session with this hash, with its key's row.
pub async fn ui_session_find(
    db: impl PgExecutor<'_>,
    id_hash: &[u8],
) -> Result<Option<UiSession>, Error> {
    let row = sqlx::query_as::<_, Row>(crate::db::sql!("sql/ui_sessions/find.sql"))
        .bind(id_hash)
        .fetch_optional(db)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let speaks_for = match (r.build_id, r.key_id, r.key_created_at) {
        (Some(b), _, _) => SessionFor::Build(b),
        (None, Some(id), Some(created_at)) => SessionFor::Key(ApiKey {
            id,
            name: r.key_name.unwrap_or_default(),
            scopes: r.key_scopes.unwrap_or_default(),
            created_at,
            revoked_at: r.key_revoked_at,
            expires_at: r.key_expires_at,
            last_used_at: r.key_last_used_at,
            worker_queues: r.key_worker_queues,
            max_workers: r.key_max_workers,
            team: r.key_team.unwrap_or_else(TeamName::default_team),
        }),
        // The CHECK constraint and the foreign keys make this unreachable; treat it as no session.
        _ => return Ok(None),
    };
    Ok(Some(UiSession {
        speaks_for,
        csrf_token: r.csrf_token,
        expires_at: r.expires_at,
    }))
}

/// Ends a session (sign-out); true if it existed.
pub async fn ui_session_delete(db: impl PgExecutor<'_>, id_hash: &[u8]) -> Result<bool, Error> {
    Ok(sqlx::query(crate::db::sql!("sql/ui_sessions/delete.sql"))
        .bind(id_hash)
        .execute(db)
        .await?
        .rows_affected()
        == 1)
}

/// Forgets expired sessions; returns how many.
pub async fn ui_session_delete_expired(db: impl PgExecutor<'_>) -> Result<u64, Error> {
    Ok(
        sqlx::query(crate::db::sql!("sql/ui_sessions/delete_expired.sql"))
            .execute(db)
            .await?
            .rows_affected(),
    )
}
