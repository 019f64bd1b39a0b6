//! Every query on `workers`: registration, credentials, presence, drain and the registry view.
//! A worker's status (`status::WorkerStatus`) is `idle` or `building` from its presence reports,
//! `draining` once an operator asked, and `offline` when it has not been seen for a while
//! (computed on read).

use super::Error;
use crate::ids::{ApiKeyId, WorkerId};
use crate::status::WorkerStatus;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Worker {
    pub id: WorkerId,
    pub name: String,
    pub platforms: Vec<String>,
    pub capabilities: serde_json::Value,
    pub status: WorkerStatus,
    pub token_hash: Vec<u8>,
    pub token_expires_at: DateTime<Utc>,
    pub registered_by: Option<ApiKeyId>,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub queues: Vec<String>,
    pub max_concurrent: i32,
    /// The token before the last rotation, valid until `prev_token_expires_at`.
    pub prev_token_hash: Option<Vec<u8>>,
    pub prev_token_expires_at: Option<DateTime<Utc>>,
    /// The worker's own NATS user key (it keeps the seed) and its JWT's expiry.
    pub nats_public_key: Option<String>,
    pub nats_jwt_expires_at: Option<DateTime<Utc>>,
    /// Unregistered or revoked: refused everywhere until it registers again.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Builds it holds now (kept by a trigger; never above `max_concurrent`).
    pub held: i32,
    /// It polls over HTTP (registered without a NATS key): its builds get the HTTP lease.
    pub polls_over_http: bool,
    /// When an operator let it take builds; `None` while it awaits approval
    /// (`FREEAGENT_WORKER_APPROVAL=required`).
    pub approved_at: Option<DateTime<Utc>>,
    /// Its current NATS credentials may pull from its queues (minted once it was approved).
    pub nats_jwt_pulls: bool,
}

impl Worker {
    /// The queues its NATS credentials may pull from: none while it awaits approval, so an
    /// unapproved worker cannot even take a dispatch off a queue.
    pub fn nats_queues(&self) -> Vec<crate::status::QueueName> {
        if self.approved_at.is_some() {
            self.effective_queues()
        } else {
            Vec::new()
        }
    }

    /// Whether it may take builds: not draining and not awaiting approval.
    pub fn takes_builds(&self) -> bool {
        self.status != WorkerStatus::Draining && self.approved_at.is_some()
    }

    /// Whether `presented` is this worker's live token: the current one before its expiry, or the
    /// previous one within its grace period. Constant-time.
    pub fn token_ok(&self, presented: &str, now: DateTime<Utc>) -> bool {
        let current =
            crate::token::verify(presented, &self.token_hash) && self.token_expires_at > now;
        let previous = match (&self.prev_token_hash, self.prev_token_expires_at) {
            (Some(h), Some(exp)) => crate::token::verify(presented, h) && exp > now,
            _ => false,
        };
        current | previous
    }

    /// The queues this worker takes builds from: its declared queues, or else its platforms
    /// (a platform's default queue is named after it). The one definition of it.
    pub fn effective_queue_names(&self) -> Vec<String> {
        effective_queue_names(&self.queues, &self.platforms)
    }

    /// The same, parsed (rows are written by us; a name that does not parse is skipped).
    pub fn effective_queues(&self) -> Vec<crate::status::QueueName> {
        self.effective_queue_names()
            .iter()
            .filter_map(|q| crate::status::QueueName::parse(q).ok())
            .collect()
    }
}

/// A worker's declared queues, or else its platforms: the one rule for which queues it serves.
pub fn effective_queue_names(queues: &[String], platforms: &[String]) -> Vec<String> {
    if queues.is_empty() {
        platforms.to_vec()
    } else {
        queues.to_vec()
    }
}

#[derive(Debug, Clone)]
pub struct NewWorker {
    pub id: WorkerId,
    pub name: String,
    pub platforms: Vec<String>,
    pub capabilities: serde_json::Value,
    pub token_hash: Vec<u8>,
    pub token_expires_at: DateTime<Utc>,
    pub registered_by: Option<ApiKeyId>,
    pub queues: Vec<String>,
    pub max_concurrent: i32,
    pub nats_public_key: Option<String>,
    pub nats_jwt_expires_at: Option<DateTime<Utc>>,
    pub polls_over_http: bool,
    /// Approved at registration (the farm does not require approval); else it waits for one.
    pub approved: bool,
}

