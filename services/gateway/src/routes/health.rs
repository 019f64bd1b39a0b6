//! `GET /health` (and `/api/health`): the seed's shape, with measured queue and storage figures.
//! Old scripts grep `"pending":<n>`, so no key but `queue.pending` has that name.

use crate::error::Result;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use freeagent_shared::api::{Health, QueueHealth, QueueTotals, StorageHealth, StoredKind};
use freeagent_shared::db;
use freeagent_shared::status::BuildStatus;

pub async fn health(State(st): State<AppState>) -> Result<Json<Health>> {
    let counts = db::builds::build_count_by_status(&st.pool).await?;
    let count = |s: BuildStatus| {
        counts
            .iter()
            .find(|(st, _)| *st == s)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    let by_kind = db::builds::build_storage_by_kind(&st.pool).await?;
    let objects: i64 = by_kind.iter().map(|(_, n, _)| n).sum();
    let bytes: i64 = by_kind.iter().map(|(_, _, b)| b).sum();
    let kinds = by_kind
        .into_iter()
        .map(|(kind, objects, bytes)| (kind, StoredKind { objects, bytes }))
        .collect();
    let backend = match st.config.storage_backend.split_once("://") {
        Some((scheme, _)) if scheme != "file" => scheme.to_owned(),
        _ => "local".to_owned(),
    };
    let queues = db::builds::build_queue_depths(&st.pool, super::workers::OFFLINE_AFTER_SECS)
        .await?
        .into_iter()
        .map(|q| QueueHealth {
            queue: q.queue,
            depth: q.pending,
            live_workers: q.live_workers,
        })
        .collect();
    Ok(Json(Health {
        status: "ok".into(),
        queues,
        queue: QueueTotals {
            pending: count(BuildStatus::Pending),
            active: count(BuildStatus::Assigned) + count(BuildStatus::Building),
        },
        storage: StorageHealth {
            backend,
            objects,
            bytes,
            kinds,
        },
    }))
}
