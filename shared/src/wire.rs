//! Messages on NATS, defined once. Every body is JSON with `"v": 1`; a receiver refuses other
//! versions with a clear error instead of misreading them.
//!
//! Flow: the scheduler publishes a [`Dispatch`] to JetStream; a worker answers it with a
//! [`ClaimRequest`] (core request/reply) and gets a [`ClaimReply`]; while it runs it sends
//! [`HeartbeatRequest`]s and publishes [`LogLine`]s; it ends with a [`CompleteRequest`] or a
//! [`FailRequest`]. Every request after the dispatch names the attempt it believes in.

use crate::ids::{Attempt, BuildId, WorkerId};
use crate::status::{BuildStatus, Platform, QueueName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported message version {0}; this build speaks v{VERSION}")]
    Version(u8),
}

/// Every message carries its version first.
#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u8,
    #[serde(flatten)]
    body: T,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u8,
}

pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no custom errors.
    serde_json::to_vec(&Envelope { v: VERSION, body }).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let VersionOnly { v } = serde_json::from_slice(bytes)?;
    if v != VERSION {
        return Err(WireError::Version(v));
    }
    let env: Envelope<T> = serde_json::from_slice(bytes)?;
    Ok(env.body)
}

/// Published to `builds.dispatch.<queue>` with `Nats-Msg-Id = <id>:<attempt>:<pass>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    pub build_id: BuildId,
    pub attempt: Attempt,
    pub platform: Platform,
    pub queue: QueueName,
}

impl Dispatch {
    /// `pass` is unique per dispatch transaction: a pass that published and then rolled back
    /// leaves a void message (its claim is refused and the worker ends it), and the next pass's
    /// message for the same attempt must not be dropped as its duplicate.
    pub fn msg_id(&self, pass: u64) -> String {
        format!("{}:{}:{pass:x}", self.build_id, self.attempt)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub build_id: BuildId,
    pub attempt: Attempt,
    /// The sender. It must match the worker id of the subject (`scheduler.<op>.<worker_id>`),
    /// which NATS permissions vouch for; the scheduler refuses a mismatch.
    pub worker_id: WorkerId,
}

/// What a winning claim receives: everything needed to run the build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobGrant {
    pub build_id: BuildId,
    pub attempt: Attempt,
    pub platform: Platform,
    pub source_url: String,
    pub source_sha256: String,
    pub certs_url: Option<String>,
    /// Checked by the worker after it downloads the certs (absent from older schedulers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certs_sha256: Option<String>,
    /// A PUT capability for `builds/<id>/attempts/<n>/result`.
    pub result_url: String,
    pub lease_expires_at: DateTime<Utc>,
    /// How often to heartbeat to keep the lease.
    pub heartbeat_interval_ms: u64,
    pub cancel_subject: String,
    pub metadata: serde_json::Value,
}

