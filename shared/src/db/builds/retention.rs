//! Retention's queries: which finished builds are old enough to lose their objects (locked so
//! that replicas split the work), recording that they did, and which build ids exist at all
//! (for the orphan sweep).

use super::super::Error;
use crate::ids::BuildId;
use sqlx::{PgConnection, PgExecutor};
use std::time::Duration;

/// Locks up to `limit` finished builds submitted more than `older_than` ago whose objects may
/// go. A build whose source a younger (or unfinished) retry still uses waits for it. (Only
/// retries can be that sharer: an original is always older than its retries and finished.) Rows locked
/// by another replica are skipped; the lock lasts until the caller's transaction ends.
pub async fn retention_lock_expired(
    tx: &mut PgConnection,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<BuildId>, Error> {
    let rows: Vec<(BuildId,)> = sqlx::query_as(crate::db::sql!("sql/retention_lock_expired.sql"))
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Records that the builds' objects are gone.
pub async fn retention_mark_purged(tx: &mut PgConnection, ids: &[BuildId]) -> Result<u64, Error> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.as_uuid()).collect();
    Ok(
        sqlx::query(crate::db::sql!("sql/retention_mark_purged.sql"))
            .bind(ids)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
    )
}

/// Which of `ids` have a build record.
pub async fn retention_existing(
    db: impl PgExecutor<'_>,
    ids: &[BuildId],
) -> Result<Vec<BuildId>, Error> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.as_uuid()).collect();
    let rows: Vec<(BuildId,)> = sqlx::query_as(crate::db::sql!("sql/retention_existing.sql"))
        .bind(ids)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Takes the orphan sweep's lock for the caller's transaction, if no other replica holds it:
/// one replica lists the store at a time (the sweep is safe concurrently, only wasteful).
pub async fn retention_try_sweep_lock(tx: &mut PgConnection) -> Result<bool, Error> {
    // An arbitrary constant naming this lock: "FA" "sweep".
    const SWEEP_LOCK: i64 = 0x0046_4173_7765_6570;
    let (got,): (bool,) = sqlx::query_as(crate::db::sql!("sql/retention_try_sweep_lock.sql"))
        .bind(SWEEP_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    Ok(got)
}

/// Test and operator helper: backdates a build so retention sees it as old.
pub async fn retention_backdate(
    db: impl PgExecutor<'_>,
    id: BuildId,
    by: Duration,
) -> Result<(), Error> {
    sqlx::query(crate::db::sql!("sql/retention_backdate.sql"))
        .bind(id)
        .bind(by.as_secs_f64())
        .execute(db)
        .await?;
    Ok(())
}
