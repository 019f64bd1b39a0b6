//! Claims and completions arriving together share one statement: the same guards as
//! `build_claim` and `build_complete`, applied to many rows at once with `unnest`. Rows are
//! locked with `SKIP LOCKED` first: a batch never waits for a row another transaction holds
//! (a dispatch not yet committed, another replica's batch), so batches cannot deadlock and one
//! busy row does not hold up the rest. An ask that was skipped, or whose guard did not hold, is
//! absent from the result; the caller takes the one-row path for it, which waits or says why.

use super::{Build, NewObject};
use crate::db::Error;
use crate::ids::{Attempt, BuildId, WorkerId};
use sqlx::PgExecutor;

/// One claim of a batch: `queues` are the queues the worker serves; `lease_secs` its lease.
#[derive(Debug, Clone)]
pub struct ClaimAsk {
    pub id: BuildId,
    pub attempt: Attempt,
    pub worker: WorkerId,
    pub queues: Vec<String>,
    pub lease_secs: f64,
}

/// `pending → assigned` for every ask whose guard holds (see `build_claim`).
pub async fn build_claim_batch(
    db: impl PgExecutor<'_>,
    asks: &[ClaimAsk],
) -> Result<Vec<Build>, Error> {
    let ids: Vec<BuildId> = asks.iter().map(|a| a.id).collect();
    let attempts: Vec<Attempt> = asks.iter().map(|a| a.attempt).collect();
    let workers: Vec<WorkerId> = asks.iter().map(|a| a.worker).collect();
    // Queue names are `[a-z0-9._-]`, so a comma joins them unambiguously.
    let queues: Vec<String> = asks.iter().map(|a| a.queues.join(",")).collect();
    let leases: Vec<f64> = asks.iter().map(|a| a.lease_secs).collect();
    Ok(
        sqlx::query_as::<_, Build>(crate::db::sql!("sql/claim_batch.sql"))
            .bind(ids)
            .bind(attempts)
            .bind(workers)
            .bind(queues)
            .bind(leases)
            .fetch_all(db)
            .await?,
    )
}

/// One completion of a batch.
#[derive(Debug, Clone)]
pub struct CompleteAsk {
    pub id: BuildId,
    pub attempt: Attempt,
    pub worker: WorkerId,
    pub result: NewObject,
}

/// `assigned | building → completed` for every ask whose guard holds (see `build_complete`).
/// (`sql/complete_batch.sql` says why its holder guard may use `=`.)
pub async fn build_complete_batch(
    db: impl PgExecutor<'_>,
    asks: &[CompleteAsk],
) -> Result<Vec<Build>, Error> {
    let ids: Vec<BuildId> = asks.iter().map(|a| a.id).collect();
    let attempts: Vec<Attempt> = asks.iter().map(|a| a.attempt).collect();
    let workers: Vec<WorkerId> = asks.iter().map(|a| a.worker).collect();
    let keys: Vec<&str> = asks.iter().map(|a| a.result.key.as_str()).collect();
    let sizes: Vec<i64> = asks.iter().map(|a| a.result.size).collect();
    let shas: Vec<&str> = asks.iter().map(|a| a.result.sha256.as_str()).collect();
    Ok(
        sqlx::query_as::<_, Build>(crate::db::sql!("sql/complete_batch.sql"))
            .bind(ids)
            .bind(attempts)
            .bind(workers)
            .bind(keys)
            .bind(sizes)
            .bind(shas)
            .fetch_all(db)
            .await?,
    )
}

/// Inserts many new builds in one statement (one commit for concurrent submissions). The rows
/// come back in no particular order; match them by id.
pub async fn build_insert_many(
    db: impl PgExecutor<'_>,
    builds: &[super::NewBuild],
) -> Result<Vec<Build>, Error> {
    let ids: Vec<BuildId> = builds.iter().map(|b| b.id).collect();
    let platforms: Vec<&str> = builds.iter().map(|b| b.platform.as_str()).collect();
    let queues: Vec<String> = builds.iter().map(|b| b.queue.to_string()).collect();
    let priorities: Vec<i32> = builds.iter().map(|b| b.priority).collect();
    let max_attempts: Vec<i32> = builds.iter().map(|b| b.max_attempts).collect();
    let metadata: Vec<&serde_json::Value> = builds.iter().map(|b| &b.metadata).collect();
    let source_keys: Vec<&str> = builds.iter().map(|b| b.source.key.as_str()).collect();
    let source_sizes: Vec<i64> = builds.iter().map(|b| b.source.size).collect();
    let source_shas: Vec<&str> = builds.iter().map(|b| b.source.sha256.as_str()).collect();
    let certs_keys: Vec<Option<&str>> = builds
        .iter()
        .map(|b| b.certs.as_ref().map(|c| c.key.as_str()))
        .collect();
    let certs_sizes: Vec<Option<i64>> = builds
        .iter()
        .map(|b| b.certs.as_ref().map(|c| c.size))
        .collect();
    let certs_shas: Vec<Option<&str>> = builds
        .iter()
        .map(|b| b.certs.as_ref().map(|c| c.sha256.as_str()))
        .collect();
    let token_hashes: Vec<&[u8]> = builds.iter().map(|b| b.token_hash.as_slice()).collect();
    let originals: Vec<Option<BuildId>> = builds.iter().map(|b| b.original_build_id).collect();
    let timeouts: Vec<i32> = builds.iter().map(|b| b.timeout_secs).collect();
    let retries: Vec<bool> = builds.iter().map(|b| b.retry_on_failure).collect();
    let teams: Vec<&str> = builds.iter().map(|b| b.team.as_str()).collect();
    let submitted_by: Vec<Option<crate::ids::ApiKeyId>> =
        builds.iter().map(|b| b.submitted_by).collect();
    Ok(
        sqlx::query_as::<_, Build>(crate::db::sql!("sql/insert_many.sql"))
            .bind(ids)
            .bind(platforms)
            .bind(queues)
            .bind(priorities)
            .bind(max_attempts)
            .bind(metadata)
            .bind(source_keys)
            .bind(source_sizes)
            .bind(source_shas)
            .bind(certs_keys)
            .bind(certs_sizes)
            .bind(certs_shas)
            .bind(token_hashes)
            .bind(originals)
            .bind(timeouts)
            .bind(retries)
            .bind(teams)
            .bind(submitted_by)
            .fetch_all(db)
            .await?,
    )
}
