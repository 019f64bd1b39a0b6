//! Status changes to the `EVENTS` stream (`events.build.<id>`), for live status and dashboards.
//! Best effort: the database is the record; a lost event is logged, never fatal.

use chrono::Utc;
use freeagent_shared::ids::{Attempt, BuildId};
use freeagent_shared::status::BuildStatus;
use freeagent_shared::subjects;
use freeagent_shared::wire::{self, StatusEvent};

pub async fn publish(
    nats: &async_nats::Client,
    build_id: BuildId,
    attempt: Attempt,
    status: BuildStatus,
) {
    let event = StatusEvent {
        build_id,
        attempt,
        status,
        at: Utc::now(),
    };
    if let Err(e) = nats
        .publish(subjects::events(build_id), wire::encode(&event).into())
        .await
    {
        tracing::warn!(%build_id, error = %e, "could not publish status event");
    }
}

/// Tells the worker holding `build` to stop it (core NATS, best effort: the worker's next
/// heartbeat is refused anyway). Only the scheduler publishes cancels.
pub async fn cancel(
    nats: &async_nats::Client,
    worker: Option<freeagent_shared::ids::WorkerId>,
    build: BuildId,
) {
    let Some(worker) = worker else { return };
    if let Err(e) = nats
        .publish(subjects::cancel(worker, build), bytes::Bytes::new())
        .await
    {
        tracing::warn!(build_id = %build, error = %e, "could not publish a cancel");
    }
}

/// The farm's line in a build's log for where a transition left it: completed, failed (with the
/// reason), or back in the queue.
pub async fn log_outcome(nats: &async_nats::Client, b: &freeagent_shared::db::builds::Build) {
    use freeagent_shared::farm_log;
    use freeagent_shared::wire::LogLevel;
    let reason = b.error_message.as_deref().unwrap_or("no reason given");
    let (level, line) = match b.status {
        BuildStatus::Completed => (LogLevel::Info, farm_log::COMPLETED.to_owned()),
        BuildStatus::Failed => (LogLevel::Error, farm_log::failed(reason)),
        BuildStatus::Pending => (
            LogLevel::Warn,
            format!(
                "Attempt {} ended ({reason}); the build goes back to the queue",
                b.attempt
            ),
        ),
        _ => return,
    };
    farm_log::write(nats, b.id, b.attempt, level, line).await;
}

/// The farm's line for a build the reaper moved: its worker was lost, or it ran too long.
pub async fn log_reaped(
    nats: &async_nats::Client,
    m: &freeagent_shared::db::builds::Moved,
    reason: &str,
) {
    use freeagent_shared::farm_log;
    use freeagent_shared::wire::LogLevel;
    let (level, line) = match m.status {
        BuildStatus::Failed => (LogLevel::Error, farm_log::failed(reason)),
        _ => (
            LogLevel::Warn,
            format!(
                "Attempt {} ended ({reason}); the build goes back to the queue",
                m.attempt
            ),
        ),
    };
    farm_log::write(nats, m.id, m.attempt, level, line).await;
}
