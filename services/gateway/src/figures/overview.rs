//! `GET /api/overview`: the figures the dashboard's overview charts, in one reply: queue depths
//! (from the gateway's figures cache, as `/health`), and finished builds per bucket over the
//! last hour (one-minute buckets) and day (half-hour buckets), with success rate and duration
//! percentiles, all measured by SQL (`db::builds::build_finished_*`).

use crate::auth::extract::{Key, Read};
use crate::error::Result;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use freeagent_shared::api::{FinishedFigures, Overview, QueueDepthView, Window};
use freeagent_shared::db::{self, builds::FinishedBucket};
use freeagent_shared::status::BuildStatus;
use freeagent_shared::team::TeamName;

/// The last hour, a bar a minute.
pub const HOUR: (i64, i64) = (3600, 60);
/// The last day, a bar per half hour.
pub const DAY: (i64, i64) = (86_400, 1800);

fn figures(b: FinishedBucket) -> FinishedFigures {
    let decided = b.completed + b.failed;
    FinishedFigures {
        at: b.at,
        completed: b.completed,
        failed: b.failed,
        cancelled: b.cancelled,
        success_rate: (decided > 0).then(|| b.completed as f64 / decided as f64),
        p50_ms: b.p50_ms,
        p90_ms: b.p90_ms,
        p99_ms: b.p99_ms,
    }
}

async fn window(
    st: &AppState,
    (window_secs, bucket_secs): (i64, i64),
    team: Option<&TeamName>,
) -> Result<Window> {
    let total = db::builds::build_finished_total(&st.pool, window_secs, team).await?;
    let buckets =
        db::builds::build_finished_buckets(&st.pool, window_secs, bucket_secs, team).await?;
    Ok(Window {
        window_secs,
        bucket_secs,
        total: figures(total),
        buckets: buckets.into_iter().map(figures).collect(),
    })
}

/// Queue depths and live workers are the farm's (they say why a build waits); the builds counted
/// are the key's team's, or every team's for an admin key.
pub async fn overview(State(st): State<AppState>, key: Key<Read>) -> Result<Json<Overview>> {
    let team = crate::auth::team_scope(&key.key);
    let f = st.figures.get(&st.pool).await?;
    let active = match team {
        None => f.count(BuildStatus::Assigned) + f.count(BuildStatus::Building),
        Some(team) => db::builds::build_active_count(&st.pool, team).await?,
    };
    Ok(Json(Overview {
        measured_at: chrono::Utc::now(),
        queues: f
            .queues
            .iter()
            .map(|q| QueueDepthView {
                queue: q.queue.clone(),
                depth: q.pending,
                live_workers: q.live_workers,
            })
            .collect(),
        active,
        hour: window(&st, HOUR, team).await?,
        day: window(&st, DAY, team).await?,
    }))
}
