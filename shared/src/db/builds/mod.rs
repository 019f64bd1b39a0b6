//! Every query on `builds` (and its child table `build_attempts`): rows and reads here, the
//! guarded state transitions in `transitions`. The allowed edges are
//! `BuildStatus::can_transition_to`; `docs/state_machine.md` draws them. Each statement is a
//! SQL file in `sql/` (named after its function), which says what it does and its parameters.

use super::Error;
use crate::ids::{ApiKeyId, Attempt, BuildId, WorkerId};
use crate::status::{BuildStatus, Platform, QueueName};
use crate::team::TeamName;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

// The dashboard's figures (issue 16).
mod overview;
pub use overview::*;

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
    pub timeout_secs: i32,
    pub retry_on_failure: bool,
    /// Not dispatched before this (the backoff of a requeue).
    pub run_after: DateTime<Utc>,
    /// When retention deleted the build's objects.
    pub purged_at: Option<DateTime<Utc>>,
    /// When the whole log was archived to object storage (`ObjectKey::Logs`).
    pub logs_archived_at: Option<DateTime<Utc>>,
    pub logs_size: Option<i64>,
    pub logs_sha256: Option<String>,
    /// The team of the key that submitted it (`crate::team`).
    pub team: TeamName,
    /// The key that submitted (or retried) it; none for a retry by build token.
    pub submitted_by: Option<ApiKeyId>,
    /// That key's name, where the query reads it (`list.sql`; a build's page reads it apart).
    #[sqlx(default)]
    pub submitted_by_name: Option<String>,
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
    pub timeout_secs: i32,
    pub retry_on_failure: bool,
    pub team: TeamName,
    pub submitted_by: Option<ApiKeyId>,
}

pub async fn build_insert(db: impl PgExecutor<'_>, b: &NewBuild) -> Result<Build, Error> {
    let row = sqlx::query_as::<_, Build>(crate::db::sql!("sql/insert.sql"))
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
        .bind(b.timeout_secs)
        .bind(b.retry_on_failure)
        .bind(&b.team)
        .bind(b.submitted_by)
        .fetch_one(db)
        .await?;
    Ok(row)
}

