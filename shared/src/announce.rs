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

/// Announces again that `b` moved into its status, each part only if its stream lacks it: for a
/// replayed report, whose first announcement may have died with the service that recorded the
/// transition (killed between its commit and its publish; the reply was lost with it, so the
/// holder asks again). The stream is the judge: the build's last event (`events.build.<id>`)
/// names this status and attempt, or the build's last farm line is this one. When the stream
/// cannot be read, both go out: a line or event twice beats one missing.
pub async fn moved_again(nats: &async_nats::Client, b: &Build, line: Option<Line>) {
    let js = async_nats::jetstream::new(nats.clone());
    let last_event =
        crate::nats::last_on(&js, subjects::EVENTS_STREAM, &subjects::build_events(b.id)).await;
    let announced = matches!(&last_event, Ok(Some(m)) if matches!(
        crate::wire::decode::<FarmEvent>(&m.payload),
        Ok(FarmEvent::Build(e)) if e.status == b.status && e.attempt == b.attempt
    ));
    if announced {
        return;
    }
    let line = match line {
        Some(l) => {
            let last_line =
                crate::nats::last_on(&js, subjects::LOGS_STREAM, &subjects::farm_logs(b.id)).await;
            let written = matches!(&last_line, Ok(Some(m)) if matches!(
                crate::wire::decode::<crate::wire::LogLine>(&m.payload),
                Ok(stored) if stored.attempt == b.attempt && stored.message == l.message
            ));
            (!written).then_some(l)
        }
        None => None,
    };
    tracing::info!(build_id = %b.id, status = %b.status, line = line.is_some(), "a replayed report found its transition unannounced; announcing it now");
    announce(nats, b, BuildChange::into_status(b.status), line).await;
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
