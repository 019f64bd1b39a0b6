//! NATS: connecting with an actionable error, and the idempotent set-up of the JetStream streams
//! and queue consumers every service relies on. Works on NATS 2.9 and later (no multi-filter
//! consumers, no consumer updates).

use crate::status::QueueName;
use crate::subjects;
use async_nats::jetstream::{self, consumer, stream};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach NATS at {url}: {reason}. Start it (`nats-server -js`) or set FREEAGENT_NATS_URL"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "JetStream is not available on the NATS server ({0}); start nats-server with -js (or `jetstream {{}}` in its config)"
    )]
    NoJetStream(String),
    #[error("JetStream set-up failed: {0}")]
    Setup(String),
}

/// Stream limits, with defaults that suit one machine.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    pub logs_max_age: Duration,
    pub logs_max_bytes: i64,
    pub events_max_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
}

pub const DEFAULT_LOGS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_LOGS_MAX_BYTES: i64 = 1 << 30;
pub const DEFAULT_EVENTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Unacked dispatches a queue consumer allows: at least the fleet size.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 10_000;
/// A worker that took a dispatch must claim (and ack) within this, or it is redelivered.
/// Pull requests a queue's consumer holds at once: one per idle worker.
pub const DEFAULT_MAX_WAITING: i64 = 100_000;
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            logs_max_age: DEFAULT_LOGS_MAX_AGE,
            logs_max_bytes: DEFAULT_LOGS_MAX_BYTES,
            events_max_age: DEFAULT_EVENTS_MAX_AGE,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        }
    }
}

/// Connects, retrying in the background once connected; fails fast if the first attempt fails.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, Error> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .connect(url)
        .await
        .map_err(|e| Error::Unreachable {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}

/// Creates the BUILDS, LOGS and EVENTS streams if they are missing.
pub async fn ensure_streams(js: &jetstream::Context, limits: &StreamLimits) -> Result<(), Error> {
    let configs = [
        stream::Config {
            name: subjects::BUILDS_STREAM.to_owned(),
            subjects: vec![subjects::BUILDS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: limits.duplicate_window,
            ..Default::default()
        },
        stream::Config {
            name: subjects::LOGS_STREAM.to_owned(),
            subjects: vec![subjects::LOGS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: limits.logs_max_age,
            max_bytes: limits.logs_max_bytes,
            duplicate_window: limits.duplicate_window,
            ..Default::default()
        },
        stream::Config {
            name: subjects::EVENTS_STREAM.to_owned(),
            subjects: vec![subjects::EVENTS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: limits.events_max_age,
            ..Default::default()
        },
    ];
    for config in configs {
        let name = config.name.clone();
        js.get_or_create_stream(config)
            .await
            .map_err(|e| classify(&name, e.to_string()))?;
    }
    Ok(())
}

fn classify(what: &str, msg: String) -> Error {
    let lower = msg.to_lowercase();
    if lower.contains("jetstream not enabled")
        || lower.contains("no responders")
        || lower.contains("503")
    {
        Error::NoJetStream(msg)
    } else {
        Error::Setup(format!("{what}: {msg}"))
    }
}

/// The durable pull consumer shared by every worker of `queue`.
pub async fn ensure_queue_consumer(
    js: &jetstream::Context,
    queue: &QueueName,
) -> Result<consumer::Consumer<consumer::pull::Config>, Error> {
    let stream = js
        .get_stream(subjects::BUILDS_STREAM)
        .await
        .map_err(|e| classify(subjects::BUILDS_STREAM, e.to_string()))?;
    let name = subjects::queue_consumer(queue);
    stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subjects::dispatch(queue),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: DEFAULT_ACK_WAIT,
                max_ack_pending: DEFAULT_MAX_ACK_PENDING,
                // Every idle worker of the queue keeps a pull request waiting; the server's
                // default (512) would refuse the rest of a large fleet.
                max_waiting: DEFAULT_MAX_WAITING,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| classify(&name, e.to_string()))
}
