//! Every query on `builds`. Each state transition is one statement whose `WHERE` is its guard
//! (status, attempt, worker); when the guard fails a cheap read tells `Stale` from `NotFound`.
//! The allowed edges are `BuildStatus::can_transition_to`; `docs/state_machine.md` draws them.

use super::{Error, Transition};
use crate::ids::{Attempt, BuildId, WorkerId};
use crate::status::{BuildStatus, Platform, QueueName};
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, Transaction};

/// The columns of a [`Build`], read from `builds b LEFT JOIN workers w`.
macro_rules! build_columns {
    () => {
        "b.id, b.status, b.platform, b.queue, b.priority, b.attempt, b.max_attempts, b.metadata, \
         b.source_key, b.source_size, b.source_sha256, b.certs_key, b.certs_size, b.certs_sha256, \
         b.result_key, b.result_size, b.result_sha256, b.token_hash, b.worker_id, w.name AS worker_name, \
         b.lease_expires_at, b.dispatched_at, b.progress, b.submitted_at, b.started_at, b.completed_at, \
         b.updated_at, b.error_message, b.original_build_id"
    };
}

/// Wraps an `UPDATE … RETURNING *` or `INSERT … RETURNING *` so it yields a full [`Build`].
macro_rules! returning_build {
    ($stmt:literal) => {
        concat!(
            "WITH b AS (",
            $stmt,
            " RETURNING *) SELECT ",
            build_columns!(),
            " FROM b LEFT JOIN workers w ON w.id = b.worker_id"
        )
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Build {
    pub id: BuildId,
    pub status: BuildStatus,
    pub platform: Platform,
    pub queue: QueueName,
    pub priority: i32,
    pub attempt: Attempt,
    pub max_attempts: i32,
    pub metadata: serde_json::Value,
    pub source_key: String,
    pub source_size: i64,
    pub source_sha256: String,
    pub certs_key: Option<String>,
    pub certs_size: Option<i64>,
    pub certs_sha256: Option<String>,
    pub result_key: Option<String>,
    pub result_size: Option<i64>,
    pub result_sha256: Option<String>,
    pub token_hash: Vec<u8>,
    pub worker_id: Option<WorkerId>,
    pub worker_name: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub progress: Option<i16>,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub error_message: Option<String>,
    pub original_build_id: Option<BuildId>,
}

/// What a guard saw when it did not hold.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Current {
    pub status: BuildStatus,
    pub attempt: Attempt,
    pub worker_id: Option<WorkerId>,
}

/// A stored object of a new build.
#[derive(Debug, Clone)]
pub struct NewObject {
    pub key: String,
    pub size: i64,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct NewBuild {
    pub id: BuildId,
    pub platform: Platform,
    pub queue: QueueName,
    pub priority: i32,
    pub max_attempts: i32,
    pub metadata: serde_json::Value,
    pub source: NewObject,
    pub certs: Option<NewObject>,
    pub token_hash: Vec<u8>,
    pub original_build_id: Option<BuildId>,
}

pub async fn build_insert(db: impl PgExecutor<'_>, b: &NewBuild) -> Result<Build, Error> {
    let row = sqlx::query_as::<_, Build>(returning_build!(
        "INSERT INTO builds (id, platform, queue, priority, max_attempts, metadata, source_key, source_size, \
         source_sha256, certs_key, certs_size, certs_sha256, token_hash, original_build_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    ))
    .bind(b.id)
    .bind(b.platform)
    .bind(&b.queue)
    .bind(b.priority)
    .bind(b.max_attempts)
    .bind(&b.metadata)
    .bind(&b.source.key)
    .bind(b.source.size)
    .bind(&b.source.sha256)
    .bind(b.certs.as_ref().map(|c| &c.key))
    .bind(b.certs.as_ref().map(|c| c.size))
    .bind(b.certs.as_ref().map(|c| &c.sha256))
    .bind(&b.token_hash)
    .bind(b.original_build_id)
    .fetch_one(db)
    .await?;
    Ok(row)
}

pub async fn build_get(db: impl PgExecutor<'_>, id: BuildId) -> Result<Option<Build>, Error> {
    Ok(sqlx::query_as::<_, Build>(concat!(
        "SELECT ",
        build_columns!(),
        " FROM builds b LEFT JOIN workers w ON w.id = b.worker_id WHERE b.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Filters of `GET /api/builds`; `after` is the cursor (the last id of the previous page).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<BuildStatus>,
    pub platform: Option<Platform>,
    pub worker_id: Option<WorkerId>,
    pub after: Option<BuildId>,
    pub limit: i64,
}

/// Newest first.
pub async fn build_list(db: impl PgExecutor<'_>, f: &ListFilter) -> Result<Vec<Build>, Error> {
    Ok(sqlx::query_as::<_, Build>(concat!(
        "SELECT ",
        build_columns!(),
        " FROM builds b LEFT JOIN workers w ON w.id = b.worker_id \
         WHERE ($1::text IS NULL OR b.status = $1) AND ($2::text IS NULL OR b.platform = $2) \
         AND ($3::uuid IS NULL OR b.worker_id = $3) AND ($4::uuid IS NULL OR b.id < $4) \
         ORDER BY b.id DESC LIMIT $5"
    ))
    .bind(f.status)
    .bind(f.platform)
    .bind(f.worker_id)
    .bind(f.after)
    .bind(f.limit)
    .fetch_all(db)
    .await?)
}

/// How many builds match the filter, ignoring the cursor.
pub async fn build_count(db: impl PgExecutor<'_>, f: &ListFilter) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM builds b WHERE ($1::text IS NULL OR b.status = $1) \
         AND ($2::text IS NULL OR b.platform = $2) AND ($3::uuid IS NULL OR b.worker_id = $3)",
    )
    .bind(f.status)
    .bind(f.platform)
    .bind(f.worker_id)
    .fetch_one(db)
    .await?)
}

/// Number of builds in each status (statuses with none are absent).
pub async fn build_count_by_status(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(BuildStatus, i64)>, Error> {
    Ok(
        sqlx::query_as("SELECT status, count(*) FROM builds GROUP BY status")
            .fetch_all(db)
            .await?,
    )
}

/// Objects and bytes held for all builds, from what storage reported at write time.
pub async fn build_storage_totals(db: impl PgExecutor<'_>) -> Result<(i64, i64), Error> {
    Ok(sqlx::query_as(
        "SELECT (count(source_key) + count(certs_key) + count(result_key))::bigint, \
         COALESCE(sum(source_size), 0)::bigint + COALESCE(sum(certs_size), 0)::bigint + COALESCE(sum(result_size), 0)::bigint \
         FROM builds",
    )
    .fetch_one(db)
    .await?)
}

/// A build the dispatcher just took from the queue.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Dispatched {
    pub id: BuildId,
    pub attempt: Attempt,
    pub platform: Platform,
    pub queue: QueueName,
}

/// Takes up to `limit` due pending builds (priority, then age) that are not already waiting in
/// JetStream, or whose dispatch went unclaimed for `redispatch_after_secs`; bumps their attempt.
/// Row locks (`SKIP LOCKED`) partition the work between scheduler replicas. The caller publishes
/// each one and commits only after the publish acks.
pub async fn build_dispatch_batch(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
    redispatch_after_secs: f64,
) -> Result<Vec<Dispatched>, Error> {
    Ok(sqlx::query_as::<_, Dispatched>(
        "WITH due AS ( \
             SELECT id FROM builds \
             WHERE status = 'pending' AND run_after <= now() \
               AND (dispatched_at IS NULL OR dispatched_at < now() - make_interval(secs => $2)) \
             ORDER BY priority DESC, submitted_at \
             LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE builds b SET attempt = b.attempt + 1, dispatched_at = now(), updated_at = now() \
         FROM due WHERE b.id = due.id \
         RETURNING b.id, b.attempt, b.platform, b.queue",
    )
    .bind(limit)
    .bind(redispatch_after_secs)
    .fetch_all(&mut **tx)
    .await?)
}

async fn current(db: impl PgExecutor<'_>, id: BuildId) -> Result<Option<Current>, Error> {
    Ok(
        sqlx::query_as::<_, Current>("SELECT status, attempt, worker_id FROM builds WHERE id = $1")
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
        None => match current(db, id).await? {
            Some(c) => Transition::Stale(c),
            None => Transition::NotFound,
        },
    })
}

/// `pending → assigned`, only for the attempt that was dispatched.
pub async fn build_claim(
    db: impl PgExecutor<'_> + Copy,
    id: BuildId,
    attempt: Attempt,
    worker: WorkerId,
    lease_secs: f64,
) -> Result<Transition<Build>, Error> {
    let row = sqlx::query_as::<_, Build>(returning_build!(
        "UPDATE builds SET status = 'assigned', worker_id = $3, \
         lease_expires_at = now() + make_interval(secs => $4), dispatched_at = NULL, updated_at = now() \
         WHERE id = $1 AND status = 'pending' AND attempt = $2"
    ))
    .bind(id)
    .bind(attempt)
    .bind(worker)
    .bind(lease_secs)
    .fetch_optional(db)
    .await?;
    outcome(db, id, row).await
}

/// A renewed lease. `started` is true when this heartbeat moved the build `assigned → building`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Renewed {
    pub lease_expires_at: DateTime<Utc>,
    pub started: bool,
}

/// Renews the lease of the holder; the first one moves `assigned → building`.
pub async fn build_heartbeat(
    db: impl PgExecutor<'_> + Copy,
    id: BuildId,
    attempt: Attempt,
    worker: WorkerId,
    lease_secs: f64,
    progress: Option<i16>,
) -> Result<Transition<Renewed>, Error> {
    let row = sqlx::query_as::<_, Renewed>(
        "UPDATE builds SET status = 'building', started_at = COALESCE(started_at, now()), \
         lease_expires_at = now() + make_interval(secs => $4), progress = COALESCE($5, progress), updated_at = now() \
         WHERE id = $1 AND attempt = $2 AND worker_id = $3 AND status IN ('assigned', 'building') \
         RETURNING lease_expires_at, started_at = now() AS started",
    )
    .bind(id)
    .bind(attempt)
    .bind(worker)
    .bind(lease_secs)
    .bind(progress)
    .fetch_optional(db)
    .await?;
    outcome(db, id, row).await
}

/// `assigned | building → completed`, recording the artifact storage wrote.
pub async fn build_complete(
    db: impl PgExecutor<'_> + Copy,
    id: BuildId,
    attempt: Attempt,
    worker: WorkerId,
    result: &NewObject,
) -> Result<Transition<Build>, Error> {
    let row = sqlx::query_as::<_, Build>(returning_build!(
        "UPDATE builds SET status = 'completed', result_key = $4, result_size = $5, result_sha256 = $6, \
         started_at = COALESCE(started_at, now()), completed_at = now(), lease_expires_at = NULL, progress = 100, \
         updated_at = now() \
         WHERE id = $1 AND attempt = $2 AND worker_id = $3 AND status IN ('assigned', 'building')"
    ))
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

/// `assigned | building → failed` with the worker's error.
pub async fn build_fail(
    db: impl PgExecutor<'_> + Copy,
    id: BuildId,
    attempt: Attempt,
    worker: WorkerId,
    error: &str,
) -> Result<Transition<Build>, Error> {
    let row = sqlx::query_as::<_, Build>(returning_build!(
        "UPDATE builds SET status = 'failed', error_message = $4, completed_at = now(), lease_expires_at = NULL, \
         updated_at = now() \
         WHERE id = $1 AND attempt = $2 AND worker_id = $3 AND status IN ('assigned', 'building')"
    ))
    .bind(id)
    .bind(attempt)
    .bind(worker)
    .bind(error)
    .fetch_optional(db)
    .await?;
    outcome(db, id, row).await
}

/// A build whose lease ran out, and where the rescuer sent it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Rescued {
    pub id: BuildId,
    pub attempt: Attempt,
    pub status: BuildStatus,
}

/// Expired leases: back to `pending` (a new attempt comes with the next dispatch, after
/// `backoff_secs`), or `failed` once `max_attempts` were used. Safe on many replicas.
pub async fn build_rescue_expired(
    db: impl PgExecutor<'_>,
    limit: i64,
    backoff_secs: f64,
) -> Result<Vec<Rescued>, Error> {
    Ok(sqlx::query_as::<_, Rescued>(
        "WITH expired AS ( \
             SELECT id FROM builds WHERE status IN ('assigned', 'building') AND lease_expires_at < now() \
             ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE builds b SET \
             status = CASE WHEN b.attempt >= b.max_attempts THEN 'failed' ELSE 'pending' END, \
             error_message = CASE WHEN b.attempt >= b.max_attempts \
                 THEN 'worker lost: its lease expired on attempt ' || b.attempt || ' of ' || b.max_attempts \
                 ELSE b.error_message END, \
             completed_at = CASE WHEN b.attempt >= b.max_attempts THEN now() ELSE NULL END, \
             worker_id = CASE WHEN b.attempt >= b.max_attempts THEN b.worker_id ELSE NULL END, \
             run_after = now() + make_interval(secs => $2), \
             lease_expires_at = NULL, dispatched_at = NULL, progress = NULL, updated_at = now() \
         FROM expired WHERE b.id = expired.id \
         RETURNING b.id, b.attempt, b.status",
    )
    .bind(limit)
    .bind(backoff_secs)
    .fetch_all(db)
    .await?)
}
