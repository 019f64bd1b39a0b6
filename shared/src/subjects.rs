//! NATS stream and subject names, in one place. Every subject that carries an id is built from a
//! typed id, so a client's input never becomes a wildcard.

use crate::ids::BuildId;
use crate::status::QueueName;

pub const BUILDS_STREAM: &str = "BUILDS";
pub const LOGS_STREAM: &str = "LOGS";
pub const EVENTS_STREAM: &str = "EVENTS";

pub const BUILDS_SUBJECTS: &str = "builds.dispatch.*";
pub const LOGS_SUBJECTS: &str = "logs.*";
pub const EVENTS_SUBJECTS: &str = "events.build.*";

/// Core NATS request/reply subjects served by the scheduler's queue group.
pub const CLAIM: &str = "scheduler.claim";
pub const HEARTBEAT: &str = "scheduler.heartbeat";
pub const COMPLETE: &str = "scheduler.complete";
pub const FAIL: &str = "scheduler.fail";
pub const ABANDON: &str = "scheduler.abandon";
/// Every worker reports it is alive (and how busy) on this subject.
pub const PRESENCE: &str = "scheduler.presence";
pub const SCHEDULER_QUEUE_GROUP: &str = "scheduler";
/// Published (core NATS) when new work may be due. The payload names the build's queue, so a
/// scheduler whose window for that queue is full can skip a pass; an empty payload wakes always.
pub const WAKE: &str = "scheduler.wake";

pub fn dispatch(queue: &QueueName) -> String {
    format!("builds.dispatch.{queue}")
}

/// Durable pull consumer shared by every worker of one queue.
pub fn queue_consumer(queue: &QueueName) -> String {
    format!("queue-{queue}")
}

pub fn logs(build: BuildId) -> String {
    format!("logs.{build}")
}

pub fn events(build: BuildId) -> String {
    format!("events.build.{build}")
}

pub fn cancel(build: BuildId) -> String {
    format!("builds.{build}.cancel")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_single_tokens_under_their_stream() {
        let q = QueueName::parse("android").unwrap();
        assert_eq!(dispatch(&q), "builds.dispatch.android");
        let b = BuildId::new();
        assert_eq!(logs(b).split('.').count(), 2);
        assert_eq!(events(b).split('.').count(), 3);
        // The cancel subject must never fall inside the BUILDS stream.
        assert!(!cancel(b).starts_with("builds.dispatch."));
    }
}
