//! Putting pending builds on their queue's JetStream subject: the first dispatch of an attempt
//! (`build_dispatch_batch`, on every submission's wake-up) and the re-publish of one whose
//! message JetStream no longer holds (`build_republish_due` / `build_republish`, on a tick).
//! The caller publishes what these return and commits only after JetStream acknowledged it.

use crate::db::Error;
use crate::ids::{Attempt, BuildId};
use crate::status::{Platform, QueueName};
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, Transaction};

/// A build to publish on its queue's subject.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Dispatched {
    pub id: BuildId,
    pub attempt: Attempt,
    pub platform: Platform,
    pub queue: QueueName,
}

/// What one dispatch pass did: the builds it took, and the queues whose window was already full
/// (new submissions to those can wait for a claim to free a slot).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DispatchPass {
    pub dispatched: Vec<Dispatched>,
    pub full: Vec<QueueName>,
}

#[derive(sqlx::FromRow)]
struct DispatchRow {
    id: Option<BuildId>,
    attempt: Option<Attempt>,
    platform: Option<Platform>,
    queue: QueueName,
}

/// Takes up to `limit` pending builds not yet waiting in JetStream (priority, then age) and
/// bumps their attempt. A queue gets new dispatches only while fewer than `window` of its builds
/// wait in JetStream unclaimed, so the backlog stays in Postgres where priority and cancel still
/// apply. Row locks (`SKIP LOCKED`) partition the work between replicas; the caller publishes
/// each build and commits only after the publish acks. The guard is repeated on the locking
/// `SELECT` so that Postgres re-checks it on a row another replica dispatched (and committed)
/// meanwhile.
pub async fn build_dispatch_batch(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
    window: i64,
) -> Result<DispatchPass, Error> {
    let rows = sqlx::query_as::<_, DispatchRow>(crate::db::sql!("sql/dispatch.sql"))
        .bind(limit)
        .bind(window)
        .fetch_all(&mut **tx)
        .await?;
    let mut pass = DispatchPass::default();
    for r in rows {
        match (r.id, r.attempt, r.platform) {
            (Some(id), Some(attempt), Some(platform)) => pass.dispatched.push(Dispatched {
                id,
                attempt,
                platform,
                queue: r.queue,
            }),
            _ => pass.full.push(r.queue),
        }
    }
    Ok(pass)
}

/// The queues holding a dispatch unclaimed for more than `unclaimed_secs`. Only a candidate:
/// a dispatch still waiting behind others in JetStream is slow, not lost.
pub async fn build_republish_due(
    db: impl PgExecutor<'_>,
    unclaimed_secs: f64,
) -> Result<Vec<QueueName>, Error> {
    Ok(
        sqlx::query_scalar::<_, QueueName>(crate::db::sql!("sql/republish_due.sql"))
            .bind(unclaimed_secs)
            .fetch_all(db)
            .await?,
    )
}

/// Takes up to `limit` dispatches of `queue` unclaimed for more than `unclaimed_secs` and last
/// published before `published_before` (when the oldest message JetStream still holds for the
/// queue was stored: anything published earlier has left the stream unclaimed, a lost message),
/// and marks them published now. Their attempt stays, so waiting never burns `max_attempts`;
/// a message thought lost that turns up after all claims nothing twice (the first claim wins).
pub async fn build_republish(
    tx: &mut Transaction<'_, Postgres>,
    queue: &QueueName,
    unclaimed_secs: f64,
    published_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Dispatched>, Error> {
    Ok(
        sqlx::query_as::<_, Dispatched>(crate::db::sql!("sql/republish.sql"))
            .bind(queue)
            .bind(unclaimed_secs)
            .bind(published_before)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?,
    )
}
