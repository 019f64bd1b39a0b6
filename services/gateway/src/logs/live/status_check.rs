//! The safety net under the live feed's status events: every `EVERY`, one query per 1,000 builds
//! reads the status of every build this gateway's log followers watch, and each follower hears
//! it (a follower sends a status only when it changed and is not older than what it knew, and
//! ends at a terminal one). Per gateway, not per follower: a thousand followers of a hundred
//! builds cost the database one query, not a thousand.

use super::{BuildNews, Live};
use freeagent_shared::db::{self, Pool};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the followed builds' statuses are read, should an event be lost.
pub const EVERY: Duration = Duration::from_secs(5);
/// Builds read per query.
const CHUNK: usize = 1000;

/// Reads the followed builds' statuses once and hands them to their followers; returns how many
/// builds were read.
pub async fn run_once(live: &Live, pool: &Pool) -> Result<usize, db::Error> {
    let followed = live.followed();
    for chunk in followed.chunks(CHUNK) {
        let read_at = Instant::now();
        let found: HashMap<_, _> = db::builds::build_current_many(pool, chunk)
            .await?
            .into_iter()
            .map(|(id, current)| (id, current.status))
            .collect();
        for id in chunk {
            // Absent: the build was deleted (retention) while followed.
            let status = found.get(id).copied();
            live.deliver_news(*id, BuildNews::Checked { status, read_at });
        }
    }
    Ok(followed.len())
}

/// Runs `run_once` every `EVERY` until `shutdown`.
pub async fn run(live: Live, pool: Pool, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = run_once(&live, &pool).await {
                    tracing::warn!(error = %e, "cannot read the followed builds' statuses; trying again in {every:?}");
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}