pub async fn build_get(db: impl PgExecutor<'_>, id: BuildId) -> Result<Option<Build>, Error> {
    Ok(sqlx::query_as::<_, Build>(crate::db::sql!("sql/get.sql"))
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// The team a build belongs to (`None`: no such build).
pub async fn build_team(db: impl PgExecutor<'_>, id: BuildId) -> Result<Option<TeamName>, Error> {
    Ok(sqlx::query_scalar(crate::db::sql!("sql/team.sql"))
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
    pub queue: Option<QueueName>,
    /// Only this team's builds (a key that is not an admin's always sets its own).
    pub team: Option<TeamName>,
    /// Only the builds this key submitted (`mine`).
    pub submitted_by: Option<ApiKeyId>,
    pub after: Option<BuildId>,
    pub limit: i64,
}

/// Newest first.
pub async fn build_list(db: impl PgExecutor<'_>, f: &ListFilter) -> Result<Vec<Build>, Error> {
    Ok(sqlx::query_as::<_, Build>(crate::db::sql!("sql/list.sql"))
        .bind(f.status)
        .bind(f.platform)
        .bind(f.worker_id)
        .bind(f.after)
        .bind(f.limit)
        .bind(&f.queue)
        .bind(&f.team)
        .bind(f.submitted_by)
        .fetch_all(db)
        .await?)
}

/// How many builds match the filter, ignoring the cursor.
pub async fn build_count(db: impl PgExecutor<'_>, f: &ListFilter) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(crate::db::sql!("sql/count.sql"))
        .bind(f.status)
        .bind(f.platform)
        .bind(f.worker_id)
        .bind(&f.queue)
        .bind(&f.team)
        .bind(f.submitted_by)
        .fetch_one(db)
        .await?)
}

/// Number of builds in each status (statuses with none are absent).
pub async fn build_count_by_status(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(BuildStatus, i64)>, Error> {
    Ok(sqlx::query_as(crate::db::sql!("sql/count_by_status.sql"))
        .fetch_all(db)
        .await?)
}

/// Objects and bytes held for all builds, from what storage reported at write time.
/// Objects and bytes per kind (`source`, `certs`, `result`) that live build records account
/// for. A source shared by retries counts once; purged builds count nothing.
pub async fn build_storage_by_kind(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(String, i64, i64)>, Error> {
    Ok(sqlx::query_as(crate::db::sql!("sql/storage_by_kind.sql"))
        .fetch_all(db)
        .await?)
}

/// One attempt of a build: who ran it, when, and how it ended.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AttemptRecord {
    pub build_id: BuildId,
    pub attempt: Attempt,
    pub worker_id: WorkerId,
    pub claimed_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub error: Option<String>,
}

pub async fn build_attempts(
    db: impl PgExecutor<'_>,
    id: BuildId,
) -> Result<Vec<AttemptRecord>, Error> {
    Ok(
        sqlx::query_as::<_, AttemptRecord>(crate::db::sql!("sql/attempts.sql"))
            .bind(id)
            .fetch_all(db)
            .await?,
    )
}

/// Builds currently assigned to or running on a worker.
pub async fn build_held_by(db: impl PgExecutor<'_>, worker: WorkerId) -> Result<Vec<Build>, Error> {
    Ok(
        sqlx::query_as::<_, Build>(crate::db::sql!("sql/held_by.sql"))
            .bind(worker)
            .fetch_all(db)
            .await?,
    )
}

/// Whether `attempt` is the build's current attempt and still running: storage serves a
/// worker's source and certs capabilities only while it is.
pub async fn build_attempt_running(
    db: impl PgExecutor<'_>,
    id: BuildId,
    attempt: Attempt,
) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar::<_, bool>(crate::db::sql!("sql/attempt_running.sql"))
            .bind(id)
            .bind(attempt)
            .fetch_one(db)
            .await?,
    )
}

/// Where a pending build waits: its place in its queue's dispatch order (priority, then age),
/// and the live workers of that queue with their slots and the builds they hold.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct QueuePlace {
    pub position: i64,
    pub live_workers: i64,
    pub slots: i64,
    pub held: i64,
    /// The median run (started → completed) of the queue's builds among the farm's last 500
    /// completions; none when none of them was of this queue.
    pub typical_secs: Option<f64>,
}

/// `None` unless the build is pending. `live_within_secs`: a worker seen this recently (and not
/// draining, and approved) counts as live.
pub async fn build_queue_place(
    db: impl PgExecutor<'_>,
    id: BuildId,
    live_within_secs: f64,
) -> Result<Option<QueuePlace>, Error> {
    Ok(build_queue_places(db, &[id], live_within_secs)
        .await?
        .into_iter()
        .next()
        .map(|p| p.place))
}

/// A pending build's place, in a page of them.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct QueuePlaceOf {
    pub id: BuildId,
    #[sqlx(flatten)]
    pub place: QueuePlace,
}

/// `build_queue_place` for every pending build among `ids` at once (the others are left out):
/// one ranking per queue rather than one count per build.
pub async fn build_queue_places(
    db: impl PgExecutor<'_>,
    ids: &[BuildId],
    live_within_secs: f64,
) -> Result<Vec<QueuePlaceOf>, Error> {
    Ok(
        sqlx::query_as::<_, QueuePlaceOf>(crate::db::sql!("sql/queue_places.sql"))
            .bind(ids)
            .bind(live_within_secs)
            .fetch_all(db)
            .await?,
    )
}

/// Pending builds per queue, with how many live workers (approved, not draining) serve each queue. Queues served by a
/// worker seen in the last hour are listed even when empty, so gauges fall back to zero.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct QueueDepth {
    pub queue: QueueName,
    pub pending: i64,
    pub live_workers: i64,
}

/// `live_within_secs`: a worker seen this recently (and not draining) counts as live.
pub async fn build_queue_depths(
    db: impl PgExecutor<'_>,
    live_within_secs: f64,
) -> Result<Vec<QueueDepth>, Error> {
    Ok(
        sqlx::query_as::<_, QueueDepth>(crate::db::sql!("sql/queue_depths.sql"))
            .bind(live_within_secs)
            .fetch_all(db)
            .await?,
    )
}

