//! Every query on `workers`: registration, re-registration and credential lookup.

use super::Error;
use crate::ids::{ApiKeyId, WorkerId};
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Worker {
    pub id: WorkerId,
    pub name: String,
    pub platforms: Vec<String>,
    pub capabilities: serde_json::Value,
    pub status: String,
    pub token_hash: Vec<u8>,
    pub token_expires_at: DateTime<Utc>,
    pub registered_by: Option<ApiKeyId>,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewWorker {
    pub id: WorkerId,
    pub name: String,
    pub platforms: Vec<String>,
    pub capabilities: serde_json::Value,
    pub token_hash: Vec<u8>,
    pub token_expires_at: DateTime<Utc>,
    pub registered_by: Option<ApiKeyId>,
}

/// Inserts a new worker; `Error::UniqueViolation` when the id is taken.
pub async fn worker_insert(db: impl PgExecutor<'_>, w: &NewWorker) -> Result<Worker, Error> {
    Ok(sqlx::query_as::<_, Worker>(
        "INSERT INTO workers (id, name, platforms, capabilities, token_hash, token_expires_at, registered_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
    )
    .bind(w.id)
    .bind(&w.name)
    .bind(&w.platforms)
    .bind(&w.capabilities)
    .bind(&w.token_hash)
    .bind(w.token_expires_at)
    .bind(w.registered_by)
    .fetch_one(db)
    .await?)
}

/// Re-registration of an existing worker: new name, capabilities and token.
pub async fn worker_reregister(
    db: impl PgExecutor<'_>,
    w: &NewWorker,
) -> Result<Option<Worker>, Error> {
    Ok(sqlx::query_as::<_, Worker>(
        "UPDATE workers SET name = $2, platforms = $3, capabilities = $4, token_hash = $5, token_expires_at = $6, \
         status = 'idle', last_seen_at = now() WHERE id = $1 RETURNING *",
    )
    .bind(w.id)
    .bind(&w.name)
    .bind(&w.platforms)
    .bind(&w.capabilities)
    .bind(&w.token_hash)
    .bind(w.token_expires_at)
    .fetch_optional(db)
    .await?)
}

pub async fn worker_get(db: impl PgExecutor<'_>, id: WorkerId) -> Result<Option<Worker>, Error> {
    Ok(
        sqlx::query_as::<_, Worker>("SELECT * FROM workers WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}
