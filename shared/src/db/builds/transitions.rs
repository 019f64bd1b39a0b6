//! The guarded state transitions of `builds`. Each is one statement whose `WHERE` is its guard
//! (status, attempt, worker); the attempt record in `build_attempts` changes in the same
//! statement. The statements are SQL files beside this one (`sql/<transition>.sql`), each with
//! its guard and parameters explained; this module binds them and reads their outcome. When the
//! guard fails, a cheap read tells `Stale` from `NotFound`.
//!
//! A holder's guard compares `worker_id IS NOT DISTINCT FROM $n` (the same as `=` for a worker
//! id, which is never NULL) so that it cannot be used as an index condition: on a table without
//! statistics, Postgres' cached plan otherwise read the row through `builds_worker`, i.e. every
//! build that worker ever ran, instead of the primary key.
//!
//! Requeues (lost lease, abandon, a failed command that asked for retries) follow one rule, the
//! SQL function `build_requeue` (migrations/20261207000002_build_requeue.sql): back to `pending`
//! after an exponential backoff with ±20 % jitter, `min(cap, base · 2^(attempt−1))`, while
//! attempts are left, else `failed`.

use super::{Build, Current, NewObject};
use crate::db::{Error, Transition};
use crate::ids::{Attempt, BuildId, WorkerId};
use crate::status::{BuildStatus, Platform, QueueName};
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// Backoff before a requeued build is dispatched again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base_secs: f64,
    pub cap_secs: f64,
}

/// Waits until no other transaction holds the row of `id` for update (a dispatch that has
/// published but not yet committed), at most `wait`; a longer wait is a lock-timeout error.
pub async fn build_wait_for_row(
    pool: &crate::db::Pool,
    id: BuildId,
    wait: std::time::Duration,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    // SET cannot take a parameter; set_config can, and `true` scopes it to this transaction.
    sqlx::query(crate::db::sql!("sql/wait_for_row_lock_timeout.sql"))
        .bind(format!("{}ms", wait.as_millis()))
        .execute(&mut *tx)
        .await?;
    // FOR SHARE conflicts with the dispatch's row lock, so this returns once it commits.
    sqlx::query(crate::db::sql!("sql/wait_for_row.sql"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A build's status, attempt and holder (the scheduler's log gate checks a writer holds the
/// attempt it writes for; a guard that did not hold reports what it saw).
pub async fn build_current(db: impl PgExecutor<'_>, id: BuildId) -> Result<Option<Current>, Error> {
    Ok(
        sqlx::query_as::<_, Current>(crate::db::sql!("sql/current.sql"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

async fn outcome<T>(
    db: impl PgExecutor<'_>,
    id: BuildId,
    applied: Option<T>,
) -> Result<Transition<T>, Error> {
    Ok(match applied {
        Some(row) => Transition::Applied(row),
        None => match build_current(db, id).await? {
            Some(c) => Transition::Stale(c),
            None => Transition::NotFound,
        },
    })
}

/// `pending → assigned`, only for the attempt that was dispatched and a worker that serves the
/// build's queue (`queues`); opens the attempt record. A build handed back (abandon, lost lease,
/// a retried failure) keeps its attempt until its next dispatch bumps it, and `dispatched_at`
/// is cleared meanwhile: a leftover message of the old attempt finds no dispatch to claim, so
/// the attempt never runs twice and the backoff holds (`shared/tests/transition_matrix.rs`).
pub async fn build_claim(
    db: impl PgExecutor<'_> + Copy,
    id: BuildId,
    attempt: Attempt,
    worker: WorkerId,
    queues: &[String],
    lease_secs: f64,
) -> Result<Transition<Build>, Error> {
    let row = sqlx::query_as::<_, Build>(crate::db::sql!("sql/claim.sql"))
        .bind(id)
        .bind(attempt)
        .bind(worker)
        .bind(lease_secs)
        .bind(queues)
        .fetch_optional(db)
        .await?;
    outcome(db, id, row).await
}

/// One heartbeat of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub id: BuildId,
    pub attempt: Attempt,
    pub worker: WorkerId,
    pub progress: Option<i16>,
    /// The lease this beat renews, from now.
    pub lease_secs: f64,
}

/// A renewed lease. `started` is true when this heartbeat moved the build `assigned → building`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Renewed {
    pub id: BuildId,
    pub attempt: Attempt,
    pub worker_id: WorkerId,
    pub lease_expires_at: DateTime<Utc>,
    pub started: bool,
    pub queue: QueueName,
    pub platform: Platform,
}

/// Renews the leases of many holders in one statement (the first heartbeat of each build moves
/// it `assigned → building`). Beats whose guard failed are absent from the result.
pub async fn build_heartbeat_batch(
    db: impl PgExecutor<'_>,
    beats: &[Beat],
) -> Result<Vec<Renewed>, Error> {
    let ids: Vec<BuildId> = beats.iter().map(|b| b.id).collect();
    let attempts: Vec<Attempt> = beats.iter().map(|b| b.attempt).collect();
    let workers: Vec<WorkerId> = beats.iter().map(|b| b.worker).collect();
    let progress: Vec<Option<i16>> = beats.iter().map(|b| b.progress).collect();
    let leases: Vec<f64> = beats.iter().map(|b| b.lease_secs).collect();
    Ok(
        sqlx::query_as::<_, Renewed>(crate::db::sql!("sql/heartbeat_batch.sql"))
            .bind(ids)
            .bind(attempts)
            .bind(workers)
            .bind(progress)
            .bind(leases)
            .fetch_all(db)
            .await?,
    )
}

/// What a refused beat saw, for each id (absent ids do not exist).
pub async fn build_current_many(
    db: impl PgExecutor<'_>,
    ids: &[BuildId],
) -> Result<Vec<(BuildId, Current)>, Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: BuildId,
        #[sqlx(flatten)]
        current: Current,
    }
    let rows = sqlx::query_as::<_, Row>(crate::db::sql!("sql/current_many.sql"))
        .bind(ids)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.current)).collect())
}

