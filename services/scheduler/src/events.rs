//! What the scheduler tells others after a transition: the farm event (`EVENTS` stream, for
//! live status and dashboards), the farm's line in the build's log, and cancels to workers. Best
//! effort: the database is the record; a lost message is logged, never fatal. The log line goes
//! first, so a follower that sees a terminal event can count on the closing line being stored.

use freeagent_shared::events::{BuildChange, BuildEvent, FarmEvent};
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::status::{BuildStatus, Platform, QueueName};
use freeagent_shared::subjects;

/// The event of a build's transition into `b.status`.
pub async fn publish(nats: &async_nats::Client, b: &freeagent_shared::db::builds::Build) {
    let event = FarmEvent::build(b, BuildChange::into_status(b.status));
    freeagent_shared::events::publish(nats, &event).await;
}

/// The same, from the columns a batch statement returned.
pub async fn publish_moved(
    nats: &async_nats::Client,
    build_id: BuildId,
    attempt: Attempt,
    status: BuildStatus,
    worker_id: Option<WorkerId>,
    queue: &QueueName,
    platform: Platform,
) {
    let event = FarmEvent::Build(BuildEvent {
        build_id,
        event: BuildChange::into_status(status),
        status,
        attempt,
        queue: queue.clone(),
        platform: Some(platform),
        worker_id,
        at: chrono::Utc::now(),
    });
    freeagent_shared::events::publish(nats, &event).await;
}

/// Tells the worker holding `build` to stop `attempt` (core NATS, best effort: the worker's
/// next heartbeat is refused anyway). Only the scheduler publishes cancels; the worker acts only
/// on an order naming the build and attempt it runs.
pub async fn cancel(
    nats: &async_nats::Client,
    worker: Option<freeagent_shared::ids::WorkerId>,
    build: BuildId,
    attempt: Attempt,
) {
    let Some(worker) = worker else { return };
    let order = freeagent_shared::wire::CancelOrder {
        cancel: build,
        attempt,
    };
    if let Err(e) = nats
        .publish(
            subjects::cancel(worker, build),
            freeagent_shared::wire::encode(&order).into(),
        )
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
