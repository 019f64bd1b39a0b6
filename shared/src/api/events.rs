//! `GET /api/events`: the farm's events as server-sent events (`crate::events` holds the event
//! types, which services publish and the gateway serves unchanged).

use serde::{Deserialize, Serialize};

pub use crate::events::{BuildChange, BuildEvent, FarmEvent, WorkerChange, WorkerEvent};

/// Query of `GET /api/events`; filters combine (all must hold).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only builds of this queue (worker events are left out).
    pub queue: Option<String>,
    /// Only this build's events.
    pub build_id: Option<String>,
    /// Only this worker's events and those of the builds it was given.
    pub worker_id: Option<String>,
    /// Resume after this event id (as `Last-Event-ID`); without it, events from now on.
    pub after: Option<String>,
}