/// Inserts a new worker; `Error::UniqueViolation` when the id is taken.
pub async fn worker_insert(db: impl PgExecutor<'_>, w: &NewWorker) -> Result<Worker, Error> {
    Ok(
        sqlx::query_as::<_, Worker>(crate::db::sql!("sql/workers/insert.sql"))
            .bind(w.id)
            .bind(&w.name)
            .bind(&w.platforms)
            .bind(&w.capabilities)
            .bind(&w.token_hash)
            .bind(w.token_expires_at)
            .bind(w.registered_by)
            .bind(&w.queues)
            .bind(w.max_concurrent)
            .bind(&w.nats_public_key)
            .bind(w.nats_jwt_expires_at)
            .bind(w.polls_over_http)
            .bind(w.approved)
            .fetch_one(db)
            .await?,
    )
}

/// What [`worker_insert_within`] did.
#[derive(Debug)]
pub enum Registration {
    Inserted(Box<Worker>),
    /// The registering key already has this many live workers, its maximum.
    Full(i64),
}

/// Inserts a new worker registered by `w.registered_by`, unless that key already has `max`
/// live workers (not revoked, seen within `offline_after_secs`). The key's row is locked for
/// the count and the insert, so registrations racing on one key never pass its maximum.
pub async fn worker_insert_within(
    pool: &sqlx::PgPool,
    w: &NewWorker,
    max: Option<i32>,
    offline_after_secs: f64,
) -> Result<Registration, Error> {
    let (Some(max), Some(key)) = (max, w.registered_by) else {
        return Ok(Registration::Inserted(Box::new(
            worker_insert(pool, w).await?,
        )));
    };
    let mut tx = pool.begin().await?;
    sqlx::query(crate::db::sql!("sql/workers/insert_within_lock_key.sql"))
        .bind(key)
        .execute(&mut *tx)
        .await?;
    let live: i64 = sqlx::query_scalar(crate::db::sql!("sql/workers/insert_within_count_live.sql"))
        .bind(key)
        .bind(offline_after_secs)
        .fetch_one(&mut *tx)
        .await?;
    if live >= i64::from(max) {
        return Ok(Registration::Full(live));
    }
    let inserted = worker_insert(&mut *tx, w).await?;
    tx.commit().await?;
    Ok(Registration::Inserted(Box::new(inserted)))
}