/// `assigned | building → completed`, recording the artifact storage wrote.
pub async fn build_complete(
    db: impl PgExecutor<'_> + Copy,
    id: BuildId,
    attempt: Attempt,
    worker: WorkerId,
    result: &NewObject,
) -> Result<Transition<Build>, Error> {
    let row = sqlx::query_as::<_, Build>(crate::db::sql!("sql/complete.sql"))
        .bind(id)
        .bind(attempt)
        .bind(worker)
        .bind(&result.key)
        .bind(result.size)
        .bind(&result.sha256)
        .fetch_optional(db)
        .await?;
    outcome(db, id, row).await
}

/// `assigned | building → failed` with the worker's error — or back to `pending` after a
/// backoff when the build asked for retries of failed commands and has attempts left.
pub async fn build_fail(
    db: impl PgExecutor<'_> + Copy,
    id: BuildId,
    attempt: Attempt,
    worker: WorkerId,
    error: &str,
    backoff: Backoff,
) -> Result<Transition<Build>, Error> {
    let row = sqlx::query_as::<_, Build>(crate::db::sql!("sql/fail.sql"))
        .bind(id)
        .bind(attempt)
        .bind(worker)
        .bind(error)
        .bind(backoff.base_secs)
        .bind(backoff.cap_secs)
        .fetch_optional(db)
        .await?;
    outcome(db, id, row).await
}

/// The holder gives a build back (worker shutting down, unregistering): `pending` after a
/// backoff, or `failed` when its attempts are used up.
pub async fn build_abandon(
    db: impl PgExecutor<'_> + Copy,
    id: BuildId,
    attempt: Attempt,
    worker: WorkerId,
    reason: &str,
    backoff: Backoff,
) -> Result<Transition<Build>, Error> {
    let row = sqlx::query_as::<_, Build>(crate::db::sql!("sql/abandon.sql"))
        .bind(id)
        .bind(attempt)
        .bind(worker)
        .bind(reason)
        .bind(backoff.base_secs)
        .bind(backoff.cap_secs)
        .fetch_optional(db)
        .await?;
    outcome(db, id, row).await
}

/// Any non-terminal status → `cancelled`. The returned build names the worker to stop, if any.
pub async fn build_cancel(
    db: impl PgExecutor<'_> + Copy,
    id: BuildId,
) -> Result<Transition<Build>, Error> {
    let row = sqlx::query_as::<_, Build>(crate::db::sql!("sql/cancel.sql"))
        .bind(id)
        .fetch_optional(db)
        .await?;
    outcome(db, id, row).await
}

/// A build that a background pass moved, and where to.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Moved {
    pub id: BuildId,
    pub attempt: Attempt,
    pub status: BuildStatus,
    pub worker_id: Option<WorkerId>,
    pub queue: QueueName,
    pub platform: Platform,
}

/// Expired leases: back to `pending` (a new attempt is dispatched after the backoff), or
/// `failed` once `max_attempts` were used. Safe on many replicas (`SKIP LOCKED`).
pub async fn build_rescue_expired(
    db: impl PgExecutor<'_>,
    limit: i64,
    backoff: Backoff,
) -> Result<Vec<Moved>, Error> {
    Ok(
        sqlx::query_as::<_, Moved>(crate::db::sql!("sql/rescue_expired.sql"))
            .bind(limit)
            .bind(backoff.base_secs)
            .bind(backoff.cap_secs)
            .fetch_all(db)
            .await?,
    )
}

/// Running builds past their time limit end `failed`; the caller stops them on their workers.
pub async fn build_time_out(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Moved>, Error> {
    Ok(
        sqlx::query_as::<_, Moved>(crate::db::sql!("sql/time_out.sql"))
            .bind(limit)
            .fetch_all(db)
            .await?,
    )
}