/// Assigned and building builds, oldest first; with `registered_by`, only those held by workers
/// that key registered; with `team`, only that team's.
pub async fn build_active(
    db: impl PgExecutor<'_>,
    limit: i64,
    registered_by: Option<crate::ids::ApiKeyId>,
    team: Option<&TeamName>,
) -> Result<Vec<Build>, Error> {
    Ok(
        sqlx::query_as::<_, Build>(crate::db::sql!("sql/active.sql"))
            .bind(limit)
            .bind(registered_by)
            .bind(team)
            .fetch_all(db)
            .await?,
    )
}

/// Farm-wide figures for `/api/stats`, all measured from the rows.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FarmStats {
    pub builds_queued: i64,
    pub active_builds: i64,
    pub builds_today: i64,
    pub total_builds: i64,
    /// Sum of started → completed over completed builds.
    pub total_build_time_ms: i64,
}

pub async fn build_farm_stats(db: impl PgExecutor<'_>) -> Result<FarmStats, Error> {
    Ok(
        sqlx::query_as::<_, FarmStats>(crate::db::sql!("sql/farm_stats.sql"))
            .fetch_one(db)
            .await?,
    )
}

/// What one worker has done, from its attempt records.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WorkerTally {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

pub async fn build_worker_tally(
    db: impl PgExecutor<'_>,
    worker: WorkerId,
) -> Result<WorkerTally, Error> {
    Ok(
        sqlx::query_as::<_, WorkerTally>(crate::db::sql!("sql/worker_tally.sql"))
            .bind(worker)
            .fetch_one(db)
            .await?,
    )
}

mod batch;
mod dispatch;
mod log_archive;
mod retention;
mod transitions;
pub use batch::*;
pub use dispatch::*;
pub use log_archive::*;
pub use retention::*;
pub use transitions::*;

/// Inserts `n` pending builds on `queue` in one statement, with a placeholder source. For
/// benchmarks and load tests: a farm's throughput measured without the submit path in front.
pub async fn build_insert_synthetic(
    db: impl PgExecutor<'_>,
    n: i64,
    platform: Platform,
    queue: &QueueName,
) -> Result<u64, Error> {
    Ok(sqlx::query(crate::db::sql!("sql/insert_synthetic.sql"))
        .bind(n)
        .bind(platform)
        .bind(queue)
        .execute(db)
        .await?
        .rows_affected())
}

/// How many retries the build tokens of one chain of retries may make together.
pub const TOKEN_RETRIES_PER_CHAIN: i32 = 3;

/// Takes a build token's retry of `id`: each token may retry its own build once, and the tokens
/// of one chain (a build and the retries made from it, and from those) at most
/// [`TOKEN_RETRIES_PER_CHAIN`] times together, counted on the chain's root. `false`: refused;
/// the caller then rolls `tx` back, so a refusal takes nothing. Each count is one guarded
/// statement, so concurrent retries cannot both take the last one.
pub async fn build_take_token_retry(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: BuildId,
) -> Result<bool, Error> {
    let own = sqlx::query_scalar::<_, i32>(crate::db::sql!("sql/take_token_retry_own.sql"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    if own.is_none() {
        return Ok(false);
    }
    // The root: follow original_build_id up (a chain made with API keys may be long; bounded).
    let chain = sqlx::query_scalar::<_, i32>(crate::db::sql!("sql/take_token_retry_chain.sql"))
        .bind(id)
        .bind(TOKEN_RETRIES_PER_CHAIN)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(chain.is_some())
}

/// Benchmarks only: marks every pending build of `queue` completed a minute after it started,
/// so synthetic history looks like finished work.
pub async fn build_finish_synthetic(
    db: impl PgExecutor<'_>,
    queue: &QueueName,
) -> Result<u64, Error> {
    Ok(sqlx::query(crate::db::sql!("sql/finish_synthetic.sql"))
        .bind(queue)
        .execute(db)
        .await?
        .rows_affected())
}

/// Refreshes the planner's statistics of `builds` (after a bulk load, as autovacuum would later).
pub async fn build_analyze(db: impl PgExecutor<'_>) -> Result<(), Error> {
    sqlx::query(crate::db::sql!("sql/analyze.sql"))
        .execute(db)
        .await?;
    Ok(())
}
