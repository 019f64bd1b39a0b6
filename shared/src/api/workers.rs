//! Workers: registration, the HTTP worker protocol, the registry and diagnostics.

use crate::ids::{Attempt, BuildId, WorkerId};
use crate::status::{BuildStatus, Platform, WorkerStatus};
use crate::wire::LogLevel;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /api/workers/register`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisterRequest {
    /// An id from an earlier registration, to register again.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    /// `platforms` (ios, android), `queues`, `max_concurrent_builds` (1 to 1024); other keys
    /// are kept as the worker sent them.
    #[serde(default)]
    pub capabilities: serde_json::Value,
    /// The public half of an nkey the worker generated (`U…`): it then gets NATS credentials.
    #[serde(default)]
    pub nats_public_key: Option<String>,
    /// Registering again under `id` with the NATS key the farm has on record for it: that key's
    /// signature of the id and the time (`worker_identity`). It stands for the worker's token,
    /// so a restarted worker keeps its id and approval.
    #[serde(default)]
    pub identity_proof: Option<IdentityProof>,
}

/// A worker's proof that it holds the NATS key of the id it registers again under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentityProof {
    /// Unix seconds; within 5 minutes of the gateway's clock.
    pub at: i64,
    /// The key's signature of `freeagent-worker-identity:<id>:<at>`, base64url without padding.
    pub sig: String,
}

/// Always 200 (the old macOS app accepts exactly 200).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registered {
    pub id: WorkerId,
    /// The worker's token (`X-Worker-Token`).
    pub access_token: String,
    pub expires_at: DateTime<Utc>,
    /// `registered` or `re-registered`.
    pub status: String,
    /// The worker's NATS user JWT, when it sent `nats_public_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_jwt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_jwt_expires_at: Option<DateTime<Utc>>,
    /// Whether it may take builds now: `false` while it awaits an operator's approval
    /// (`FREEAGENT_WORKER_APPROVAL=required`; `freeagent workers approve <id>`).
    #[serde(default = "yes")]
    pub approved: bool,
}

fn yes() -> bool {
    true
}

/// A job handed to an HTTP worker. The URLs are paths on the gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: BuildId,
    pub platform: Platform,
    /// `/api/builds/<id>/source`
    pub source_url: String,
    /// `/api/builds/<id>/certs`, when the build has certs.
    pub certs_url: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub attempt: Attempt,
    pub metadata: serde_json::Value,
}

/// `GET /api/workers/poll`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PollReply {
    pub job: Option<Job>,
    pub access_token: Option<String>,
}

/// Query of `GET /api/workers/poll`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PollQuery {
    /// Seconds (≤ 60) to hold the request open until a job arrives; without it the reply comes
    /// at once.
    pub wait: Option<String>,
    /// Legacy workers (API key): the worker this key registered.
    pub worker_id: Option<String>,
}

/// One line a worker reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLineIn {
    pub level: Option<LogLevel>,
    pub message: String,
}

/// `POST /api/builds/:id/logs`: one line or a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum LogBody {
    Batch { logs: Vec<LogLineIn> },
    One(LogLineIn),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogsAccepted {
    pub success: bool,
    /// Lines taken, for a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// The worker's newest token (`null` for legacy API-key workers).
    #[serde(default)]
    pub access_token: Option<String>,
}

/// `POST /api/builds/:id/heartbeat`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildBeat {
    /// 0 to 100
    pub progress: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildBeatReply {
    pub status: String,
    pub timestamp: DateTime<Utc>,
    /// True when the worker must stop the build.
    pub cancel: bool,
    /// The worker's newest token (`null` for legacy API-key workers).
    #[serde(default)]
    pub access_token: Option<String>,
}

/// `POST /api/workers/heartbeat`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerBeat {
    pub build_id: Option<String>,
    pub progress: Option<u8>,
    /// Legacy workers (API key).
    pub worker_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerBeatReply {
    pub success: bool,
    pub access_token: Option<String>,
    /// Builds the worker must stop.
    pub cancel_builds: Vec<BuildId>,
}

/// `POST /api/workers/fail` and `/abandon`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailBody {
    pub build_id: String,
    /// The failure (`fail`).
    pub error: Option<String>,
    /// Why the build is handed back (`abandon`).
    pub reason: Option<String>,
    /// Legacy workers (API key).
    pub worker_id: Option<String>,
}

/// The outcome a worker reported, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    pub success: bool,
    pub status: BuildStatus,
    /// The worker's newest token (`null` for legacy API-key workers).
    #[serde(default)]
    pub access_token: Option<String>,
}

