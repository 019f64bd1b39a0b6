//! Every query on `api_keys`. Keys are stored as SHA-256 hashes and found by hash.

use super::Error;
use crate::ids::ApiKeyId;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Stores a key unless one with the same hash exists; returns the stored row either way.
pub async fn api_key_ensure(
    db: impl PgExecutor<'_>,
    id: ApiKeyId,
    name: &str,
    key_hash: &[u8],
    scopes: &[&str],
) -> Result<ApiKey, Error> {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    Ok(sqlx::query_as::<_, ApiKey>(
        "WITH ins AS (INSERT INTO api_keys (id, name, key_hash, scopes) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key_hash) DO NOTHING RETURNING id, name, scopes, created_at, revoked_at) \
         SELECT * FROM ins UNION ALL \
         SELECT id, name, scopes, created_at, revoked_at FROM api_keys WHERE key_hash = $3 \
         LIMIT 1",
    )
    .bind(id)
    .bind(name)
    .bind(key_hash)
    .bind(scopes)
    .fetch_one(db)
    .await?)
}

/// A live (not revoked) key with this hash.
pub async fn api_key_find(
    db: impl PgExecutor<'_>,
    key_hash: &[u8],
) -> Result<Option<ApiKey>, Error> {
    Ok(sqlx::query_as::<_, ApiKey>(
        "SELECT id, name, scopes, created_at, revoked_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(db)
    .await?)
}