/// Why a request about a build was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotYours {
    /// The build does not exist.
    NotFound,
    /// The attempt named is not the build's current one, or the build is held by another worker.
    Stale,
    /// The build already ended (completed, failed or cancelled).
    Finished,
    /// The worker credential was refused.
    Unauthorized,
    /// The worker did not declare this build's queue.
    WrongQueue,
    /// The worker is draining, or awaits an operator's approval, and takes no new build.
    Draining,
    /// The worker already holds `max_concurrent` builds (the farm enforces it): someone else
    /// should take this dispatch.
    AtCapacity,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ClaimReply {
    Granted(Box<JobGrant>),
    NotYours {
        reason: NotYours,
        status: Option<BuildStatus>,
    },
    /// The request was malformed or cannot succeed as sent.
    Error {
        message: String,
    },
    /// The scheduler could not handle it now (its database is down): send it again.
    Unavailable {
        message: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub build_id: BuildId,
    pub attempt: Attempt,
    /// The sender. It must match the worker id of the subject (`scheduler.<op>.<worker_id>`),
    /// which NATS permissions vouch for; the scheduler refuses a mismatch.
    pub worker_id: WorkerId,
    /// 0–100, when the build reports it.
    pub progress: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum HeartbeatReply {
    /// The lease is renewed; keep going. `result_url` is a fresh upload capability (they
    /// live minutes, never past the lease): upload to the newest one.
    Renewed {
        lease_expires_at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result_url: Option<String>,
    },
    /// Stop the build and upload nothing: the lease is gone.
    Stop {
        reason: NotYours,
        status: Option<BuildStatus>,
    },
    /// The request was malformed or cannot succeed as sent.
    Error { message: String },
    /// The scheduler could not handle it now (its database is down): send it again.
    Unavailable { message: String },
}

/// What storage said about an object it wrote, with its signed receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub receipt: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompleteRequest {
    pub build_id: BuildId,
    pub attempt: Attempt,
    /// The sender. It must match the worker id of the subject (`scheduler.<op>.<worker_id>`),
    /// which NATS permissions vouch for; the scheduler refuses a mismatch.
    pub worker_id: WorkerId,
    pub result: StoredObject,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailRequest {
    pub build_id: BuildId,
    pub attempt: Attempt,
    /// The sender. It must match the worker id of the subject (`scheduler.<op>.<worker_id>`),
    /// which NATS permissions vouch for; the scheduler refuses a mismatch.
    pub worker_id: WorkerId,
    pub error: String,
}

/// Reply to complete and fail. Replaying the same outcome gives `Recorded` again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FinishReply {
    Recorded {
        status: BuildStatus,
    },
    NotYours {
        reason: NotYours,
        status: Option<BuildStatus>,
    },
    /// The request was malformed or cannot succeed as sent.
    Error {
        message: String,
    },
    /// The scheduler could not handle it now (its database is down): send it again.
    Unavailable {
        message: String,
    },
}

/// The holder gives a build back (shutting down, unregistering); it is dispatched again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AbandonRequest {
    pub build_id: BuildId,
    pub attempt: Attempt,
    /// The sender. It must match the worker id of the subject (`scheduler.<op>.<worker_id>`),
    /// which NATS permissions vouch for; the scheduler refuses a mismatch.
    pub worker_id: WorkerId,
    pub reason: String,
}

/// Sent by every worker every few seconds, busy or not.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresenceRequest {
    /// The sender. It must match the worker id of the subject (`scheduler.<op>.<worker_id>`),
    /// which NATS permissions vouch for; the scheduler refuses a mismatch.
    pub worker_id: WorkerId,
    /// Builds running on the worker now.
    pub running: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PresenceReply {
    /// `drain`: take no new build; let the running ones finish.
    /// `nats_jwt`: renewed NATS credentials (same key), when the current ones are past half
    /// their life; the worker presents them from its next (re)connect on.
    Seen {
        drain: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nats_jwt: Option<String>,
        /// Registered while the farm requires approval, and not approved yet (`drain` is set
        /// too, so older workers stop pulling without knowing why).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        awaiting_approval: bool,
    },
    NotYours {
        reason: NotYours,
    },
    /// The request was malformed or cannot succeed as sent.
    Error {
        message: String,
    },
    /// The scheduler could not handle it now (its database is down): send it again.
    Unavailable {
        message: String,
    },
}

/// Requests a worker sends: the scheduler compares the sender they name with the worker id of
/// the subject they came on, which NATS permissions vouch for.
pub trait FromWorker {
    fn worker_id(&self) -> WorkerId;
}

macro_rules! from_worker {
    ($($t:ty),*) => {$(
        impl FromWorker for $t {
            fn worker_id(&self) -> WorkerId {
                self.worker_id
            }
        }
    )*};
}
from_worker!(
    ClaimRequest,
    HeartbeatRequest,
    CompleteRequest,
    FailRequest,
    AbandonRequest,
    PresenceRequest,
    LogBatch
);

/// Replies that say "try again": the worker's client retries these like a lost request.
pub trait RetryLater {
    fn is_unavailable(&self) -> bool;
}

macro_rules! retry_later {
    ($($t:ty),*) => {$(
        impl RetryLater for $t {
            fn is_unavailable(&self) -> bool {
                matches!(self, Self::Unavailable { .. })
            }
        }
    )*};
}
retry_later!(
    CancelReply,
    ClaimReply,
    HeartbeatReply,
    FinishReply,
    PresenceReply,
    LogReply
);

