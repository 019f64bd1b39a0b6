//! NATS stream and subject names, in one place. Every subject that carries an id is built from a
//! typed id, so a client's input never becomes a wildcard. Subjects a worker publishes or
//! subscribes to carry its worker id, so NATS permissions (not the payload) say who is speaking
//! and whom a message is for (ADR-0009).

use crate::ids::{BuildId, WorkerId};
use crate::status::QueueName;

pub const BUILDS_STREAM: &str = "BUILDS";
pub const LOGS_STREAM: &str = "LOGS";
pub const EVENTS_STREAM: &str = "EVENTS";

pub const BUILDS_SUBJECTS: &str = "builds.dispatch.*";
/// `logs.<build_id>.<worker_id>`: the worker id is the writer's. Only the farm publishes here:
/// a worker's lines come through the scheduler's log gate (`Op::Log`), which checks the worker
/// holds the attempt and stays within its budget.
pub const LOGS_SUBJECTS: &str = "logs.*.*";
/// `events.build.<id>` and `events.worker.<id>` (`crate::events`).
pub const EVENTS_SUBJECTS: &str = "events.*.*";

/// Where the LOGS and EVENTS streams re-publish every message they store (stream `republish`,
/// NATS 2.9+), as `live.<original subject>` with its stream sequence in `Nats-Sequence`: the
/// gateway's live feed is one plain subscription, not a consumer. Only the server publishes
/// here (no role may).
pub const LIVE_REPUBLISH: &str = "live.>";
/// What a gateway's live feed subscribes to, per stream.
pub const LIVE_LOGS: &str = "live.logs.>";
pub const LIVE_EVENTS: &str = "live.events.>";

/// Every worker operation's subject (`scheduler.<op>.<worker_id>`).
pub const OPERATIONS: &str = "scheduler.*.*";

/// The worker operations, each on `scheduler.<op>.<worker_id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Claim,
    Heartbeat,
    Complete,
    Fail,
    Abandon,
    /// Every worker reports it is alive (and how busy).
    Presence,
    /// A run of log lines of an attempt the worker holds (`wire::LogBatch`): the scheduler
    /// stores them on the LOGS stream, the only way a worker's lines get there.
    Log,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Claim,
        Op::Heartbeat,
        Op::Complete,
        Op::Fail,
        Op::Abandon,
        Op::Presence,
        Op::Log,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Claim => "claim",
            Op::Heartbeat => "heartbeat",
            Op::Complete => "complete",
            Op::Fail => "fail",
            Op::Abandon => "abandon",
            Op::Presence => "presence",
            Op::Log => "log",
        }
    }

    /// The subject a worker sends this operation on.
    pub fn subject(self, worker: WorkerId) -> String {
        format!("scheduler.{}.{worker}", self.as_str())
    }

    /// What the scheduler subscribes to for this operation.
    pub fn wildcard(self) -> String {
        format!("scheduler.{}.*", self.as_str())
    }

    /// The operation and the sender of a subject the scheduler received; `None` for anything else.
    pub fn parse_subject(subject: &str) -> Option<(Op, WorkerId)> {
        let mut parts = subject.split('.');
        let (Some("scheduler"), Some(op), Some(worker), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let op = Op::ALL.into_iter().find(|o| o.as_str() == op)?;
        Some((op, worker.parse().ok()?))
    }
}

pub const SCHEDULER_QUEUE_GROUP: &str = "scheduler";
/// Published (core NATS) when new work may be due. The payload names the build's queue, so a
/// scheduler whose window for that queue is full can skip a pass; an empty payload wakes always.
pub const WAKE: &str = "scheduler.wake";
/// A submitter's cancel, forwarded by the gateway (request: `wire::CancelRequest`): the
/// scheduler applies it and tells the worker. Two tokens, so no worker's `scheduler.*.<id>`
/// permission reaches it; only the scheduler publishes cancels to workers.
pub const CANCEL: &str = "scheduler.cancel";

/// The gateway revoked a worker's registration: the scheduler pushes the new revocations.
pub const REVOKED: &str = "scheduler.revoked";

pub fn dispatch(queue: &QueueName) -> String {
    format!("builds.dispatch.{queue}")
}

/// Durable pull consumer shared by every worker of one queue.
pub fn queue_consumer(queue: &QueueName) -> String {
    format!("queue-{queue}")
}

/// Where a worker's lines of a build's log are stored: the scheduler publishes them here after
/// checking the worker holds the attempt (`Op::Log`); the worker id says whose lines they are.
pub fn logs(build: BuildId, worker: WorkerId) -> String {
    format!("logs.{build}.{worker}")
}

/// Every line of a build's log, whoever wrote it (readers check the writer held the attempt).
pub fn logs_of(build: BuildId) -> String {
    format!("logs.{build}.*")
}

/// The last token of the subjects the farm itself (gateway, scheduler) writes a build's own log
/// lines on. Workers may publish only on `logs.*.<their id>`, so no worker can write as the farm.
pub const FARM_WRITER: &str = "farm";

/// `logs.<build_id>.farm`: lines the farm writes (`Build submitted`, `Build completed
/// successfully`, ...).
pub fn farm_logs(build: BuildId) -> String {
    format!("logs.{build}.{FARM_WRITER}")
}

/// Who wrote a log line, from its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogWriter {
    Farm,
    Worker(WorkerId),
}

