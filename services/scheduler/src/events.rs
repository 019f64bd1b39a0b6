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
