//! Every query on `nats_revocations`: NATS user keys the farm no longer accepts. The scheduler
//! publishes the live set in the farm account's `revocations` (ADR-0009).

use super::Error;
use crate::ids::WorkerId;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// Revokes `public_key` (idempotent). `expires_at`: when its JWT would have expired anyway.
pub async fn revoke(
    db: impl PgExecutor<'_>,
    public_key: &str,
    worker: WorkerId,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO nats_revocations (public_key, worker_id, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (public_key) DO NOTHING",
    )
    .bind(public_key)
    .bind(worker)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Keys still worth revoking (their JWT has not expired), with when each was revoked; expired
/// entries are deleted on the way.
pub async fn live(db: impl PgExecutor<'_>) -> Result<Vec<(String, DateTime<Utc>)>, Error> {
    Ok(sqlx::query_as(
        "WITH gone AS (DELETE FROM nats_revocations WHERE expires_at < now() - interval '1 minute') \
         SELECT public_key, revoked_at FROM nats_revocations \
         WHERE expires_at IS NULL OR expires_at >= now() - interval '1 minute' ORDER BY public_key",
    )
    .fetch_all(db)
    .await?)
}