/// The writer of a log line, from its subject.
pub fn log_writer(subject: &str) -> Option<LogWriter> {
    match subject.rsplit('.').next()? {
        FARM_WRITER => Some(LogWriter::Farm),
        w => w.parse().ok().map(LogWriter::Worker),
    }
}

/// A build's events (`crate::events::FarmEvent::Build`).
pub fn build_events(build: BuildId) -> String {
    format!("events.build.{build}")
}

/// A worker's events (`crate::events::FarmEvent::Worker`).
pub fn worker_events(worker: WorkerId) -> String {
    format!("events.worker.{worker}")
}

/// The build a log subject (`logs.<build_id>.<writer>`) belongs to.
pub fn log_build(subject: &str) -> Option<BuildId> {
    let mut parts = subject.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("logs"), Some(id), Some(_), None) => id.parse().ok(),
        _ => None,
    }
}

/// Stops `build` on `worker`. Only the scheduler may publish here.
pub fn cancel(worker: WorkerId, build: BuildId) -> String {
    format!("cancel.{worker}.{build}")
}

/// The prefix of every reply inbox of a worker's connection.
pub fn inbox_prefix(worker: WorkerId) -> String {
    format!("_INBOX.{worker}")
}

/// The inbox prefix of the services that send worker operations on a worker's behalf (the
/// gateway, for the HTTP workers it authenticated). No worker may subscribe under it.
pub const SERVICE_INBOX_PREFIX: &str = "_INBOX.svc";

/// The reply subjects NATS itself makes for a request that crossed a service import
/// (`_R_.<random>…`): the workers' requests, since they live in an account of their own
/// (ADR-0016).
pub const SERVICE_IMPORT_REPLY_PREFIX: &str = "_R_";

/// Whether the scheduler may answer a request from `sender` at `reply`: only under the sender's
/// own inbox, a service's inbox, or a reply NATS mapped across a service import. Any other reply
/// subject would make the scheduler publish where the worker itself may not (a cancel, a
/// JetStream API call): it is dropped.
///
/// A `_R_.` reply is safe to answer: a worker in the workers account never chooses it. NATS
/// replaces the reply subject of every request crossing the import with a fresh `_R_.` subject
/// of its own in the farm's account and carries the answer back to the worker's reply subject
/// in the workers' account, where the worker's own choice can name nothing of the farm's. In
/// the farm's account only its services (and, in a set-up without a workers account, workers)
/// could put a `_R_.` reply on a request themselves; an answer there goes nowhere unless it
/// hits a live mapping, whose random tokens no one can guess, and then only to the requester
/// that mapping belongs to.
pub fn reply_allowed(reply: &str, sender: WorkerId) -> bool {
    let under = |prefix: &str| {
        reply
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['*', '>', ' ']))
    };
    under(&inbox_prefix(sender))
        || under(SERVICE_INBOX_PREFIX)
        || under(SERVICE_IMPORT_REPLY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_single_tokens_under_their_stream() {
        let q = QueueName::parse("android").unwrap();
        assert_eq!(dispatch(&q), "builds.dispatch.android");
        let (b, w) = (BuildId::new(), WorkerId::new());
        assert_eq!(logs(b, w).split('.').count(), 3);
        assert_eq!(log_writer(&logs(b, w)), Some(LogWriter::Worker(w)));
        assert_eq!(log_writer(&farm_logs(b)), Some(LogWriter::Farm));
        assert_eq!(log_writer("logs.x.not-a-worker"), None);
        assert_eq!(build_events(b).split('.').count(), 3);
        // The cancel subject must never fall inside the BUILDS stream.
        assert!(!cancel(w, b).starts_with("builds."));
    }

    #[test]
    fn replies_go_only_to_the_senders_own_inbox_or_a_services() {
        let (me, other, b) = (WorkerId::new(), WorkerId::new(), BuildId::new());
        assert!(reply_allowed(&format!("_INBOX.{me}.abc.1"), me));
        assert!(reply_allowed("_INBOX.svc.abc.7", me));
        assert!(reply_allowed("_R_.aBc123.XyZ", me));
        for evil in [
            cancel(other, b),
            format!("_INBOX.{other}.abc.1"),
            format!("_INBOX.{me}"),
            format!("_INBOX.{me}."),
            format!("_INBOX.{me}x.1"),
            format!("_INBOX.{me}.>"),
            "_INBOX.svcx.1".to_owned(),
            "_R_".to_owned(),
            "_R_.>".to_owned(),
            "_R_x.1".to_owned(),
            "$JS.API.STREAM.PURGE.LOGS".to_owned(),
            "_INBOX.abc.1".to_owned(),
        ] {
            assert!(!reply_allowed(&evil, me), "{evil}");
        }
    }

    #[test]
    fn operation_subjects_name_their_sender() {
        let w = WorkerId::new();
        for op in Op::ALL {
            assert_eq!(Op::parse_subject(&op.subject(w)), Some((op, w)));
        }
        assert_eq!(Op::parse_subject(WAKE), None);
        assert_eq!(Op::parse_subject("scheduler.claim.not-a-uuid"), None);
        assert_eq!(Op::parse_subject("scheduler.nope.x"), None);
        assert_eq!(
            Op::parse_subject(&format!("scheduler.claim.{w}.extra")),
            None
        );
    }
}
