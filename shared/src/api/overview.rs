//! `GET /api/overview`: what the dashboard's overview draws, every figure measured from the
//! database (queue depths as `/health` has them, finished builds from the `builds` rows).

use crate::status::QueueName;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Builds that finished within one bucket (or a whole window). Durations: started → completed
/// of the builds that completed, in milliseconds; null when none completed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FinishedFigures {
    /// The bucket's (or window's) start.
    pub at: DateTime<Utc>,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// completed / (completed + failed); null when neither happened.
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One window (the last hour, the last day) in buckets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Window {
    pub window_secs: i64,
    pub bucket_secs: i64,
    /// Totals over the whole window.
    pub total: FinishedFigures,
    /// Oldest first; a bucket in which nothing finished is absent.
    pub buckets: Vec<FinishedFigures>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueDepthView {
    pub queue: QueueName,
    /// Pending builds.
    pub depth: i64,
    /// Workers serving the queue, seen recently and not draining.
    pub live_workers: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Overview {
    pub measured_at: DateTime<Utc>,
    pub queues: Vec<QueueDepthView>,
    /// Builds now assigned or building.
    pub active: i64,
    pub hour: Window,
    pub day: Window,
}
