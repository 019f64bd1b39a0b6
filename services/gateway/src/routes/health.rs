//! `GET /health` (and `/api/health`): the seed's shape, with measured queue and storage figures.

use crate::error::Result;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use freeagent_shared::db;
use freeagent_shared::status::BuildStatus;
use serde_json::{Value, json};

pub async fn health(State(st): State<AppState>) -> Result<Json<Value>> {
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
    let kinds: serde_json::Map<String, Value> = by_kind
        .into_iter()
        .map(|(kind, n, b)| (kind, json!({"objects": n, "bytes": b})))
        .collect();
    let backend = match st.config.storage_backend.split_once("://") {
        Some((scheme, _)) if scheme != "file" => scheme.to_owned(),
        _ => "local".to_owned(),
    };
    let queues: Vec<Value> =
        db::builds::build_queue_depths(&st.pool, super::workers::OFFLINE_AFTER_SECS)
            .await?
            .into_iter()
            .map(
                |q| json!({"queue": q.queue, "pending": q.pending, "live_workers": q.live_workers}),
            )
            .collect();
    Ok(Json(json!({
        "status": "ok",
        "queues": queues,
        "queue": {
            "pending": count(BuildStatus::Pending),
            "active": count(BuildStatus::Assigned) + count(BuildStatus::Building),
        },
        "storage": {"backend": backend, "objects": objects, "bytes": bytes, "kinds": kinds},
    })))
}
