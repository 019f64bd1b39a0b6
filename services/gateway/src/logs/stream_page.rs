//! A page of a JetStream stream after a sequence: the one way the gateway reads the past of
//! `LOGS` and `EVENTS` (log pages, streams catching up, the live feed filling a gap). Each read
//! is a short-lived ephemeral pull consumer without acks, deleted after the page.

use crate::error::{GatewayError, Result};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;
use std::time::Duration;

/// One stored message.
pub struct Stored {
    pub seq: u64,
    pub subject: async_nats::Subject,
    pub payload: bytes::Bytes,
}

/// Page reads in flight per gateway. Each is a consumer the server must also tell about every
/// new message while it lives, so a burst (a thousand followers connecting at once) waits here
/// rather than loading NATS with a thousand consumers at a time.
static IN_FLIGHT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// Up to `limit` messages of `stream` (only those on `filter`, if given) with a sequence above
/// `after`, oldest first. Empty when there are none.
///
/// `not_before`, for a first page (`after` 0): no message on `filter` was stored before this
/// time. The server then starts at that time rather than at the stream's first message: making
/// a filtered consumer costs it a walk over every subject stored from its start (NATS 2.9), so a
/// build's log read from the beginning of a stream of days cost more with every build stored
/// (65 % of the server's CPU in `freeagent-bench throughput`, docs/benchmarks.md).
pub async fn read(
    nats: &async_nats::Client,
    stream: &str,
    filter: Option<String>,
    after: u64,
    not_before: Option<chrono::DateTime<chrono::Utc>>,
    limit: usize,
) -> Result<Vec<Stored>> {
    let _turn = IN_FLIGHT
        .acquire()
        .await
        .map_err(GatewayError::unavailable)?;
    let started = std::time::Instant::now();
    let stream_name = stream;
    let js = async_nats::jetstream::new(nats.clone());
    // No stream info: one request fewer per page.
    let stream = js
        .get_stream_no_info(stream)
        .await
        .map_err(GatewayError::unavailable)?;
    let mut consumer = stream
        .create_consumer(pull::Config {
            filter_subject: filter.unwrap_or_default(),
            deliver_policy: if after == 0 {
                match not_before
                    .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.timestamp()).ok())
                {
                    Some(start_time) => DeliverPolicy::ByStartTime { start_time },
                    None => DeliverPolicy::All,
                }
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                }
            },
            ack_policy: AckPolicy::None,
            // Its state in memory: on a file-stored stream the server would otherwise make a
            // directory and files for each page and remove them after (two thirds of its CPU
            // at 100 builds/s, docs/benchmarks.md).
            memory_storage: true,
            // Deleted below; this is the backstop should the delete not arrive.
            inactive_threshold: Duration::from_secs(5),
            ..Default::default()
        })
        .await
        .map_err(GatewayError::unavailable)?;
    let name = consumer.cached_info().name.clone();
    let page = fetch(&mut consumer, limit).await;
    // Whatever the page's outcome: a consumer left behind costs the server at every message.
    let _ = stream.delete_consumer(&name).await;
    metrics::histogram!(freeagent_shared::metrics::STREAM_PAGE_SECONDS, "stream" => stream_name.to_owned())
        .record(started.elapsed().as_secs_f64());
    page
}

async fn fetch(
    consumer: &mut async_nats::jetstream::consumer::Consumer<pull::Config>,
    limit: usize,
) -> Result<Vec<Stored>> {
    let pending = consumer.cached_info().num_pending as usize;
    let mut out = Vec::new();
    if pending == 0 {
        return Ok(out);
    }
    let wanted = limit.min(pending);
    let mut msgs = consumer
        .fetch()
        .max_messages(wanted)
        .messages()
        .await
        .map_err(GatewayError::unavailable)?;
    let mut received = 0;
    while let Some(m) = msgs.next().await {
        let m = m.map_err(GatewayError::unavailable)?;
        received += 1;
        let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
            continue;
        };
        out.push(Stored {
            seq,
            subject: m.subject.clone(),
            payload: m.payload.clone(),
        });
        if received >= wanted {
            break;
        }
    }
    // The consumer had `wanted` messages ready. A shorter page is fine (readers go on from its
    // last line), but an empty one is read as the end of a log: when the fetch was cut short
    // before anything came (the connection closing at shutdown ends it quietly), that would
    // archive a truncated log. It is an error, and the reader tries again.
    if received == 0 {
        return Err(GatewayError::unavailable(format!(
            "the {} stream answered {received} of {wanted} messages; try again",
            consumer.cached_info().stream_name
        )));
    }
    Ok(out)
}

/// The sequence of the first message of `stream` on any of `subjects` above `after`, if any:
/// one request per subject, no consumer. Literal subjects only: the server finds a literal
/// subject's next message with a look-up per message block, a wildcard's by testing every
/// subject stored.
pub async fn first_after(
    nats: &async_nats::Client,
    stream: &str,
    subjects: &[String],
    after: u64,
) -> Result<Option<u64>> {
    let firsts = futures::future::try_join_all(
        subjects
            .iter()
            .map(|s| first_after_on(nats, stream, s, after)),
    )
    .await?;
    Ok(firsts.into_iter().flatten().min())
}

async fn first_after_on(
    nats: &async_nats::Client,
    stream: &str,
    subject: &str,
    after: u64,
) -> Result<Option<u64>> {
    let js = async_nats::jetstream::new(nats.clone());
    let first = freeagent_shared::nats::first_on(&js, stream, subject, after + 1)
        .await
        .map_err(GatewayError::unavailable)?;
    Ok(first.map(|m| m.sequence))
}

/// The sequence of the last message of `stream` on the literal `subject` (0 when none), as the
/// stream's leader says: a page's consumer may be placed on a copy of the stream that is still
/// catching up (a node just back on a cluster), whose view ends early.
pub async fn last_on(nats: &async_nats::Client, stream: &str, subject: &str) -> Result<u64> {
    let js = async_nats::jetstream::new(nats.clone());
    let last = freeagent_shared::nats::last_on(&js, stream, subject)
        .await
        .map_err(GatewayError::unavailable)?;
    Ok(last.map_or(0, |m| m.sequence))
}
