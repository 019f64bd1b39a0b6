//! The build state machine, written down once (see `docs/state_machine.md`), plus the other
//! small enumerations a build carries (its platform and its queue) and a worker's status.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A build's status. The names are the seed system's, so old clients parse them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(
    feature = "db",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "lowercase")
)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub enum BuildStatus {
    Pending,
    Assigned,
    Building,
    Completed,
    Failed,
    Cancelled,
}

impl BuildStatus {
    pub const ALL: [BuildStatus; 6] = [
        BuildStatus::Pending,
        BuildStatus::Assigned,
        BuildStatus::Building,
        BuildStatus::Completed,
        BuildStatus::Failed,
        BuildStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Pending => "pending",
            BuildStatus::Assigned => "assigned",
            BuildStatus::Building => "building",
            BuildStatus::Completed => "completed",
            BuildStatus::Failed => "failed",
            BuildStatus::Cancelled => "cancelled",
        }
    }

    /// Held by a worker: its attempt runs (`assigned`, `building`). The SQL guards spell the same
    /// set as `status IN ('assigned', 'building')`.
    pub fn is_held(self) -> bool {
        matches!(self, BuildStatus::Assigned | BuildStatus::Building)
    }

    /// Terminal statuses never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BuildStatus::Completed | BuildStatus::Failed | BuildStatus::Cancelled
        )
    }

    /// The one table of allowed transitions. The guarded SQL statements in `db::builds`
    /// implement exactly these edges; `shared/tests/transition_matrix.rs` walks every status and
    /// statement against the real database.
    pub fn can_transition_to(self, to: BuildStatus) -> bool {
        use BuildStatus::*;
        match (self, to) {
            // Dispatch keeps a build pending (it bumps the attempt); claim assigns it.
            (Pending, Assigned) => true,
            // First heartbeat or log line.
            (Assigned, Building) => true,
            // Lost lease or abandon: back to the queue under a new attempt.
            (Assigned | Building, Pending) => true,
            (Assigned | Building, Completed) => true,
            (Pending | Assigned | Building, Failed) => true,
            (Pending | Assigned | Building, Cancelled) => true,
            _ => false,
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown {kind} {value:?}; expected one of: {expected}")]
pub struct ParseEnumError {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl FromStr for BuildStatus {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BuildStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ParseEnumError {
                kind: "status",
                value: s.to_owned(),
                expected: "pending, assigned, building, completed, failed, cancelled",
            })
    }
}

/// A worker's status, as the `workers.status` column holds it: `idle` or `building` from its
/// presence reports, `draining` once an operator asked (it takes no new build and stays draining
/// until it registers again), `offline` when it left or was revoked. A worker not seen for a while
/// also shows as `offline` in the registry (computed on read, see `db::workers::worker_list`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(
    feature = "db",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "lowercase")
)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub enum WorkerStatus {
    Idle,
    Building,
    Draining,
    Offline,
}

impl WorkerStatus {
    pub const ALL: [WorkerStatus; 4] = [
        WorkerStatus::Idle,
        WorkerStatus::Building,
        WorkerStatus::Draining,
        WorkerStatus::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Idle => "idle",
            WorkerStatus::Building => "building",
            WorkerStatus::Draining => "draining",
            WorkerStatus::Offline => "offline",
        }
    }
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerStatus {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkerStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ParseEnumError {
                kind: "worker status",
                value: s.to_owned(),
                expected: "idle, building, draining, offline",
            })
    }
}

/// The platform a build targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(
    feature = "db",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "lowercase")
)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub enum Platform {
    Ios,
    Android,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
        }
    }

    /// File extension of this platform's artifact, used in download file names.
    pub fn artifact_extension(self) -> &'static str {
        match self {
            Platform::Ios => "ipa",
            Platform::Android => "apk",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ios" => Ok(Platform::Ios),
            "android" => Ok(Platform::Android),
            _ => Err(ParseEnumError {
                kind: "platform",
                value: s.to_owned(),
                expected: "ios, android",
            }),
        }
    }
}

/// A queue label: the last token of `builds.dispatch.<queue>`, so it must be a safe NATS token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "db", derive(sqlx::Type), sqlx(transparent))]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema), schema(value_type = String, pattern = "^[a-z0-9_-]{1,64}$"))]
pub struct QueueName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid queue {0:?}: use 1-64 characters of a-z, 0-9, '-' and '_'")]
pub struct QueueNameError(pub String);

impl QueueName {
    pub fn parse(s: &str) -> Result<Self, QueueNameError> {
        if is_name_token(s) {
            Ok(QueueName(s.to_owned()))
        } else {
            Err(QueueNameError(s.to_owned()))
        }
    }

    /// The default queue of a platform is the platform's name.
    pub fn for_platform(p: Platform) -> Self {
        QueueName(p.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 1-64 characters of a-z, 0-9, '-' and '_': a name that is also a safe NATS token and label.
pub(crate) fn is_name_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl TryFrom<String> for QueueName {
    type Error = QueueNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        QueueName::parse(&s)
    }
}

impl From<QueueName> for String {
    fn from(q: QueueName) -> String {
        q.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_never_move() {
        for from in BuildStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in BuildStatus::ALL {
                assert!(!from.can_transition_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in BuildStatus::ALL {
            assert_eq!(s.as_str().parse::<BuildStatus>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("done".parse::<BuildStatus>().is_err());
    }

    #[test]
    fn worker_status_names_round_trip() {
        for s in WorkerStatus::ALL {
            assert_eq!(s.as_str().parse::<WorkerStatus>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("busy".parse::<WorkerStatus>().is_err());
        assert!("Idle".parse::<WorkerStatus>().is_err());
    }

    #[test]
    fn platforms_parse_strictly() {
        assert_eq!("ios".parse::<Platform>().unwrap(), Platform::Ios);
        assert!("windows".parse::<Platform>().is_err());
        assert!("IOS".parse::<Platform>().is_err());
    }

    #[test]
    fn queue_names_are_safe_subject_tokens() {
        assert!(QueueName::parse("android-fast_2").is_ok());
        for bad in ["", "a.b", "a*", ">", "A", "a b", &"x".repeat(65)] {
            assert!(QueueName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
