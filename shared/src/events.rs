//! The farm's events: what happened to a build or a worker, published on the `EVENTS` stream
//! (`events.build.<id>`, `events.worker.<id>`) by the service that made it happen, and served
//! to dashboards and scripts by `GET /api/events`. Best effort on the publishing side: the
//! database is the record, a lost event is logged and never fails a transition.

use crate::ids::{Attempt, BuildId, WorkerId};
use crate::status::{BuildStatus, Platform, QueueName, WorkerStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened to a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub enum BuildChange {
    Submitted,
    Assigned,
    Building,
    Completed,
    Failed,
    Cancelled,
    /// An attempt ended and the build went back to the queue.
    Requeued,
}

impl BuildChange {
    /// The change that leaves a build in `status` (`pending` after a transition: a requeue).
    pub fn into_status(status: BuildStatus) -> Self {
        match status {
            BuildStatus::Pending => BuildChange::Requeued,
            BuildStatus::Assigned => BuildChange::Assigned,
            BuildStatus::Building => BuildChange::Building,
            BuildStatus::Completed => BuildChange::Completed,
            BuildStatus::Failed => BuildChange::Failed,
            BuildStatus::Cancelled => BuildChange::Cancelled,
        }
    }
}

/// What happened to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub enum WorkerChange {
    Registered,
    Idle,
    Building,
    Draining,
    Offline,
}

impl WorkerChange {
    pub fn into_status(status: WorkerStatus) -> Self {
        match status {
            WorkerStatus::Idle => WorkerChange::Idle,
            WorkerStatus::Building => WorkerChange::Building,
            WorkerStatus::Draining => WorkerChange::Draining,
            WorkerStatus::Offline => WorkerChange::Offline,
        }
    }
}

/// A build's status changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub struct BuildEvent {
    pub build_id: BuildId,
    pub event: BuildChange,
    pub status: BuildStatus,
    pub attempt: Attempt,
    pub queue: QueueName,
    pub platform: Option<Platform>,
    pub worker_id: Option<WorkerId>,
    pub at: DateTime<Utc>,
}

/// A worker's status changed (or it registered).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub struct WorkerEvent {
    pub worker_id: WorkerId,
    pub event: WorkerChange,
    pub status: WorkerStatus,
    pub name: Option<String>,
    pub at: DateTime<Utc>,
}

/// One event, as published and as served (`type` says which).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub enum FarmEvent {
    Build(BuildEvent),
    Worker(WorkerEvent),
}

impl FarmEvent {
    /// The build `b` after `change`.
    #[cfg(feature = "db")]
    pub fn build(b: &crate::db::builds::Build, change: BuildChange) -> Self {
        FarmEvent::Build(BuildEvent {
            build_id: b.id,
            event: change,
            status: b.status,
            attempt: b.attempt,
            queue: b.queue.clone(),
            platform: Some(b.platform),
            worker_id: b.worker_id,
            at: Utc::now(),
        })
    }

    pub fn worker(
        worker_id: WorkerId,
        event: WorkerChange,
        status: WorkerStatus,
        name: Option<String>,
    ) -> Self {
        FarmEvent::Worker(WorkerEvent {
            worker_id,
            event,
            status,
            name,
            at: Utc::now(),
        })
    }

    /// The subject it is published on.
    pub fn subject(&self) -> String {
        match self {
            FarmEvent::Build(b) => crate::subjects::build_events(b.build_id),
            FarmEvent::Worker(w) => crate::subjects::worker_events(w.worker_id),
        }
    }

    pub fn build_id(&self) -> Option<BuildId> {
        match self {
            FarmEvent::Build(b) => Some(b.build_id),
            FarmEvent::Worker(_) => None,
        }
    }

    /// The SSE event name: `build` or `worker`.
    pub fn kind(&self) -> &'static str {
        match self {
            FarmEvent::Build(_) => "build",
            FarmEvent::Worker(_) => "worker",
        }
    }
}

/// Publishes `event` (core NATS into the `EVENTS` stream; not awaited beyond the connection, as
/// the caller's transition is already recorded).
#[cfg(feature = "nats")]
pub async fn publish(nats: &async_nats::Client, event: &FarmEvent) {
    if let Err(e) = nats
        .publish(event.subject(), crate::wire::encode(event).into())
        .await
    {
        tracing::warn!(subject = %event.subject(), error = %e, "could not publish a farm event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_type_and_round_trip() {
        let e = FarmEvent::worker(
            WorkerId::new(),
            WorkerChange::Draining,
            WorkerStatus::Draining,
            Some("w1".into()),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "worker");
        assert_eq!(v["event"], "draining");
        let back: FarmEvent = crate::wire::decode(&crate::wire::encode(&e)).unwrap();
        assert_eq!(back, e);
    }
}
