//! One stream's live feed on this gateway: a plain subscription to what the stream re-publishes
//! (`subjects::LIVE_*`, in stream order, with the stream sequence in `Nats-Sequence`), so a line
//! costs the server one more message rather than a consumer's bookkeeping. Re-published messages
//! are at most once, but a stream's sequences have no holes: a jump shows what the subscription
//! lost (a reconnect, a slow consumer, a missing permission) and the feed reads exactly that from
//! the stream before going on. A look at the stream's last sequence every second catches a loss
//! at the end of a burst, when no later message shows the jump.

use super::Live;
use crate::error::{GatewayError, Result};
use crate::logs::stream_page;
use freeagent_shared::subjects;
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// A stream and where it re-publishes.
#[derive(Clone, Copy)]
pub struct Source {
    pub stream: &'static str,
    pub live: &'static str,
}

pub const LOGS: Source = Source {
    stream: subjects::LOGS_STREAM,
    live: subjects::LIVE_LOGS,
};

pub const EVENTS: Source = Source {
    stream: subjects::EVENTS_STREAM,
    live: subjects::LIVE_EVENTS,
};

/// How often the feed compares what it has with the stream's last sequence.
const CHECK: Duration = Duration::from_secs(1);
/// How often a stream that does not re-publish is read.
const POLL: Duration = Duration::from_millis(100);
/// Messages read per request while filling a gap.
const FILL_PAGE: usize = 1000;
/// At most one warning about refills per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the feed does with each message: `(live, sequence, original subject, payload)`.
pub trait Handler: Fn(&Live, u64, &str, &[u8]) + Send + Sync {}
impl<F: Fn(&Live, u64, &str, &[u8]) + Send + Sync> Handler for F {}

pub struct Feed<H> {
    live: Live,
    nats: async_nats::Client,
    source: Source,
    handle: H,
    /// The last sequence handed on: everything up to it was seen (or is gone from the stream).
    last: Option<u64>,
    warned: Option<Instant>,
}

impl<H: Handler> Feed<H> {
    pub fn new(live: Live, nats: async_nats::Client, source: Source, handle: H) -> Self {
        Feed {
            live,
            nats,
            source,
            handle,
            last: None,
            warned: None,
        }
    }

