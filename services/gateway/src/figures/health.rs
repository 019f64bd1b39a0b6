//! `GET /health` (and `/api/health`): the seed's shape, with measured queue and storage figures.
//! Figures come from the gateway's cache (`figures`), a few seconds old at most.
//! Old scripts grep `"pending":<n>`, so no key but `queue.pending` has that name.

use crate::error::Result;
use crate::http::route::Public;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use freeagent_shared::api::{Health, QueueHealth, QueueTotals, StorageHealth, StoredKind};
use freeagent_shared::status::BuildStatus;

pub async fn health(State(st): State<AppState>, _: Public) -> Result<Json<Health>> {
    let f = st.figures.get(&st.pool).await?;
    let count = |s: BuildStatus| f.count(s);
    let by_kind = f.storage_by_kind.clone();
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
    let queues = f
        .queues
        .iter()
        .map(|q| QueueHealth {
            queue: q.queue.clone(),
            depth: q.pending,
            live_workers: q.live_workers,
        })
        .collect();
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
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
