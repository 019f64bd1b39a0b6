//! What the scheduler tells others after a transition: the farm event (`EVENTS` stream, for
//! live status and dashboards), the farm's line in the build's log, and cancels to workers. A
//! one-row transition announces through `shared::announce` (`announce_outcome` here words an
//! outcome's line); transitions of many rows announce from the columns they returned. Best
//! effort: the database is the record; a lost message is logged, never fatal. The log line goes
//! first, so a follower that sees a terminal event can count on the closing line being stored.

use freeagent_shared::events::{BuildChange, BuildEvent, FarmEvent};
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::status::{BuildStatus, Platform, QueueName};
use freeagent_shared::subjects;

/// The event of a build's transition into `status`, from the columns a batch statement returned
/// (one-row transitions announce through `shared::announce`).
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

/// Announces where an outcome (complete, fail, abandon) left a build, with the farm's line in
/// its log: completed, failed (with the reason), or back in the queue. The line is stored before
/// the event goes out (`shared::announce`).
pub async fn announce_outcome(nats: &async_nats::Client, b: &freeagent_shared::db::builds::Build) {
    freeagent_shared::announce::moved(nats, b, outcome_line(b)).await;
}

/// The same, for a replayed report: each part only if the streams lack it
/// (`shared::announce::moved_again`).
pub async fn announce_outcome_again(
    nats: &async_nats::Client,
    b: &freeagent_shared::db::builds::Build,
) {
    freeagent_shared::announce::moved_again(nats, b, outcome_line(b)).await;
}

/// The same for a batch's outcomes: one round trip to JetStream for all their lines.
pub async fn announce_outcomes(
    nats: &async_nats::Client,
    bs: &[freeagent_shared::db::builds::Build],
) {
    freeagent_shared::announce::moved_many(nats, bs.iter().map(|b| (b, outcome_line(b))).collect())
        .await;
}

fn outcome_line(
    b: &freeagent_shared::db::builds::Build,
) -> Option<freeagent_shared::announce::Line> {
    use freeagent_shared::announce::Line;
    use freeagent_shared::farm_log;
    use freeagent_shared::wire::LogLevel;
    let reason = b.error_message.as_deref().unwrap_or("no reason given");
    match b.status {
        BuildStatus::Completed => Some(Line::stored(LogLevel::Info, farm_log::COMPLETED)),
        BuildStatus::Failed => Some(Line::stored(LogLevel::Error, farm_log::failed(reason))),
        BuildStatus::Pending => Some(Line::stored(
            LogLevel::Warn,
            format!(
                "Attempt {} ended ({reason}); the build goes back to the queue",
                b.attempt
            ),
        )),
        _ => None,
    }
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
