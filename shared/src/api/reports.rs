//! Farm-wide figures: statistics, active builds, public stats and health.

use crate::ids::{BuildId, WorkerId};
use crate::status::{BuildStatus, Platform, QueueName};
use serde::{Deserialize, Serialize};

/// `GET /api/builds/statistics`: builds per status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Statistics {
    pub total: i64,
    pub pending: i64,
    pub assigned: i64,
    pub building: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// A running build in `GET /api/builds/active`, in the seed's types (its menu bar decodes
/// `started_at` as an integer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActiveBuild {
    pub id: BuildId,
    pub status: BuildStatus,
    pub platform: Platform,
    pub worker_id: Option<WorkerId>,
    /// Milliseconds since the Unix epoch.
    pub started_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActiveBuilds {
    pub builds: Vec<ActiveBuild>,
}

/// `GET /api/stats`: public, counts only, in the seed's spelling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicStats {
    pub nodes_online: i64,
    pub builds_queued: i64,
    pub active_builds: i64,
    pub builds_today: i64,
    pub total_builds: i64,
    pub total_build_time_ms: i64,
    /// CPU-seconds spent building, as the seed's landing page reads it. The farm records no CPU
    /// samples, so this counts one busy core per running build: `total_build_time_ms / 1000`.
    pub total_cpu_cycles: f64,
}

/// One queue in `GET /health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueHealth {
    pub queue: QueueName,
    /// Builds waiting (not `pending`: old scripts grep `"pending":<n>` for the farm's total).
    pub depth: i64,
    pub live_workers: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueTotals {
    pub pending: i64,
    pub active: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredKind {
    pub objects: i64,
    pub bytes: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StorageHealth {
    /// `local`, `s3`, `gs` or `az`.
    pub backend: String,
    pub objects: i64,
    pub bytes: i64,
    /// Per kind of object: source, certs, result.
    pub kinds: std::collections::BTreeMap<String, StoredKind>,
}

/// `GET /health`: the seed's shape with measured figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
    /// The gateway's release (`freeagent doctor` compares it with its own).
    #[serde(default)]
    pub version: String,
    pub queues: Vec<QueueHealth>,
    pub queue: QueueTotals,
    pub storage: StorageHealth,
}
