//! What the farm says after a build's transition, in one order whichever service made it: the
//! farm's line in the build's log first (a follower that sees the event can count on the line
//! being stored), then the event, then, for a new build, the scheduler's wake-up. Best effort:
//! the database is the record, so a message that cannot be sent is logged, never fatal.
//! Transitions of many rows at once (the rescuer's, a heartbeat batch's) announce from the
//! columns their statement returned, in the scheduler's `events`.

use crate::db::builds::Build;
use crate::events::{self, BuildChange, FarmEvent};
use crate::farm_log;
use crate::subjects;
use crate::wire::LogLevel;

/// The farm's line that goes with a transition.
pub struct Line {
    pub level: LogLevel,
    pub message: String,
    /// Wait for JetStream to store it (an outcome), or hand it to the connection and go on (the
    /// submit and claim paths, where the latency is the farm's).
    pub stored: bool,
}

impl Line {
    pub fn sent(level: LogLevel, message: impl Into<String>) -> Self {
        Line {
            level,
            message: message.into(),
            stored: false,
        }
    }
    pub fn stored(level: LogLevel, message: impl Into<String>) -> Self {
        Line {
            level,
            message: message.into(),
            stored: true,
        }
    }
}

/// Announces that `b` moved into its status (`BuildChange::into_status`).
pub async fn moved(nats: &async_nats::Client, b: &Build, line: Option<Line>) {
    announce(nats, b, BuildChange::into_status(b.status), line).await
}

/// Announces a new build (a submission or a retry), and wakes the schedulers for its queue.
/// The scheduler also ticks, so a lost wake-up only delays the dispatch.
pub async fn submitted(nats: &async_nats::Client, b: &Build, line: Line) {
    // Before the wake-up, on this connection: `submitted` is the build's first event.
    announce(nats, b, BuildChange::Submitted, Some(line)).await;
    if let Err(e) = nats
        .publish(subjects::WAKE, b.queue.to_string().into())
        .await
    {
        tracing::warn!(build_id = %b.id, error = %e, "could not wake the scheduler");
    }
}

/// Announces many one-row transitions at once (a batch's): every line handed to the connection,
/// their acknowledgements awaited together, then every event. Each build's line still goes
/// before its event, for one round trip in all rather than one per build.
pub async fn moved_many(nats: &async_nats::Client, moved: Vec<(&Build, Option<Line>)>) {
    let mut acks = Vec::new();
    for (b, line) in &moved {
        let Some(l) = line else { continue };
        match farm_log::handed(nats, b.id, b.attempt, l.level, l.message.clone()).await {
            Ok(ack) if l.stored => acks.push((b.id, ack)),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(build_id = %b.id, error = %e, "could not write a farm line into the build's log")
            }
        }
    }
    let stored = acks.into_iter().map(|(id, ack)| async move {
        if let Err(e) = crate::nats::stored(ack, crate::subjects::LOGS_STREAM).await {
            tracing::warn!(build_id = %id, error = %e, "could not write a farm line into the build's log");
        }
    });
    futures::future::join_all(stored).await;
    for (b, _) in &moved {
        events::publish(
            nats,
            &FarmEvent::build(b, BuildChange::into_status(b.status)),
        )
        .await;
    }
}

async fn announce(nats: &async_nats::Client, b: &Build, change: BuildChange, line: Option<Line>) {
    if let Some(l) = line {
        if l.stored {
            farm_log::write(nats, b.id, b.attempt, l.level, l.message).await;
        } else {
            farm_log::send(nats, b.id, b.attempt, l.level, l.message).await;
        }
    }
    events::publish(nats, &FarmEvent::build(b, change)).await;
}