/// `POST /api/workers/unregister`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Unregistered {
    pub success: bool,
    pub builds_reassigned: usize,
    /// The worker's newest token (`null` for legacy API-key workers).
    #[serde(default)]
    pub access_token: Option<String>,
}

/// `POST /api/builds/:id/telemetry` (the old VM monitor).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Telemetry {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub timestamp: Option<serde_json::Value>,
    /// cpu, memory, disk, build stage, ...
    pub data: Option<serde_json::Value>,
}

/// One worker in `GET /api/workers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerView {
    pub id: WorkerId,
    pub name: String,
    pub status: WorkerStatus,
    pub capabilities: serde_json::Value,
    pub last_seen_at: DateTime<Utc>,
    pub registered_at: DateTime<Utc>,
    /// The builds it holds now.
    pub builds: Vec<uuid::Uuid>,
    /// The platforms it builds for.
    pub platforms: Vec<String>,
    /// The queues it takes builds from (its declared queues, else its platforms).
    pub queues: Vec<String>,
    /// Attempts it ran that have ended, and those of them that completed.
    pub builds_total: i64,
    pub builds_completed: i64,
    /// `false` while it awaits an operator's approval (it takes no build until then).
    #[serde(default = "yes")]
    pub approved: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

/// `POST /api/workers/:id/drain` and `POST /api/workers/:id/undrain`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Drained {
    pub id: WorkerId,
    pub status: WorkerStatus,
}

/// `POST /api/workers/:id/approve`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approved {
    pub id: WorkerId,
    pub approved_at: DateTime<Utc>,
}

/// `GET /api/workers/:id/stats`, in the seed's spelling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStats {
    pub total_builds: i64,
    pub successful_builds: i64,
    pub failed_builds: i64,
    pub worker_name: String,
    pub status: WorkerStatus,
    /// Time since it registered, as the seed's app parses it: `"2d 3h 4m 5s"` (zero parts
    /// left out; `"0s"` at the start).
    pub uptime: String,
}

/// A duration in the seed's uptime spelling: `"2d 3h 4m 5s"`, zero parts left out.
pub fn seed_uptime(seconds: i64) -> String {
    let s = seconds.max(0);
    let parts = [
        (s / 86400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text.join(" ")
    }
}

/// `POST /api/diagnostics/report`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiagnosticsReport {
    pub worker_id: String,
    /// healthy, warning or critical
    pub status: String,
    pub duration_ms: Option<i64>,
    pub auto_fixed: Option<bool>,
    /// `{name, status, message, duration_ms, ...}` each.
    #[serde(default)]
    pub checks: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportStored {
    pub id: uuid::Uuid,
    pub status: String,
    /// The worker's newest token (`null` for legacy API-key workers).
    #[serde(default)]
    pub access_token: Option<String>,
}

/// A stored report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiagnosticsView {
    pub id: uuid::Uuid,
    pub worker_id: WorkerId,
    pub status: String,
    pub duration_ms: Option<i64>,
    pub auto_fixed: Option<bool>,
    pub checks: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// `created_at` in epoch milliseconds, as old clients read it.
    pub run_at: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiagnosticsList {
    pub worker_id: WorkerId,
    pub reports: Vec<DiagnosticsView>,
}

/// Query of `GET /api/diagnostics/:worker_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiagnosticsQuery {
    /// 1 to 500 (default 20)
    pub limit: Option<String>,
}

/// Query of the worker routes: legacy workers (API key) name themselves here or in
/// `X-Worker-Id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkerIdQuery {
    pub worker_id: Option<String>,
}

/// `GET /api/builds/:id/certs-secure`: the signing certs for the seed's macOS VM bootstrap, in
/// the seed's field names (base64 for the binary parts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecureCerts {
    /// The bundle's `.p12`, base64.
    pub p12: String,
    /// The bundle's `password.txt`, trimmed; empty without one.
    pub p12_password: String,
    /// A fresh random password for the VM's build keychain.
    pub keychain_password: String,
    /// Every `.mobileprovision`, base64, in bundle order.
    pub provisioning_profiles: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::seed_uptime;

    #[test]
    fn uptime_reads_as_the_seeds_app_parses_it() {
        assert_eq!(seed_uptime(0), "0s");
        assert_eq!(seed_uptime(38), "38s");
        assert_eq!(seed_uptime(83), "1m 23s");
        assert_eq!(seed_uptime(2 * 3600 + 15 * 60), "2h 15m");
        assert_eq!(seed_uptime(86400 + 5), "1d 5s");
    }
}
