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

/// A log archive written to storage, to be recorded on its build.
pub struct ArchiveWritten {
    pub id: BuildId,
    pub size: i64,
    pub sha256: String,
}

/// Records written archives, one statement for all (an archiver's pass records its builds
/// together: one commit, not one per build). Returns the builds recorded; a build that is gone
/// is not among them.
pub async fn logs_archive_done(
    db: impl PgExecutor<'_>,
    written: &[ArchiveWritten],
) -> Result<Vec<BuildId>, Error> {
    if written.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<BuildId> = written.iter().map(|w| w.id).collect();
    let sizes: Vec<i64> = written.iter().map(|w| w.size).collect();
    let shas: Vec<&str> = written.iter().map(|w| w.sha256.as_str()).collect();
    Ok(
        sqlx::query_scalar(crate::db::sql!("sql/logs_archive_done.sql"))
            .bind(ids)
            .bind(sizes)
            .bind(shas)
            .fetch_all(db)
            .await?,
    )
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

/// Terminal builds not yet archived (how far the archiver is behind; `freeagent-bench`).
pub async fn logs_archive_backlog(db: impl PgExecutor<'_>) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar(crate::db::sql!("sql/logs_archive_backlog.sql"))
            .fetch_one(db)
            .await?,
    )
}
