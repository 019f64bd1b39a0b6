//! Every query on `api_keys`. Keys are stored as SHA-256 hashes and found by hash; the secret
//! itself is never stored. A key is live while it is neither revoked nor past `expires_at`;
//! lookups return revoked and expired keys too, so the gateway can say why it refuses one.
//! Revocation is one-way: nothing here clears `revoked_at`.

use super::Error;
use crate::ids::ApiKeyId;
use crate::team::TeamName;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// A key as every query returns it: all its columns but `key_hash`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Approximate: written at most once a minute per key.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The only queues workers registered with this key may serve (none: any).
    pub worker_queues: Option<Vec<String>>,
    /// The most live workers this key may have registered at once (none: any number).
    pub max_workers: Option<i32>,
    /// The team whose builds the key sees and acts on (an admin key sees every team's).
    pub team: TeamName,
}

impl ApiKey {
    /// Past its expiry at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// Stores a key unless one with the same hash exists; returns the stored row either way. An
/// existing row is left as it is: a key revoked through the API stays revoked when the gateway
/// ensures it again at start. Two gateways starting together both insert: the one that waits
/// on the other's row gets no row back (its statement's snapshot predates the other's commit),
/// so it asks once more, in a new snapshot that holds the row.
pub async fn api_key_ensure(
    pool: &crate::db::Pool,
    id: ApiKeyId,
    name: &str,
    key_hash: &[u8],
    scopes: &[&str],
) -> Result<ApiKey, Error> {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    for _ in 0..2 {
        let stored = sqlx::query_as::<_, ApiKey>(crate::db::sql!("sql/api_keys/ensure.sql"))
            .bind(id)
            .bind(name)
            .bind(key_hash)
            .bind(&scopes)
            .fetch_optional(pool)
            .await?;
        if let Some(key) = stored {
            return Ok(key);
        }
    }
    Err(Error::from_sqlx(sqlx::Error::RowNotFound))
}

/// A new key (`POST /api/keys`).
pub struct NewApiKey<'a> {
    pub id: ApiKeyId,
    pub name: &'a str,
    pub key_hash: &'a [u8],
    pub scopes: &'a [String],
    pub expires_at: Option<DateTime<Utc>>,
    pub worker_queues: Option<&'a [String]>,
    pub max_workers: Option<i32>,
    /// Must exist (`teams::team_ensure`).
    pub team: &'a TeamName,
}

/// Stores a new key; a hash already stored is `Error::UniqueViolation`.
pub async fn api_key_insert(db: impl PgExecutor<'_>, k: &NewApiKey<'_>) -> Result<ApiKey, Error> {
    Ok(
        sqlx::query_as::<_, ApiKey>(crate::db::sql!("sql/api_keys/insert.sql"))
            .bind(k.id)
            .bind(k.name)
            .bind(k.key_hash)
            .bind(k.scopes)
            .bind(k.expires_at)
            .bind(k.worker_queues)
            .bind(k.max_workers)
            .bind(k.team)
            .fetch_one(db)
            .await?,
    )
}

/// The key with this hash, revoked or expired ones included (the caller decides).
pub async fn api_key_find(
    db: impl PgExecutor<'_>,
    key_hash: &[u8],
) -> Result<Option<ApiKey>, Error> {
    Ok(
        sqlx::query_as::<_, ApiKey>(crate::db::sql!("sql/api_keys/find.sql"))
            .bind(key_hash)
            .fetch_optional(db)
            .await?,
    )
}

/// A key's name; `None` for an unknown id.
pub async fn api_key_name(db: impl PgExecutor<'_>, id: ApiKeyId) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar(crate::db::sql!("sql/api_keys/name.sql"))
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// Every key, oldest first (revoked ones included).
pub async fn api_key_list(db: impl PgExecutor<'_>) -> Result<Vec<ApiKey>, Error> {
    Ok(
        sqlx::query_as::<_, ApiKey>(crate::db::sql!("sql/api_keys/list.sql"))
            .fetch_all(db)
            .await?,
    )
}

/// Revokes a key; revoking it again keeps the first `revoked_at`. `None` for an unknown id.
pub async fn api_key_revoke(
    db: impl PgExecutor<'_>,
    id: ApiKeyId,
) -> Result<Option<ApiKey>, Error> {
    Ok(
        sqlx::query_as::<_, ApiKey>(crate::db::sql!("sql/api_keys/revoke.sql"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Sets what workers a key registers (the registration key from the gateway's settings
/// follows them at every start). `None` for an unknown id.
pub async fn api_key_set_worker_scope(
    db: impl PgExecutor<'_>,
    id: ApiKeyId,
    worker_queues: Option<&[String]>,
    max_workers: Option<i32>,
) -> Result<Option<ApiKey>, Error> {
    Ok(
        sqlx::query_as::<_, ApiKey>(crate::db::sql!("sql/api_keys/set_worker_scope.sql"))
            .bind(id)
            .bind(worker_queues)
            .bind(max_workers)
            .fetch_optional(db)
            .await?,
    )
}

/// Records that these keys were used at `at` (one statement for a batch); never moves
/// `last_used_at` backwards. Returns the rows changed.
pub async fn api_key_touch(
    db: impl PgExecutor<'_>,
    ids: &[ApiKeyId],
    at: DateTime<Utc>,
) -> Result<u64, Error> {
    Ok(sqlx::query(crate::db::sql!("sql/api_keys/touch.sql"))
        .bind(ids)
        .bind(at)
        .execute(db)
        .await?
        .rows_affected())
}
