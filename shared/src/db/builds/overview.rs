//! The dashboard overview's figures (issue 16), measured from the `builds` rows: finished builds
//! per time bucket with their outcomes and duration percentiles, over a recent window. Nothing
//! is sampled or kept elsewhere; the charts draw exactly these rows.

use super::super::Error;
use crate::team::TeamName;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// Builds that finished in one bucket of a window. Durations are started → completed of the
/// builds that completed (a failed or cancelled build's time says little about build length).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FinishedBucket {
    /// The bucket's start.
    pub at: DateTime<Utc>,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Finished builds of the last `window_secs`, in buckets of `bucket_secs` (aligned on the epoch),
/// oldest first; buckets with no finished build are absent.
pub async fn build_finished_buckets(
    db: impl PgExecutor<'_>,
    window_secs: i64,
    bucket_secs: i64,
    team: Option<&TeamName>,
) -> Result<Vec<FinishedBucket>, Error> {
    Ok(
        sqlx::query_as::<_, FinishedBucket>(crate::db::sql!("sql/finished_buckets.sql"))
            .bind(window_secs)
            .bind(bucket_secs)
            .bind(team)
            .fetch_all(db)
            .await?,
    )
}

/// The same figures over the whole window (one row; `at` is the window's start).
pub async fn build_finished_total(
    db: impl PgExecutor<'_>,
    window_secs: i64,
    team: Option<&TeamName>,
) -> Result<FinishedBucket, Error> {
    Ok(
        sqlx::query_as::<_, FinishedBucket>(crate::db::sql!("sql/finished_total.sql"))
            .bind(window_secs)
            .bind(team)
            .fetch_one(db)
            .await?,
    )
}

/// How many of a team's builds are assigned or building (the farm-wide count is in the figures).
pub async fn build_active_count(db: impl PgExecutor<'_>, team: &TeamName) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(crate::db::sql!("sql/active_count.sql"))
        .bind(team)
        .fetch_one(db)
        .await?)
}
