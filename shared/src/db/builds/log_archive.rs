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
    Ok(sqlx::query_scalar(
        "UPDATE builds SET logs_archive_lease = now() + make_interval(secs => $2) \
         WHERE id IN (SELECT id FROM builds \
             WHERE logs_archived_at IS NULL AND status IN ('completed', 'failed', 'cancelled') \
               AND purged_at IS NULL AND updated_at < now() - make_interval(secs => $1) \
               AND (logs_archive_lease IS NULL OR logs_archive_lease < now()) \
             ORDER BY updated_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING id",
    )
    .bind(settle.as_secs_f64())
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Records a written archive. False when the build is gone (nothing to record).
pub async fn logs_archive_done(
    db: impl PgExecutor<'_>,
    id: BuildId,
    size: i64,
    sha256: &str,
) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE builds SET logs_archived_at = now(), logs_size = $2, logs_sha256 = $3, \
         logs_archive_lease = NULL WHERE id = $1",
    )
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
    sqlx::query(
        "UPDATE builds SET logs_archive_lease = now() + make_interval(secs => $2) \
         WHERE id = $1 AND logs_archived_at IS NULL",
    )
    .bind(id)
    .bind(retry_in.as_secs_f64())
    .execute(db)
    .await?;
    Ok(())
}

/// Terminal builds not yet archived (a gauge for operators).
pub async fn logs_archive_backlog(db: impl PgExecutor<'_>) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM builds \
         WHERE logs_archived_at IS NULL AND status IN ('completed', 'failed', 'cancelled')",
    )
    .fetch_one(db)
    .await?)
}
