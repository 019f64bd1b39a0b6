//! The farm's JetStream streams and queue consumers: their settings, made idempotently by every
//! service at start and brought up to this release's settings (replicas included) on a running
//! farm. Works on NATS 2.9 and later (no multi-filter consumers, no consumer updates).

use super::{Error, classify};
use crate::status::QueueName;
use crate::subjects;
use async_nats::jetstream::{self, consumer, stream};
use backon::Retryable;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct StreamLimits {
    pub logs_max_age: Duration,
    pub logs_max_bytes: i64,
    pub events_max_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
    /// Copies of each stream a NATS cluster keeps (`FREEAGENT_NATS_REPLICAS`); `None` is
    /// [`DEFAULT_CLUSTER_REPLICAS`] on a clustered server and 1 on a single one.
    pub replicas: Option<usize>,
}

/// Replicas of each stream on a clustered server unless set: a stream then outlives the loss
/// of any one node (a quorum of 2 of 3 keeps its leader).
pub const DEFAULT_CLUSTER_REPLICAS: usize = 3;
/// JetStream's own limit on a stream's replicas.
pub const MAX_REPLICAS: usize = 5;

pub const DEFAULT_LOGS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_LOGS_MAX_BYTES: i64 = 1 << 30;
/// Lines one worker may keep in one build's log (the reference worker stops far earlier).
pub const LOGS_MAX_PER_SUBJECT: i64 = 500_000;
/// Largest log message (a line is cut at 16 KiB before it is sent).
pub const LOGS_MAX_MESSAGE: i32 = 64 << 10;
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
            replicas: None,
        }
    }
}

impl StreamLimits {
    /// `FREEAGENT_LOGS_MAX_AGE`, `FREEAGENT_LOGS_MAX_BYTES` and `FREEAGENT_EVENTS_MAX_AGE` (set
    /// the same on the gateway and the scheduler: each brings the streams to its settings). A
    /// finished build's log is archived to object storage, so the LOGS stream only needs to
    /// keep builds until they end and settle.
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        let bytes =
            crate::config::bytes("FREEAGENT_LOGS_MAX_BYTES", DEFAULT_LOGS_MAX_BYTES as u64)?;
        Ok(Self {
            logs_max_age: crate::config::duration("FREEAGENT_LOGS_MAX_AGE", DEFAULT_LOGS_MAX_AGE)?,
            logs_max_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            events_max_age: crate::config::duration(
                "FREEAGENT_EVENTS_MAX_AGE",
                DEFAULT_EVENTS_MAX_AGE,
            )?,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            replicas: replicas_from_env()?,
        })
    }

    /// The replicas of every stream on the server `info` describes.
    pub fn replicas_on(&self, info: &async_nats::ServerInfo) -> usize {
        match (self.replicas, &info.cluster) {
            (Some(n), _) => n,
            (None, Some(_)) => DEFAULT_CLUSTER_REPLICAS,
            (None, None) => 1,
        }
    }
}

/// `FREEAGENT_NATS_REPLICAS`: `auto` (or unset), or 1 to 5.
fn replicas_from_env() -> Result<Option<usize>, crate::config::ConfigError> {
    const NAME: &str = "FREEAGENT_NATS_REPLICAS";
    match crate::config::var(NAME) {
        None => Ok(None),
        Some(v) if v.trim() == "auto" => Ok(None),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(Some(n)),
            _ => Err(crate::config::ConfigError::new(
                NAME,
                &v,
                "auto, or the copies of each stream a NATS cluster keeps: 1 to 5 (3 survives one node lost)",
            )),
        },
    }
}

