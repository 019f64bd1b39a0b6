//! The log archive's queue: terminal builds whose log is not yet in object storage. A gateway
//! leases a batch (`FOR UPDATE SKIP LOCKED`, so replicas take different builds; a crashed
//! archiver's lease runs out and another takes the build), writes each archive, then records it.

use crate::db::Error;
use crate::ids::BuildId;
use sqlx::PgExecutor;
use std::time::Duration;

/// Leases up to `limit` terminal builds that ended more than `settle` ago (late lines and the
/// farm's closing line are in the stream by then) and have no archive, for `lease`.
pub async fn logs_archive_lease(
    db: impl PgExecutor<'_>,
    settle: Duration,
    lease: Duration,
    limit: i64,
) -> Result<Vec<BuildId>, Error> {
    Ok(
        sqlx::query_scalar(crate::db::sql!("sql/logs_archive_lease.sql"))
            .bind(settle.as_secs_f64())
            .bind(lease.as_secs_f64())
            .bind(limit)
            .fetch_all(db)
            .await?,
    )
}

/// Records a written archive. False when the build is gone (nothing to record).
pub async fn logs_archive_done(
    db: impl PgExecutor<'_>,
    id: BuildId,
    size: i64,
    sha256: &str,
) -> Result<bool, Error> {
    let done = sqlx::query(crate::db::sql!("sql/logs_archive_done.sql"))
        .bind(id)
        .bind(size)
        .bind(sha256)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A failed archive is tried again after `retry_in` rather than at the end of its lease (NATS or
/// storage away for a moment must not hold a build's archive for the whole lease).
pub async fn logs_archive_retry_in(
    db: impl PgExecutor<'_>,
    id: BuildId,
    retry_in: Duration,
) -> Result<(), Error> {
    sqlx::query(crate::db::sql!("sql/logs_archive_retry_in.sql"))
        .bind(id)
        .bind(retry_in.as_secs_f64())
        .execute(db)
        .await?;
    Ok(())
}

/// Terminal builds not yet archived (a gauge for operators).
pub async fn logs_archive_backlog(db: impl PgExecutor<'_>) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar(crate::db::sql!("sql/logs_archive_backlog.sql"))
            .fetch_one(db)
            .await?,
    )
}
