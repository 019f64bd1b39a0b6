//! The lines the farm writes into a build's log (the spec lists them; old clients and scripts
//! look for `Build submitted` first and `Build completed successfully` last). They go on
//! `logs.<build_id>.farm`, which only services may publish on, and are awaited so that they
//! keep their place among the worker's lines.

use crate::ids::{Attempt, BuildId};
use crate::subjects;
use crate::wire::{self, LogLevel, LogLine};

pub const SUBMITTED: &str = "Build submitted";
pub const COMPLETED: &str = "Build completed successfully";
pub const CANCELLED: &str = "Build cancelled by user";

pub fn submitted_retry(original: BuildId) -> String {
    format!("Build submitted (retry of {original})")
}

pub fn assigned(worker_name: &str) -> String {
    format!("Build assigned to {worker_name}")
}

pub fn failed(reason: &str) -> String {
    format!("Build failed: {reason}")
}

/// Hands one farm line to the NATS connection without waiting for JetStream's ack: cheaper on
/// the submit and claim paths, and still ahead of anything this connection publishes next (the
/// wake-up that leads to a dispatch), so `Build submitted` stays the first line.
pub async fn send(
    nats: &async_nats::Client,
    build: BuildId,
    attempt: Attempt,
    level: LogLevel,
    message: impl Into<String>,
) {
    publish(nats, build, attempt, level, message.into(), false).await
}

/// Writes one farm line into `build`'s log and waits for JetStream to store it. Best effort:
/// the database is the record, so a line that cannot be written is logged, never fatal.
pub async fn write(
    nats: &async_nats::Client,
    build: BuildId,
    attempt: Attempt,
    level: LogLevel,
    message: impl Into<String>,
) {
    publish(nats, build, attempt, level, message.into(), true).await
}

async fn publish(
    nats: &async_nats::Client,
    build: BuildId,
    attempt: Attempt,
    level: LogLevel,
    message: String,
    stored: bool,
) {
    let sent = match handed(nats, build, attempt, level, message).await {
        Ok(ack) if stored => crate::nats::stored(ack, subjects::LOGS_STREAM)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        tracing::warn!(build_id = %build, error = %e, "could not write a farm line into the build's log");
    }
}

/// Hands one farm line to the connection; the returned future is JetStream's acknowledgement,
/// for a caller that waits for many lines at once (`announce::moved_many`).
pub async fn handed(
    nats: &async_nats::Client,
    build: BuildId,
    attempt: Attempt,
    level: LogLevel,
    message: String,
) -> Result<async_nats::jetstream::context::PublishAckFuture, String> {
    let line = LogLine {
        build_id: build,
        attempt,
        seq: 0,
        timestamp: chrono::Utc::now(),
        level,
        message,
        stream: None,
    };
    async_nats::jetstream::new(nats.clone())
        .publish(subjects::farm_logs(build), wire::encode(&line).into())
        .await
        .map_err(|e| e.to_string())
}
