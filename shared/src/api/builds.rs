//! Builds, as submitters see them.

use crate::ids::{ApiKeyId, Attempt, BuildId, WorkerId};
use crate::status::{BuildStatus, Platform, QueueName};
use crate::team::TeamName;
use crate::wire::LogLevel;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// 201 to `POST /api/builds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Submitted {
    pub id: BuildId,
    pub status: BuildStatus,
    pub platform: Platform,
    pub submitted_at: DateTime<Utc>,
    /// This build's token (`X-Build-Token`): shown once.
    pub access_token: String,
}

/// One build in a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildSummary {
    pub id: BuildId,
    pub platform: Platform,
    pub status: BuildStatus,
    pub worker_id: Option<WorkerId>,
    pub worker_name: Option<String>,
    pub submitted_at: DateTime<Utc>,
    /// `submitted_at`, as the seed's clients spell it.
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// `completed_at`, as the seed's clients spell it.
    #[serde(rename = "completedAt")]
    pub completed_at_legacy: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub has_result: bool,
    /// When retention deleted the build's files (the record stays).
    pub purged_at: Option<DateTime<Utc>>,
    /// The queue it waits in or ran from.
    pub queue: QueueName,
    /// Dispatches so far (the fencing token): 1 on the first run.
    pub attempt: Attempt,
    /// When the current (or last) attempt started building.
    pub started_at: Option<DateTime<Utc>>,
    /// started → completed, once finished.
    pub duration_ms: Option<i64>,
    /// The team of the key that submitted it.
    pub team: TeamName,
    /// What tells it apart, from its metadata: `name` (or `title`), `branch` (or `git_branch`),
    /// `commit` (or `git_commit`, as `freeagent submit` sets them); each a string of at most 200
    /// characters, or null.
    pub name: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// The name of the key that submitted (or retried) it; null for a retry by build token or a
    /// key since deleted.
    pub submitted_by_name: Option<String>,
    /// While it is pending: where it waits and why (in a list too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<QueueWait>,
}

/// Longest label (`name`, `branch`, `commit`) a summary carries, in characters.
pub const MAX_LABEL_CHARS: usize = 200;

/// The first of `keys` that `metadata` holds as a non-empty string, cut to `MAX_LABEL_CHARS`.
pub fn metadata_label(metadata: &serde_json::Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| metadata.get(k)?.as_str())
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(|v| v.chars().take(MAX_LABEL_CHARS).collect())
}

/// A stored file of a build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Artifact {
    pub name: String,
    pub size: i64,
    pub sha256: String,
}

/// One attempt: who ran it, when, how it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempt: Attempt,
    pub worker_id: WorkerId,
    pub claimed_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// `GET /api/builds/:id`: the summary and everything else about the build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildDetail {
    #[serde(flatten)]
    pub summary: BuildSummary,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub retry_on_failure: bool,
    pub priority: i32,
    pub metadata: serde_json::Value,
    pub progress: Option<i16>,
    pub original_build_id: Option<BuildId>,
    pub artifacts: Vec<Artifact>,
    pub attempts: Vec<AttemptView>,
    /// When the whole log was archived to object storage (reads come from there since).
    pub logs_archived_at: Option<DateTime<Utc>>,
    /// The API key that submitted (or retried) it; none for a retry by build token.
    pub submitted_by: Option<ApiKeyId>,
}

/// Where a pending build waits, and why it has not started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueWait {
    /// 1 for the next build its queue dispatches.
    pub position: i64,
    /// Live, approved, not draining workers of its queue, their build slots, and the builds
    /// they hold.
    pub live_workers: i64,
    pub slots: i64,
    pub busy: i64,
    /// In words: "no live worker serves queue ios", "2 of 2 worker slots busy", …
    pub reason: String,
    /// *new* A guess at when it starts, in seconds from now: the builds ahead of it that the
    /// free slots do not take at once, in rounds of the queue's slots, each round the median
    /// run of the queue's recent builds. Null with no live worker or no recent build to go by.
    pub eta_secs: Option<i64>,
}

/// `GET /api/builds/:id/status`, the old clients' shape: times in epoch milliseconds, and a
/// cancelled build reported as `failed` with "Build cancelled by user".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LegacyStatus {
    pub id: BuildId,
    pub status: BuildStatus,
    pub platform: Platform,
    pub worker_id: Option<WorkerId>,
    pub submitted_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub error_message: Option<String>,
}

/// One line of a build's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// Its position in the log; `after` resumes after it.
    pub seq: u64,
    pub timestamp: DateTime<Utc>,
    pub level: LogLevel,
    pub message: String,
    pub attempt: Attempt,
    /// *new* `stderr` for a line of the build command's standard error; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::wire::LogStream>,
}

impl LogEntry {
    /// The line as the text log (`download?type=logs`) and `freeagent logs -f` show it.
    pub fn text_line(&self) -> String {
        format!(
            "{} [{:?}] {}\n",
            self.timestamp.to_rfc3339(),
            self.level,
            self.message
        )
    }
}

/// `GET /api/builds/:id/logs`: a page, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    pub build_id: BuildId,
    pub logs: Vec<LogEntry>,
    /// Pass as `after` for the next page.
    pub next_after: u64,
}

/// `POST /api/builds/:id/cancel`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cancelled {
    pub id: BuildId,
    pub status: BuildStatus,
}

/// `POST /api/builds/:id/retry`: the new build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Retried {
    pub id: BuildId,
    pub status: BuildStatus,
    pub submitted_at: DateTime<Utc>,
    /// The new build's own token.
    pub access_token: String,
    pub original_build_id: BuildId,
}

/// Query of `GET /api/builds`. Values are parsed by the gateway, which says what is wrong.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// pending, assigned, building, completed, failed or cancelled
    pub status: Option<String>,
    /// ios or android
    pub platform: Option<String>,
    pub worker_id: Option<String>,
    /// A queue name
    pub queue: Option<String>,
    /// A team's name (admin keys; any other key sees its own team's builds only)
    pub team: Option<String>,
    /// `true`: only the builds the asking key submitted (or retried)
    pub mine: Option<String>,
    /// 1 to 500 (default 50)
    pub limit: Option<String>,
    /// From the `Link: <…>; rel="next"` header of the previous page.
    pub cursor: Option<String>,
}

/// Query of `GET /api/builds/:id/logs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// The `seq` (or `next_after`) to resume after.
    pub after: Option<String>,
    /// 1 to 10,000 (default 1,000). With neither `after` nor `limit`: the whole log, streamed
    /// (the seed's reading).
    pub limit: Option<String>,
    /// `true`: a server-sent-event stream of the log as it grows (as `Accept: text/event-stream`);
    /// `Last-Event-ID` resumes.
    pub follow: Option<String>,
}
