//! The worker registry as operators see it: the list with each worker's status, draining and
//! approving a worker, and one worker's figures.

use crate::auth::extract::PathId;
use crate::auth::extract::{Admin, Key, Read, ReadOrWorkers};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use chrono::Utc;
use freeagent_shared::api::{Approved, Drained, WorkerList, WorkerStats, WorkerView};
use freeagent_shared::db::{self};
use freeagent_shared::events::{self, FarmEvent, WorkerChange};
use freeagent_shared::ids::WorkerId;
use freeagent_shared::status::WorkerStatus;

/// `GET /api/workers`: the registry, with each worker's status as of now and its builds.
pub async fn list(State(st): State<AppState>, _key: Key<Read>) -> Result<Json<WorkerList>> {
    let workers =
        db::workers::worker_list(&st.pool, st.config.worker_offline_after.as_secs_f64()).await?;
    Ok(Json(WorkerList {
        workers: workers
            .into_iter()
            .map(|w| WorkerView {
                id: w.id,
                name: w.name,
                status: w.status,
                capabilities: w.capabilities,
                last_seen_at: w.last_seen_at,
                registered_at: w.registered_at,
                builds: w.builds,
                queues: db::workers::effective_queue_names(&w.queues, &w.platforms),
                platforms: w.platforms,
                builds_total: w.builds_total,
                builds_completed: w.builds_completed,
                approved: w.approved,
            })
            .collect(),
    }))
}

/// `POST /api/workers/:id/drain`: the worker gets no new build; its running builds finish.
pub async fn drain(
    State(st): State<AppState>,
    _key: Key<Admin>,
    PathId(id): PathId<WorkerId>,
) -> Result<Json<Drained>> {
    let w = db::workers::worker_drain(&st.pool, id)
        .await?
        .ok_or_else(|| GatewayError::not_found("worker"))?;
    tracing::info!(worker_id = %id, "worker draining");
    let event = FarmEvent::worker(
        id,
        WorkerChange::Draining,
        WorkerStatus::Draining,
        Some(w.name.clone()),
    );
    events::publish(&st.nats, &event).await;
    Ok(Json(Drained {
        id: w.id,
        status: WorkerStatus::Draining,
    }))
}

/// `POST /api/workers/:id/undrain`: a draining worker takes new builds again. 409 when it is
/// not draining (or its registration ended).
pub async fn undrain(
    State(st): State<AppState>,
    _key: Key<Admin>,
    PathId(id): PathId<WorkerId>,
) -> Result<Json<Drained>> {
    let Some(w) = db::workers::worker_undrain(&st.pool, id).await? else {
        let w = db::workers::worker_get(&st.pool, id)
            .await?
            .ok_or_else(|| GatewayError::not_found("worker"))?;
        return Err(GatewayError::new(
            freeagent_shared::api_error::ErrorCode::Conflict,
            "this worker is not draining",
        )
        .hint(format!("the worker is {}", w.status)));
    };
    tracing::info!(worker_id = %id, "worker takes builds again");
    let event = FarmEvent::worker(
        id,
        WorkerChange::into_status(w.status),
        w.status,
        Some(w.name.clone()),
    );
    events::publish(&st.nats, &event).await;
    Ok(Json(Drained {
        id: w.id,
        status: w.status,
    }))
}

/// `POST /api/workers/:id/approve`: a worker awaiting approval takes builds from its next
/// presence report (or poll) on. Approving an approved worker changes nothing; 409 for a worker
/// whose registration ended.
pub async fn approve(
    State(st): State<AppState>,
    _key: Key<Admin>,
    PathId(id): PathId<WorkerId>,
) -> Result<Json<Approved>> {
    let Some(w) = db::workers::worker_approve(&st.pool, id).await? else {
        db::workers::worker_get(&st.pool, id)
            .await?
            .ok_or_else(|| GatewayError::not_found("worker"))?;
        return Err(GatewayError::new(
            freeagent_shared::api_error::ErrorCode::Conflict,
            "this worker's registration has ended",
        )
        .hint("the worker registers again, then approve it"));
    };
    let approved_at = w.approved_at.unwrap_or_else(Utc::now);
    tracing::info!(worker_id = %id, "worker approved");
    Ok(Json(Approved { id, approved_at }))
}

/// `GET /api/workers/:id/stats`, in the seed's shape (camelCase), from the attempt records.
pub async fn stats(
    State(st): State<AppState>,
    key: Key<ReadOrWorkers>,
    PathId(id): PathId<WorkerId>,
) -> Result<Json<WorkerStats>> {
    let w = db::workers::worker_get(&st.pool, id).await?;
    // A worker machine's key sees the workers it registered, no other (unknown ids alike, so
    // none is probed).
    if crate::auth::reads_only_its_workers(&key.key)
        && w.as_ref().and_then(|w| w.registered_by) != Some(key.key.id)
    {
        return Err(
            GatewayError::forbidden("this API key did not register that worker")
                .hint("use a key with the read scope"),
        );
    }
    let w = w.ok_or_else(|| GatewayError::not_found("worker"))?;
    let t = db::builds::build_worker_tally(&st.pool, id).await?;
    let offline = w.status != WorkerStatus::Offline
        && (chrono::Utc::now() - w.last_seen_at).num_seconds() as f64
            > st.config.worker_offline_after.as_secs_f64();
    Ok(Json(WorkerStats {
        total_builds: t.total,
        successful_builds: t.completed,
        failed_builds: t.failed,
        worker_name: w.name,
        status: if offline {
            WorkerStatus::Offline
        } else {
            w.status
        },
        uptime: freeagent_shared::api::seed_uptime(
            (chrono::Utc::now() - w.registered_at).num_seconds(),
        ),
    }))
}
