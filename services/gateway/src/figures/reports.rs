//! Farm-wide read-outs: `GET /api/builds/statistics`, `GET /api/builds/active`, and the public
//! `GET /api/stats` (alias `/public/stats`). Every figure is measured from the database; the
//! counts come from the gateway's figures cache (`FREEAGENT_FIGURES_TTL` old at most).

use crate::auth::extract::{Key, Read, ReadOrWorkers};
use crate::error::Result;
use crate::http::route::Public;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use freeagent_shared::api::{ActiveBuild, ActiveBuilds, PublicStats, Statistics};
use freeagent_shared::db;
use freeagent_shared::status::BuildStatus;

pub const ACTIVE_LIMIT: i64 = 1000;

pub async fn statistics(State(st): State<AppState>, _key: Key<Read>) -> Result<Json<Statistics>> {
    let figures = st.figures.get(&st.pool).await?;
    let mut body = Statistics::default();
    for &(status, n) in &figures.counts {
        body.total += n;
        *match status {
            BuildStatus::Pending => &mut body.pending,
            BuildStatus::Assigned => &mut body.assigned,
            BuildStatus::Building => &mut body.building,
            BuildStatus::Completed => &mut body.completed,
            BuildStatus::Failed => &mut body.failed,
            BuildStatus::Cancelled => &mut body.cancelled,
        } += n;
    }
    Ok(Json(body))
}

pub async fn active(
    State(st): State<AppState>,
    key: Key<ReadOrWorkers>,
) -> Result<Json<ActiveBuilds>> {
    let mine = crate::auth::reads_only_its_workers(&key.key).then_some(key.key.id);
    // A worker machine's key sees what runs on its own workers, whatever the team; a reader
    // sees its team's builds.
    let team = match mine {
        Some(_) => None,
        None => crate::auth::team_scope(&key.key),
    };
    let builds = db::builds::build_active(&st.pool, ACTIVE_LIMIT, mine, team).await?;
    Ok(Json(ActiveBuilds {
        builds: builds
            .iter()
            .map(|b| ActiveBuild {
                id: b.id,
                status: b.status,
                platform: b.platform,
                worker_id: b.worker_id,
                started_at: b.started_at.map(|t| t.timestamp_millis()),
            })
            .collect(),
    }))
}

/// Public: no credential, no identifiers, only counts.
pub async fn public_stats(State(st): State<AppState>, _: Public) -> Result<Json<PublicStats>> {
    let f = st.figures.get(&st.pool).await?;
    let (s, online) = (&f.farm, f.workers_online);
    Ok(Json(PublicStats {
        nodes_online: online,
        builds_queued: s.builds_queued,
        active_builds: s.active_builds,
        builds_today: s.builds_today,
        total_builds: s.total_builds,
        total_build_time_ms: s.total_build_time_ms,
        total_cpu_cycles: s.total_build_time_ms as f64 / 1000.0,
    }))
}

/// The public figures may be read from any origin (counts only, no credential): the seed's
/// landing page fetches them from its own site.
pub fn public_cors() -> tower_http::cors::CorsLayer {
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([axum::http::Method::GET])
}
