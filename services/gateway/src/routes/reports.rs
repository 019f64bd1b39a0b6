//! Farm-wide read-outs: `GET /api/builds/statistics`, `GET /api/builds/active`, and the public
//! `GET /api/stats` (alias `/public/stats`). Every figure is measured from the database.

use super::workers::OFFLINE_AFTER_SECS;
use crate::auth::{self, SCOPE_READ};
use crate::error::Result;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use freeagent_shared::db;
use freeagent_shared::status::BuildStatus;
use serde_json::{Value, json};

pub const ACTIVE_LIMIT: i64 = 1000;

pub async fn statistics(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<Value>> {
    auth::require_api_key(&st, &headers, SCOPE_READ).await?;
    let counts = db::builds::build_count_by_status(&st.pool).await?;
    let mut body = json!({"total": counts.iter().map(|(_, n)| n).sum::<i64>()});
    for s in BuildStatus::ALL {
        body[s.as_str()] = json!(
            counts
                .iter()
                .find(|(c, _)| *c == s)
                .map(|(_, n)| *n)
                .unwrap_or(0)
        );
    }
    Ok(Json(body))
}

pub async fn active(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<Value>> {
    auth::require_api_key(&st, &headers, SCOPE_READ).await?;
    let builds = db::builds::build_active(&st.pool, ACTIVE_LIMIT).await?;
    let builds: Vec<Value> = builds
        .iter()
        .map(|b| json!({"id": b.id, "status": b.status, "platform": b.platform, "worker_id": b.worker_id, "started_at": b.started_at}))
        .collect();
    Ok(Json(json!({ "builds": builds })))
}

/// Public: no credential, no identifiers, only counts.
pub async fn public_stats(State(st): State<AppState>) -> Result<Json<Value>> {
    let s = db::builds::build_farm_stats(&st.pool).await?;
    let online = db::workers::worker_count_online(&st.pool, OFFLINE_AFTER_SECS).await?;
    Ok(Json(json!({
        "nodesOnline": online,
        "buildsQueued": s.builds_queued,
        "activeBuilds": s.active_builds,
        "buildsToday": s.builds_today,
        "totalBuilds": s.total_builds,
        "totalBuildTimeMs": s.total_build_time_ms,
    })))
}
