//! The gateway's live feed: one ordered (push, flow-controlled) JetStream consumer on `LOGS` and
//! one on `EVENTS` per gateway, fanned out to every open stream (log followers, `/api/events` clients) through
//! bounded channels. A client that does not keep up fills its channel and is dropped with a
//! reason (it resumes with `Last-Event-ID`); the feed never waits for a client, and no client's
//! backlog grows past its channel.
//!
//! No gap: a stream subscribes here first and reads the past from the stream after, so a line
//! is in one or the other (or both: streams skip sequences they already sent). If a consumer
//! fails, the feed makes a new one from the next sequence it has not seen.

use async_nats::jetstream::consumer::{DeliverPolicy, push};
use freeagent_shared::events::FarmEvent;
use freeagent_shared::ids::BuildId;
use freeagent_shared::subjects::{self, LogWriter};
use freeagent_shared::wire::{self, LogLine};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages a client may have waiting before it counts as too slow.
pub const CLIENT_BACKLOG: usize = 4096;

/// A line as it arrived: its stream sequence and writer (the follower checks the writer held
/// the attempt).
#[derive(Debug)]
pub struct LiveLine {
    pub seq: u64,
    pub writer: LogWriter,
    pub line: LogLine,
    /// The line as a `log` event's data (`api::LogEntry`), serialised once for every follower.
    pub json: String,
    /// When this gateway got it: a holder read after this sees the claim the line depends on.
    pub received: std::time::Instant,
}

/// What a log follower hears.
#[derive(Debug, Clone)]
pub enum BuildNews {
    Line(Arc<LiveLine>),
    Event(Arc<(u64, FarmEvent)>),
}

/// A client's end of the feed. Dropping it unsubscribes.
pub struct Subscription<T> {
    pub rx: mpsc::Receiver<T>,
    /// Set when the feed dropped this client for falling behind.
    pub too_slow: Arc<AtomicBool>,
    _guard: Unsubscribe,
}

struct Sub<T> {
    id: u64,
    tx: mpsc::Sender<T>,
    too_slow: Arc<AtomicBool>,
}

impl<T> Sub<T> {
    /// Hands `msg` over; false when the client is gone or too slow (then it is removed).
    fn offer(&self, msg: T) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.too_slow.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Who listens to what.
#[derive(Default)]
struct Registry {
    builds: HashMap<BuildId, Vec<Sub<BuildNews>>>,
    events: Vec<Sub<Arc<(u64, FarmEvent)>>>,
}

#[derive(Clone)]
pub struct Live {
    registry: Arc<Mutex<Registry>>,
    next_id: Arc<AtomicU64>,
    /// Woken at every build that reaches a terminal status (the log archiver listens).
    pub finished: Arc<tokio::sync::Notify>,
}

enum Key {
    Build(BuildId, u64),
    Events(u64),
}

struct Unsubscribe {
    registry: Arc<Mutex<Registry>>,
    key: Key,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Ok(mut r) = self.registry.lock() else {
            return;
        };
        match self.key {
            Key::Build(b, id) => {
                if let Some(subs) = r.builds.get_mut(&b) {
                    subs.retain(|s| s.id != id);
                    if subs.is_empty() {
                        r.builds.remove(&b);
                    }
                }
            }
            Key::Events(id) => r.events.retain(|s| s.id != id),
        }
    }
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    pub fn new() -> Self {
        Live {
            registry: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            finished: Arc::default(),
        }
    }

    /// Lines and events of one build, from now on.
    pub fn build(&self, build: BuildId) -> Subscription<BuildNews> {
        let (id, tx, rx, too_slow) = self.channel();
        if let Ok(mut r) = self.registry.lock() {
            r.builds.entry(build).or_default().push(Sub {
                id,
                tx,
                too_slow: too_slow.clone(),
            });
        }
        Subscription {
            rx,
            too_slow,
            _guard: Unsubscribe {
                registry: self.registry.clone(),
                key: Key::Build(build, id),
            },
        }
    }

    /// Every farm event, from now on (the caller filters).
    pub fn events(&self) -> Subscription<Arc<(u64, FarmEvent)>> {
        let (id, tx, rx, too_slow) = self.channel();
        if let Ok(mut r) = self.registry.lock() {
            r.events.push(Sub {
                id,
                tx,
                too_slow: too_slow.clone(),
            });
        }
        Subscription {
            rx,
            too_slow,
            _guard: Unsubscribe {
                registry: self.registry.clone(),
                key: Key::Events(id),
            },
        }
    }