    /// Runs until `shutdown`, starting again (from the next unseen sequence) after any failure.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            match self.session(&shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(stream = self.source.stream, error = %e.detail(), "live feed interrupted; starting again");
                    if started.elapsed() > Duration::from_secs(30) {
                        delay = Duration::from_millis(100);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One subscription's life; `Ok` at shutdown.
    async fn session(&mut self, shutdown: &CancellationToken) -> Result<()> {
        let mut sub = self
            .nats
            .subscribe(self.source.live)
            .await
            .map_err(GatewayError::unavailable)?;
        let js = async_nats::jetstream::new(self.nats.clone());
        let mut stream = js
            .get_stream(self.source.stream)
            .await
            .map_err(GatewayError::unavailable)?;
        // Subscribed first (same connection, so the server has the subscription): whatever is
        // stored after this reading reaches the subscription, or shows as a jump.
        let info = stream.info().await.map_err(GatewayError::unavailable)?;
        let end = info.state.last_sequence;
        // A stream made before re-publishing (NATS 2.9 cannot add it) is polled instead.
        let polled = info.config.republish.is_none();
        if polled {
            tracing::warn!(
                stream = self.source.stream,
                "the stream does not re-publish (made by an older release); polling it every 100 ms"
            );
        }
        match self.last {
            None => {
                tracing::debug!(
                    stream = self.source.stream,
                    from = end + 1,
                    "live feed started"
                );
                self.last = Some(end);
                self.live.feed_started();
            }
            Some(_) => self.fill(end).await?,
        }
        // The stream's last sequence, read beside the feed so a slow answer never holds it up.
        let (ends_tx, mut ends) = tokio::sync::watch::channel(end);
        let every = if polled { POLL } else { CHECK };
        let _reader = AbortOnDropHandle::new(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.reset();
            loop {
                tick.tick().await;
                match last_sequence(&mut stream).await {
                    Ok(end) => {
                        if ends_tx.send(end).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e.detail(), "live feed: cannot read the stream's end")
                    }
                }
            }
        }));
        // The stream's last sequence at the previous reading, if the feed had not reached it.
        let mut behind: Option<u64> = None;
        loop {
            tokio::select! {
                m = sub.next() => {
                    let Some(m) = m else {
                        return Err(GatewayError::unavailable("the live subscription ended"));
                    };
                    let Some((seq, subject)) = self.stored_as(&m) else {
                        continue;
                    };
                    let last = self.last.unwrap_or(0);
                    if seq <= last {
                        continue;
                    }
                    if seq > last + 1 {
                        self.fill(seq - 1).await?;
                    }
                    (self.handle)(&self.live, seq, subject, &m.payload);
                    self.last = Some(seq);
                }
                changed = ends.changed() => {
                    if changed.is_err() {
                        return Err(GatewayError::unavailable("the live feed's stream reader stopped"));
                    }
                    let end = *ends.borrow_and_update();
                    if polled {
                        self.fill(end).await?;
                        continue;
                    }
                    // Still short of what the stream had a reading ago: the subscription lost it.
                    if let Some(target) = behind.take() && self.last.unwrap_or(0) < target {
                        self.warn_refill(target);
                        self.fill(target).await?;
                    }
                    behind = (end > self.last.unwrap_or(0)).then_some(end);
                }
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// A re-published message's stream sequence and original subject. The subject comes from
    /// the one the server re-published on (`live.<subject>`), never from a header a publisher
    /// could have set; the sequence is the server's (last) `Nats-Sequence`.
    fn stored_as<'m>(&self, m: &'m async_nats::Message) -> Option<(u64, &'m str)> {
        let subject = m.subject.strip_prefix("live.")?;
        if last_header(m, "Nats-Stream") != Some(self.source.stream) {
            return None;
        }
        let seq = last_header(m, "Nats-Sequence")?.parse().ok()?;
        Some((seq, subject))
    }

    /// Hands on every stored message after the last one up to `to`, read from the stream.
    async fn fill(&mut self, to: u64) -> Result<()> {
        let mut last = self.last.unwrap_or(0);
        let mut filled = 0u64;
        while last < to {
            let page = stream_page::read(
                &self.nats,
                self.source.stream,
                None,
                last,
                None,
                FILL_PAGE.min((to - last) as usize),
            )
            .await?;
            if page.is_empty() {
                // The rest is gone from the stream (limits) or not stored yet.
                break;
            }
            for m in page {
                if m.seq > last {
                    (self.handle)(&self.live, m.seq, &m.subject, &m.payload);
                    last = m.seq;
                    filled += 1;
                }
            }
            self.last = Some(last);
        }
        self.last = Some(last.max(to));
        metrics::counter!("freeagent_live_feed_refilled_total", "stream" => self.source.stream)
            .increment(filled);
        Ok(())
    }

    fn warn_refill(&mut self, target: u64) {
        if self.warned.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        self.warned = Some(Instant::now());
        tracing::warn!(
            stream = self.source.stream,
            from = self.last.unwrap_or(0) + 1,
            to = target,
            subject = self.source.live,
            "the live feed is reading from the stream what its subscription did not bring; if this repeats, the gateway's NATS user may lack permission to subscribe to it (re-run `freeagent nats-config`)"
        );
    }
}

async fn last_sequence(stream: &mut async_nats::jetstream::stream::Stream) -> Result<u64> {
    Ok(stream
        .info()
        .await
        .map_err(GatewayError::unavailable)?
        .state
        .last_sequence)
}

/// The last value of a header: the server appends its own re-publish headers after the
/// publisher's, so a worker that sends its own `Nats-Sequence` is not believed.
fn last_header<'a>(m: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    m.headers.as_ref()?.get_last(name).map(|v| v.as_str())
}
