//! What each role may publish and subscribe to on the farm's account. A worker reaches only its
//! own operation subjects, its own log subjects, its own inbox and cancel subjects, and the pull
//! and ack subjects of the queue consumers it serves; no other JetStream API.

use super::jwt::SubjectRules;
use crate::ids::WorkerId;
use crate::status::QueueName;
use crate::subjects;

/// Subscriptions one worker connection may hold.
pub const WORKER_MAX_SUBSCRIPTIONS: i64 = 1024;
/// The largest message a worker may publish: four times the largest log line.
pub const WORKER_MAX_PAYLOAD: i64 = 256 << 10;

/// Who a NATS user of the farm's account is.
#[derive(Debug, Clone)]
pub enum Role {
    /// Dispatch, every transition, cancels: the whole account.
    Scheduler,
    /// The scheduler's connection that answers worker requests: it takes the requests and
    /// publishes only replies into inboxes. A reply subject a worker chose can never become a
    /// cancel or a JetStream API call, whatever the scheduler's code does with it.
    SchedulerReplies,
    /// The HTTP API: wakes and notices to the scheduler, operations for HTTP workers it has
    /// authenticated, log and event streams, dispatches for HTTP workers. Never cancels.
    Gateway,
    Worker {
        id: WorkerId,
        queues: Vec<QueueName>,
    },
}

impl Role {
    pub fn name(&self) -> String {
        match self {
            Role::Scheduler => "freeagent-scheduler".into(),
            Role::SchedulerReplies => "freeagent-scheduler-replies".into(),
            Role::Gateway => "freeagent-gateway".into(),
            Role::Worker { id, .. } => format!("worker-{id}"),
        }
    }

    /// The most subscriptions a connection of this role may hold and the largest message it may
    /// publish (`-1`: the server's own limits). A worker needs its inbox, a pull per queue and
    /// a cancel subject per running build, and sends log lines of at most 64 KiB: the limits
    /// leave it ample room and stop one login from piling up thousands of subscriptions or
    /// megabyte messages.
    pub fn limits(&self) -> (i64, i64) {
        match self {
            Role::Worker { .. } => (WORKER_MAX_SUBSCRIPTIONS, WORKER_MAX_PAYLOAD),
            _ => (-1, -1),
        }
    }

    /// (publish, subscribe)
    pub fn permissions(&self) -> (SubjectRules, SubjectRules) {
        let allow = |v: Vec<String>| SubjectRules {
            allow: v,
            deny: vec![],
        };
        match self {
            Role::Scheduler => (allow(vec![">".into()]), allow(vec![">".into()])),
            // `_R_.>`: the replies NATS maps back across the workers' service imports.
            Role::SchedulerReplies => (
                allow(vec![
                    "_INBOX.>".into(),
                    format!("{}.>", subjects::SERVICE_IMPORT_REPLY_PREFIX),
                ]),
                allow(vec![subjects::OPERATIONS.into()]),
            ),
            Role::Gateway => (
                allow(vec![
                    "scheduler.>".into(),
                    "logs.>".into(),
                    "events.>".into(),
                    "$JS.API.>".into(),
                    "$JS.ACK.>".into(),
                ]),
                // Its own inbox (not the workers'), and the streams' re-published messages: the
                // live feed (`subjects::LIVE_*`).
                allow(vec![
                    format!("{}.>", subjects::SERVICE_INBOX_PREFIX),
                    subjects::LIVE_LOGS.into(),
                    subjects::LIVE_EVENTS.into(),
                ]),
            ),
            Role::Worker { id, queues } => {
                // Log lines go through the scheduler too (`scheduler.log.<id>`): no worker
                // publishes on LOGS itself, so none can fill it with lines of builds it does
                // not hold.
                let mut publish: Vec<String> = vec![format!("scheduler.*.{id}")];
                for q in queues {
                    let consumer = subjects::queue_consumer(q);
                    let stream = subjects::BUILDS_STREAM;
                    publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"));
                    publish.push(format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"));
                    publish.push(format!("$JS.ACK.{stream}.{consumer}.>"));
                }
                let subscribe = vec![
                    format!("{}.>", subjects::inbox_prefix(*id)),
                    format!("cancel.{id}.*"),
                ];
                (allow(publish), allow(subscribe))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_reaches_only_its_own_subjects() {
        let id = WorkerId::new();
        let (publish, subscribe) = Role::Worker {
            id,
            queues: vec![QueueName::parse("android").unwrap()],
        }
        .permissions();
        assert!(
            publish
                .allow
                .iter()
                .all(|s| !s.contains('>') || s.starts_with("$JS.ACK.BUILDS.queue-android."))
        );
        assert!(publish.allow.iter().all(|s| !s.starts_with("cancel.")));
        assert!(subscribe.allow.iter().all(|s| s.contains(&id.to_string())));
    }

    #[test]
    fn the_reply_connection_cannot_cancel_or_call_jetstream() {
        let (publish, subscribe) = Role::SchedulerReplies.permissions();
        assert_eq!(publish.allow, ["_INBOX.>", "_R_.>"]);
        assert_eq!(subscribe.allow, ["scheduler.*.*"]);
    }
}