    fn channel<T>(&self) -> (u64, mpsc::Sender<T>, mpsc::Receiver<T>, Arc<AtomicBool>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CLIENT_BACKLOG);
        (id, tx, rx, Arc::default())
    }

    /// Open streams, for `/metrics`.
    pub fn clients(&self) -> usize {
        self.registry
            .lock()
            .map(|r| r.events.len() + r.builds.values().map(Vec::len).sum::<usize>())
            .unwrap_or(0)
    }

    fn deliver_line(&self, line: LiveLine) {
        let Ok(mut r) = self.registry.lock() else {
            return;
        };
        let Some(subs) = r.builds.get_mut(&line.line.build_id) else {
            return;
        };
        let news = BuildNews::Line(Arc::new(line));
        subs.retain(|s| s.offer(news.clone()));
    }

    fn deliver_event(&self, seq: u64, event: FarmEvent) {
        if let FarmEvent::Build(b) = &event
            && b.status.is_terminal()
        {
            self.finished.notify_one();
        }
        let Ok(mut r) = self.registry.lock() else {
            return;
        };
        let build = event.build_id();
        let event = Arc::new((seq, event));
        r.events.retain(|s| s.offer(event.clone()));
        if let Some(b) = build
            && let Some(subs) = r.builds.get_mut(&b)
        {
            let news = BuildNews::Event(event);
            subs.retain(|s| s.offer(news.clone()));
        }
    }

    /// Runs the two feeds until `shutdown`.
    pub async fn run(self, nats: async_nats::Client, shutdown: CancellationToken) {
        let logs = self.clone().feed(
            nats.clone(),
            subjects::LOGS_STREAM,
            shutdown.clone(),
            |live, seq, m| {
                let Some(writer) = subjects::log_writer(&m.subject) else {
                    return;
                };
                if let Ok(line) = wire::decode::<LogLine>(&m.payload)
                    && subjects::log_build(&m.subject) == Some(line.build_id)
                {
                    let entry = freeagent_shared::api::LogEntry {
                        seq,
                        timestamp: line.timestamp,
                        level: line.level,
                        message: line.message.clone(),
                        attempt: line.attempt,
                    };
                    let json = serde_json::to_string(&entry).unwrap_or_default();
                    live.deliver_line(LiveLine {
                        seq,
                        writer,
                        line,
                        json,
                        received: std::time::Instant::now(),
                    });
                }
            },
        );
        let events = self
            .clone()
            .feed(nats, subjects::EVENTS_STREAM, shutdown, |live, seq, m| {
                if let Ok(e) = wire::decode::<FarmEvent>(&m.payload) {
                    live.deliver_event(seq, e);
                }
            });
        tokio::join!(logs, events);
    }

    /// One stream's feed: an ordered consumer from the next unseen sequence, made again after
    /// any failure.
    async fn feed(
        self,
        nats: async_nats::Client,
        stream_name: &'static str,
        shutdown: CancellationToken,
        handle: impl Fn(&Live, u64, &async_nats::jetstream::Message),
    ) {
        let js = async_nats::jetstream::new(nats.clone());
        let mut last: Option<u64> = None;
        let mut delay = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let messages = async {
                let mut stream = js
                    .get_stream(stream_name)
                    .await
                    .map_err(|e| e.to_string())?;
                // From the stream's end at the first start; from the next unseen one after.
                let from = match last {
                    Some(seq) => seq + 1,
                    None => {
                        let info = stream.info().await.map_err(|e| e.to_string())?;
                        info.state.last_sequence + 1
                    }
                };
                // Push with flow control: the server streams as fast as the feed reads.
                let consumer = stream
                    .create_consumer(push::OrderedConfig {
                        deliver_subject: nats.new_inbox(),
                        deliver_policy: DeliverPolicy::ByStartSequence {
                            start_sequence: from,
                        },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let messages = consumer.messages().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((from, messages))
            };
            let mut messages = tokio::select! {
                m = messages => match m {
                    Ok((from, m)) => {
                        tracing::debug!(stream = stream_name, from, "live feed started");
                        last = Some(from - 1);
                        m
                    }
                    Err(e) => {
                        tracing::warn!(stream = stream_name, error = %e, "live feed cannot start; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.cancelled() => return,
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            delay = Duration::from_millis(100);
            loop {
                let next = tokio::select! {
                    n = messages.next() => n,
                    _ = shutdown.cancelled() => return,
                };
                match next {
                    Some(Ok(m)) => {
                        let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
                            continue;
                        };
                        last = Some(seq);
                        handle(&self, seq, &m);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(stream = stream_name, error = %e, "live feed interrupted; resuming");
                        break;
                    }
                    None => break,
                }
            }
        }
    }
}