/// Creates the BUILDS, LOGS and EVENTS streams if they are missing, and brings existing ones to
/// these settings: on a cluster that includes their replicas, so a farm started on R1 streams
/// moves up to R3 at its next start (JetStream copies the data to the new peers in the
/// background; queue consumers follow their stream).
pub async fn ensure_streams(js: &jetstream::Context, limits: &StreamLimits) -> Result<(), Error> {
    let num_replicas = limits.replicas_on(&js.client().server_info());
    let configs = [
        stream::Config {
            name: subjects::BUILDS_STREAM.to_owned(),
            subjects: vec![subjects::BUILDS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas,
            duplicate_window: limits.duplicate_window,
            ..Default::default()
        },
        stream::Config {
            name: subjects::LOGS_STREAM.to_owned(),
            subjects: vec![subjects::LOGS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas,
            max_age: limits.logs_max_age,
            max_bytes: limits.logs_max_bytes,
            // Backstops for a worker that ignores its log caps: no subject (one attempt of one
            // build from one worker) holds more than this, and no line is larger.
            max_messages_per_subject: LOGS_MAX_PER_SUBJECT,
            max_message_size: LOGS_MAX_MESSAGE,
            duplicate_window: limits.duplicate_window,
            republish: Some(live_republish()),
            ..Default::default()
        },
        stream::Config {
            name: subjects::EVENTS_STREAM.to_owned(),
            subjects: vec![subjects::EVENTS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas,
            max_age: limits.events_max_age,
            republish: Some(live_republish()),
            ..Default::default()
        },
    ];
    for config in configs {
        // Services start together and set up the same streams at once. On a fresh account the
        // loser of that race can be told "error creating store", or "stream not found" by the
        // look-up right after the stream was made; a cluster still electing its JetStream
        // leader says "temporarily unavailable": the whole step is asked again.
        (|| ensure_stream(js, &config))
            .retry(
                backon::ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(14),
            )
            .when(|e| matches!(e, Error::Setup(m) if !m.contains("FREEAGENT_NATS_REPLICAS")))
            .notify(|e, after| tracing::info!(error = %e, ?after, "stream set-up raced another service; asking again"))
            .await?;
    }
    Ok(())
}

/// Creates one stream, or brings an existing one up to this release's settings.
async fn ensure_stream(js: &jetstream::Context, wanted: &stream::Config) -> Result<(), Error> {
    let name = &wanted.name;
    let mut config = wanted.clone();
    let mut stream = js
        .get_or_create_stream(config.clone())
        .await
        .map_err(|e| classify(name, e.to_string()))?;
    // A stream made by an older release keeps its old subjects and limits until updated (a
    // stream update works on 2.9; only consumer updates need 2.10).
    let info = stream
        .info()
        .await
        .map_err(|e| classify(name, e.to_string()))?;
    if outdated(&info.config, &config)
        && let Err(e) = js.update_stream(config.clone()).await
    {
        // NATS 2.9 cannot add re-publishing to a stream made without it: keep the rest of
        // the update; the gateways then poll the stream (`gateway::live::feed`).
        if info.config.republish == config.republish
            || !e.to_string().to_lowercase().contains("republish")
        {
            return Err(classify(name, e.to_string()));
        }
        tracing::warn!(
            stream = %name,
            "this NATS server cannot add re-publishing to an existing stream, so live logs and events will be polled (up to 0.1 s later, more load on NATS); to fix, once every finished build's log is archived, delete the stream and restart the farm, or use NATS 2.10 or later"
        );
        config.republish = info.config.republish.clone();
        js.update_stream(config)
            .await
            .map_err(|e| classify(name, e.to_string()))?;
    }
    Ok(())
}

/// Whether a stream's settings on the server differ from what this release wants.
fn outdated(server: &stream::Config, wanted: &stream::Config) -> bool {
    server.subjects != wanted.subjects
        || server.max_age != wanted.max_age
        || (wanted.max_bytes > 0 && server.max_bytes != wanted.max_bytes)
        || server.max_messages_per_subject != wanted.max_messages_per_subject
        || server.max_message_size != wanted.max_message_size
        || server.republish != wanted.republish
        || server.num_replicas != wanted.num_replicas
}

/// Every stored message again on `live.<subject>`, for the gateways' live feeds.
fn live_republish() -> stream::Republish {
    stream::Republish {
        source: ">".into(),
        destination: subjects::LIVE_REPUBLISH.into(),
        headers_only: false,
    }
}

/// How long an idle worker's pull request waits before it is renewed: long, so that a large
/// idle fleet costs the server little (a dead worker's request is dropped when the server finds
/// no interest in its reply subject). On NATS 2.9 every new pull makes the server walk the
/// consumer's waiting requests, one per idle worker.
pub const IDLE_PULL_EXPIRES: Duration = Duration::from_secs(30);

/// How often a worker whose pulls bring nothing asks its queue's consumer whether dispatches
/// wait (a diagnostic, `agent::StallWatch` in the worker). Each answer makes the server walk the
/// consumer's waiting requests (NATS 2.9 `processWaiting`, a subject match per idle worker), so
/// the whole fleet's checks cost O(workers²): at 30 s, 10,000 idle workers asked 333 times a
/// second (docs/benchmarks.md, stop 46).
pub const STALL_CHECK: Duration = Duration::from_secs(600);

/// The queue's consumer as a worker sees it: looked up, never created (a worker may not create
/// consumers; the gateway does when a worker of the queue registers).
pub async fn queue_consumer(
    js: &jetstream::Context,
    queue: &QueueName,
) -> Result<consumer::Consumer<consumer::pull::Config>, Error> {
    let name = subjects::queue_consumer(queue);
    js.get_consumer_from_stream(&name, subjects::BUILDS_STREAM)
        .await
        .map_err(|e| classify(&name, e.to_string()))
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

/// Waits for JetStream to store a publish on `stream`, counted on `/metrics`
/// (`freeagent_jetstream_acks_awaited_total`): each one is a round trip on the path that waits,
/// and the per-build cost budget (`tests/tests/cost_budget.rs`) holds their number.
pub async fn stored(
    ack: jetstream::context::PublishAckFuture,
    stream: &'static str,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    metrics::counter!(crate::metrics::JETSTREAM_ACKS_AWAITED, "stream" => stream).increment(1);
    ack.await
}