/// Log severity, as the HTTP contract spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Which output of the build command a line came from. Absent on the wire for the farm's own
/// lines, a worker's notes and stdout (the common case costs no bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line of a build's log, published to `logs.<build_id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub build_id: BuildId,
    pub attempt: Attempt,
    /// Per attempt, from 1, in the order the worker produced them.
    pub seq: u64,
    pub timestamp: DateTime<Utc>,
    pub level: LogLevel,
    pub message: String,
    /// `stderr` for the build command's standard error; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<LogStream>,
}

/// At most this many lines in one `LogBatch`.
pub const MAX_LOG_BATCH_LINES: usize = 256;

/// A run of one attempt's log lines, in the order the worker produced them, sent on
/// `scheduler.log.<worker_id>`. The scheduler stores them on the LOGS stream only if the sender
/// holds that attempt and has budget left (ADR-0018); one batch per attempt is in flight at a
/// time, so the stream keeps the worker's order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogBatch {
    pub worker_id: WorkerId,
    pub build_id: BuildId,
    pub attempt: Attempt,
    /// Each names the same build and attempt; `seq` increases.
    pub lines: Vec<LogLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LogReply {
    /// Every line of the batch up to `seq` `through` is stored (a line stored before, when a
    /// reply was lost, is not stored twice); send the rest again.
    Stored { through: u64 },
    /// The sender is over its log budget: lines up to `through` are stored; send the rest again
    /// after `retry_after_ms`.
    Slow { through: u64, retry_after_ms: u64 },
    /// The sender does not hold this attempt (it ended, or was never its): drop the lines.
    NotYours { reason: NotYours },
    /// The batch was malformed, or the attempt's log is past its cap: drop the lines.
    Error { message: String },
    /// The scheduler could not handle it now: send it again.
    Unavailable { message: String },
}

/// A submitter's cancel of a build, which the gateway forwards after checking the submitter's
/// credential (its scope and team): the scheduler applies it (`scheduler.cancel`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub build_id: BuildId,
}

/// Reply to a cancel. Cancelling a cancelled build answers `Finished { status: cancelled }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CancelReply {
    Cancelled,
    /// The build had already ended (completed, failed or cancelled): nothing changed.
    Finished {
        status: BuildStatus,
    },
    NotFound,
    /// The request could not be read.
    Error {
        message: String,
    },
    /// The scheduler could not handle it now (its database is down): send it again.
    Unavailable {
        message: String,
    },
}

/// Published by the scheduler on `cancel.<worker>.<build>`: stop this attempt of this build. A
/// worker acts only on a message that decodes as this and names the build and attempt it runs;
/// anything else on its cancel subject (a reply or acknowledgement someone directed there) is
/// ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelOrder {
    pub cancel: BuildId,
    pub attempt: Attempt,
}

impl CancelOrder {
    /// Whether `payload` orders exactly this attempt of this build to stop.
    pub fn stops(payload: &[u8], build: BuildId, attempt: Attempt) -> bool {
        decode::<CancelOrder>(payload).is_ok_and(|c| c.cancel == build && c.attempt == attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_version_and_round_trip() {
        let d = Dispatch {
            build_id: BuildId::new(),
            attempt: Attempt::new(2).unwrap(),
            platform: Platform::Android,
            queue: QueueName::parse("android").unwrap(),
        };
        let bytes = encode(&d);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(decode::<Dispatch>(&bytes).unwrap(), d);
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        assert!(matches!(
            decode::<Dispatch>(br#"{"v":2}"#),
            Err(WireError::Version(2))
        ));
        assert!(matches!(
            decode::<Dispatch>(b"not json"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Dispatch>(br#"{"v":1,"build_id":"x"}"#),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn tagged_replies_round_trip() {
        let r = ClaimReply::NotYours {
            reason: NotYours::Stale,
            status: Some(BuildStatus::Assigned),
        };
        assert_eq!(decode::<ClaimReply>(&encode(&r)).unwrap(), r);
        let h = HeartbeatReply::Renewed {
            lease_expires_at: Utc::now(),
            result_url: None,
        };
        assert_eq!(decode::<HeartbeatReply>(&encode(&h)).unwrap(), h);
    }
}