/// Re-registration of an existing worker: new name, capabilities, token and NATS key (the caller
/// revokes the previous key); a revoked worker is reinstated. Approval: with `w.approved` (the
/// farm requires none) it is approved if it was not; else it keeps its approval, unless its
/// registration had ended (revoked or unregistered), which must be approved again.
pub async fn worker_reregister(
    db: impl PgExecutor<'_>,
    w: &NewWorker,
) -> Result<Option<Worker>, Error> {
    Ok(
        sqlx::query_as::<_, Worker>(crate::db::sql!("sql/workers/reregister.sql"))
            .bind(w.id)
            .bind(&w.name)
            .bind(&w.platforms)
            .bind(&w.capabilities)
            .bind(&w.token_hash)
            .bind(w.token_expires_at)
            .bind(&w.queues)
            .bind(w.max_concurrent)
            .bind(&w.nats_public_key)
            .bind(w.nats_jwt_expires_at)
            .bind(w.polls_over_http)
            .bind(w.approved)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn worker_get(db: impl PgExecutor<'_>, id: WorkerId) -> Result<Option<Worker>, Error> {
    Ok(
        sqlx::query_as::<_, Worker>(crate::db::sql!("sql/workers/get.sql"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Workers by id, for checking a batch of credentials at once.
pub async fn worker_get_many(
    db: impl PgExecutor<'_>,
    ids: &[WorkerId],
) -> Result<Vec<Worker>, Error> {
    Ok(
        sqlx::query_as::<_, Worker>(crate::db::sql!("sql/workers/get_many.sql"))
            .bind(ids)
            .fetch_all(db)
            .await?,
    )
}

/// Presence reports of many workers in one statement (the worker is alive and runs `running` builds; its status stays `draining` once an operator asked): returns the
/// status of each worker that exists.
pub async fn workers_presence_batch(
    db: impl PgExecutor<'_>,
    ids: &[WorkerId],
    running: &[i32],
) -> Result<Vec<(WorkerId, WorkerStatus)>, Error> {
    Ok(
        sqlx::query_as(crate::db::sql!("sql/workers/presence_batch.sql"))
            .bind(ids)
            .bind(running)
            .fetch_all(db)
            .await?,
    )
}

/// Workers silent for longer than `silent_secs` become `offline` (stored, so that the change is
/// seen once and published as an event); returns each one's id and name. A draining worker
/// keeps `draining` (the operator's word outlives a silence; lists still show it offline).
pub async fn workers_mark_offline(
    db: impl PgExecutor<'_>,
    silent_secs: f64,
) -> Result<Vec<(WorkerId, String)>, Error> {
    Ok(
        sqlx::query_as(crate::db::sql!("sql/workers/mark_offline.sql"))
            .bind(silent_secs)
            .fetch_all(db)
            .await?,
    )
}

/// Marks workers seen (their heartbeats prove it).
pub async fn workers_touch(db: impl PgExecutor<'_>, ids: &[WorkerId]) -> Result<(), Error> {
    sqlx::query(crate::db::sql!("sql/workers/touch.sql"))
        .bind(ids)
        .execute(db)
        .await?;
    Ok(())
}

/// The worker takes no new build; the ones it runs finish.
pub async fn worker_drain(db: impl PgExecutor<'_>, id: WorkerId) -> Result<Option<Worker>, Error> {
    Ok(
        sqlx::query_as::<_, Worker>(crate::db::sql!("sql/workers/drain.sql"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// A draining worker takes builds again (`POST /api/workers/:id/undrain`). Guarded: only a
/// draining, registered worker changes, to `idle` (its next presence report says whether it is
/// building); `None` when the guard did not hold (the caller reads the row to say why).
pub async fn worker_undrain(
    db: impl PgExecutor<'_>,
    id: WorkerId,
) -> Result<Option<Worker>, Error> {
    Ok(
        sqlx::query_as::<_, Worker>(crate::db::sql!("sql/workers/undrain.sql"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// An operator lets a worker awaiting approval take builds (`POST /api/workers/:id/approve`).
/// Guarded: only a registered worker changes; approving twice keeps the first approval. `None`
/// when the guard did not hold (the caller reads the row to say why).
pub async fn worker_approve(
    db: impl PgExecutor<'_>,
    id: WorkerId,
) -> Result<Option<Worker>, Error> {
    Ok(
        sqlx::query_as::<_, Worker>(crate::db::sql!("sql/workers/approve.sql"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// The worker's registration ends (it unregistered, or an operator revoked it): it is refused
/// everywhere and offline until it registers again. Returns the row as it was revoked.
pub async fn worker_revoke(db: impl PgExecutor<'_>, id: WorkerId) -> Result<Option<Worker>, Error> {
    Ok(
        sqlx::query_as::<_, Worker>(crate::db::sql!("sql/workers/revoke.sql"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// The workers, not revoked, whose NATS key is among `keys`.
pub async fn workers_by_nats_key(
    db: impl PgExecutor<'_>,
    keys: &[String],
) -> Result<Vec<Worker>, Error> {
    Ok(
        sqlx::query_as::<_, Worker>(crate::db::sql!("sql/workers/by_nats_key.sql"))
            .bind(keys)
            .fetch_all(db)
            .await?,
    )
}

/// NATS credentials were issued: remember their expiry and whether they may pull (guarded on
/// the key they were issued for).
pub async fn worker_nats_renewed(
    db: impl PgExecutor<'_>,
    id: WorkerId,
    public_key: &str,
    expires_at: DateTime<Utc>,
    pulls: bool,
) -> Result<bool, Error> {
    Ok(sqlx::query(crate::db::sql!("sql/workers/nats_renewed.sql"))
        .bind(id)
        .bind(public_key)
        .bind(expires_at)
        .bind(pulls)
        .execute(db)
        .await?
        .rows_affected()
        == 1)
}

/// A worker as the registry shows it, with its status as of now and the builds it holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerView {
    pub id: WorkerId,
    pub name: String,
    pub status: WorkerStatus,
    pub capabilities: serde_json::Value,
    pub last_seen_at: DateTime<Utc>,
    pub registered_at: DateTime<Utc>,
    pub builds: Vec<uuid::Uuid>,
    pub platforms: Vec<String>,
    /// As registered: see [`effective_queue_names`].
    pub queues: Vec<String>,
    /// Attempts it ran that ended, and those of them that completed.
    pub builds_total: i64,
    pub builds_completed: i64,
    pub approved: bool,
}

/// Every worker; one not seen for `offline_after_secs` shows as `offline`.
pub async fn worker_list(
    db: impl PgExecutor<'_>,
    offline_after_secs: f64,
) -> Result<Vec<WorkerView>, Error> {
    Ok(
        sqlx::query_as::<_, WorkerView>(crate::db::sql!("sql/workers/list.sql"))
            .bind(offline_after_secs)
            .fetch_all(db)
            .await?,
    )
}

/// Workers seen within `within_secs` that are not offline.
pub async fn worker_count_online(db: impl PgExecutor<'_>, within_secs: f64) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar(crate::db::sql!("sql/workers/count_online.sql"))
            .bind(within_secs)
            .fetch_one(db)
            .await?,
    )
}

/// The worker a token belongs to: its current token, or its previous one still in grace (tokens
/// are unique: 256 random bits). The caller checks expiry with [`Worker::token_ok`].
pub async fn worker_find_by_token(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Worker>, Error> {
    Ok(
        sqlx::query_as::<_, Worker>(crate::db::sql!("sql/workers/find_by_token.sql"))
            .bind(token_hash)
            .fetch_optional(db)
            .await?,
    )
}

/// Mints a new token for a worker whose current token (`presented_hash`) expires before
/// `renew_before`: the old one becomes the previous token for `grace_secs`. Guarded on the
/// presented token, so concurrent requests rotate once. Returns the new expiry when it rotated.
pub async fn worker_rotate_token(
    db: impl PgExecutor<'_>,
    id: WorkerId,
    presented_hash: &[u8],
    new_hash: &[u8],
    new_expires_at: DateTime<Utc>,
    renew_before: DateTime<Utc>,
    grace_secs: f64,
) -> Result<Option<DateTime<Utc>>, Error> {
    Ok(
        sqlx::query_scalar(crate::db::sql!("sql/workers/rotate_token.sql"))
            .bind(id)
            .bind(presented_hash)
            .bind(new_hash)
            .bind(new_expires_at)
            .bind(renew_before)
            .bind(grace_secs)
            .fetch_optional(db)
            .await?,
    )
}
/// Lifetime and grace of worker tokens.
#[derive(Debug, Clone, Copy)]
pub struct TokenPolicy {
    pub ttl: std::time::Duration,
    pub grace: std::time::Duration,
}

/// Gives the worker a new token when the one it presented is its current token and has a third
/// of its lifetime or less left; `None` when it keeps the one it has.
pub async fn worker_token_refresh(
    db: impl PgExecutor<'_>,
    w: &Worker,
    presented: &str,
    policy: TokenPolicy,
) -> Result<Option<(String, DateTime<Utc>)>, Error> {
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(policy.ttl).unwrap_or(chrono::Duration::seconds(90));
    let renew_before = now + ttl / 3;
    if w.token_expires_at >= renew_before || !crate::token::verify(presented, &w.token_hash) {
        return Ok(None);
    }
    let fresh = crate::token::generate(crate::token::TokenKind::Worker);
    let exp = now + ttl;
    let rotated = worker_rotate_token(
        db,
        w.id,
        &w.token_hash,
        &crate::token::hash(&fresh),
        exp,
        renew_before,
        policy.grace.as_secs_f64(),
    )
    .await?;
    Ok(rotated.map(|exp| (fresh, exp)))
}
