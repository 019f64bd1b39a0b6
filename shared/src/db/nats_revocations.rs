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
    sqlx::query(crate::db::sql!("sql/nats_revocations/revoke.sql"))
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
    Ok(
        sqlx::query_as(crate::db::sql!("sql/nats_revocations/live.sql"))
            .fetch_all(db)
            .await?,
    )
}
