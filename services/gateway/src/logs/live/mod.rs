//! The gateway's live feed: one subscription to what `LOGS` and one to what `EVENTS` re-publish
//! per gateway (`feed`), fanned out to every open stream (log followers, `/api/events` clients)
//! through bounded channels. A client that does not keep up fills its channel and is dropped with a
//! reason (it resumes with `Last-Event-ID`); the feed never waits for a client, and no client's
//! backlog grows past its channel.
//!
//! No gap: a stream subscribes here first and reads the past from the stream after, so a line
//! is in one or the other (or both: streams skip sequences they already sent). The feed hands
//! on every sequence in order, reading from the stream whatever its subscription lost.

mod feed;
mod recent;
pub mod status_check;

use crate::config::RecentLimits;
use feed::Feed;
use freeagent_shared::events::FarmEvent;
use freeagent_shared::ids::BuildId;
use freeagent_shared::subjects::{self, LogWriter};
use freeagent_shared::wire::{self, LogLine};
use recent::Recent;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages a client may have waiting before it counts as too slow.
pub const CLIENT_BACKLOG: usize = 4096;

/// How long a new stream waits for the feeds to start (a gateway just started, NATS slow).
pub const START_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A line as it arrived: its stream sequence and writer (the follower checks the writer held
/// the attempt).
#[derive(Debug)]
pub struct LiveLine {
    pub seq: u64,
    pub writer: LogWriter,
    pub line: LogLine,
    /// The line as a whole `log` event (`api::LogEntry`), rendered once for every follower.
    pub sse: bytes::Bytes,
    /// When this gateway got it: a holder read after this sees the claim the line depends on.
    pub received: std::time::Instant,
}

/// What a log follower hears.
#[derive(Debug, Clone)]
pub enum BuildNews {
    Line(Arc<LiveLine>),
    Event(Arc<(u64, FarmEvent)>),
    /// The build's status as read from the database (`status_check`); None: the build is gone.
    Checked {
        status: Option<freeagent_shared::status::BuildStatus>,
        /// When the read began: it may predate a status the follower already had.
        read_at: std::time::Instant,
    },
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

/// Who listens to what, and each build's recent lines.
#[derive(Default)]
struct Registry {
    builds: HashMap<BuildId, Vec<Sub<BuildNews>>>,
    events: Vec<Sub<Arc<(u64, FarmEvent)>>>,
    recent: Recent,
    /// The gateway is stopping: every stream was closed, and a new one is closed at once.
    closed: bool,
}

#[derive(Clone)]
pub struct Live {
    registry: Arc<Mutex<Registry>>,
    next_id: Arc<AtomicU64>,
    /// Woken at every build that reaches a terminal status (the log archiver listens).
    pub finished: Arc<tokio::sync::Notify>,
    /// How many feeds know where they start (`feed::Feed`); a client subscribed before both do
    /// could read the past up to a point the feed then starts after, and lose what lies between.
    started: Arc<tokio::sync::watch::Sender<usize>>,
}

/// The feeds a client waits for: logs and events.
const FEEDS: usize = 2;

enum Key {
    Build(BuildId, u64),
    Events(u64),
}

struct Unsubscribe {
    registry: Arc<Mutex<Registry>>,
    key: Key,
}

impl Unsubscribe {
    fn new(registry: Arc<Mutex<Registry>>, key: Key) -> Self {
        key.gauge().increment(1);
        Unsubscribe { registry, key }
    }
}

impl Key {
    /// The open streams of this kind, on `/metrics`.
    fn gauge(&self) -> metrics::Gauge {
        let kind = match self {
            Key::Build(..) => "log",
            Key::Events(_) => "events",
        };
        metrics::gauge!("freeagent_live_clients", "kind" => kind)
    }
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.key.gauge().decrement(1);
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
        Self::new(RecentLimits::default())
    }
}

impl Live {
    pub fn new(recent: RecentLimits) -> Self {
        Live {
            registry: Arc::new(Mutex::new(Registry {
                recent: Recent::new(recent),
                ..Default::default()
            })),
            next_id: Arc::new(AtomicU64::new(1)),
            finished: Arc::default(),
            started: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// Waits (up to `limit`) until every feed knows where it starts: only then does a client's
    /// subscription plus its read of the past leave no gap. False when they have not by then.
    pub async fn started(&self, limit: std::time::Duration) -> bool {
        let mut rx = self.started.subscribe();
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|n| *n >= FEEDS)).await,
            Ok(Ok(_))
        )
    }

    /// A feed knows where it starts.
    fn feed_started(&self) {
        self.started.send_modify(|n| *n += 1);
    }

    /// Lines and events of one build from now on, and the lines of it this gateway holds
    /// (oldest first; see `recent`): taken together, so none falls between the two.
    pub fn build(&self, build: BuildId) -> (Subscription<BuildNews>, Vec<Arc<LiveLine>>) {
        let (id, tx, rx, too_slow) = self.channel();
        let mut held = Vec::new();
        if let Ok(mut r) = self.registry.lock()
            && !r.closed
        {
            r.builds.entry(build).or_default().push(Sub {
                id,
                tx,
                too_slow: too_slow.clone(),
            });
            held = r.recent.lines(build);
        }
        let sub = Subscription {
            rx,
            too_slow,
            _guard: Unsubscribe::new(self.registry.clone(), Key::Build(build, id)),
        };
        (sub, held)
    }

    /// The lines of `build` this gateway holds, oldest first (see `recent`).
    pub fn held(&self, build: BuildId) -> Vec<Arc<LiveLine>> {
        self.registry
            .lock()
            .map(|r| r.recent.lines(build))
            .unwrap_or_default()
    }

    /// The build's log is archived: its lines need not be held any more.
    pub fn archived(&self, build: BuildId) {
        if let Ok(mut r) = self.registry.lock() {
            r.recent.forget(build);
        }
    }

    /// Every farm event, from now on (the caller filters).
    pub fn events(&self) -> Subscription<Arc<(u64, FarmEvent)>> {
        let (id, tx, rx, too_slow) = self.channel();
        if let Ok(mut r) = self.registry.lock()
            && !r.closed
        {
            r.events.push(Sub {
                id,
                tx,
                too_slow: too_slow.clone(),
            });
        }
        Subscription {
            rx,
            too_slow,
            _guard: Unsubscribe::new(self.registry.clone(), Key::Events(id)),
        }
    }

    fn channel<T>(&self) -> (u64, mpsc::Sender<T>, mpsc::Receiver<T>, Arc<AtomicBool>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CLIENT_BACKLOG);
        (id, tx, rx, Arc::default())
    }

    /// The builds that have followers on this gateway.
    pub fn followed(&self) -> Vec<BuildId> {
        self.registry
            .lock()
            .map(|r| r.builds.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Hands `news` to every follower of `build`.
    fn deliver_news(&self, build: BuildId, news: BuildNews) {
        let Ok(mut r) = self.registry.lock() else {
            return;
        };
        if let Some(subs) = r.builds.get_mut(&build) {
            subs.retain(|s| s.offer(news.clone()));
        }
    }

    fn deliver_line(&self, line: LiveLine) {
        let Ok(mut r) = self.registry.lock() else {
            return;
        };
        let build = line.line.build_id;
        let line = Arc::new(line);
        r.recent.push(line.clone());
        let Some(subs) = r.builds.get_mut(&build) else {
            return;
        };
        let news = BuildNews::Line(line);
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
        if let FarmEvent::Build(b) = &event
            && b.status.is_terminal()
        {
            // Kept a while for the archiver; followers of an ended build read the stream, then
            // the archive.
            r.recent.ended(b.build_id, std::time::Instant::now());
        }
        let event = Arc::new((seq, event));
        r.events.retain(|s| s.offer(event.clone()));
        if let Some(b) = build
            && let Some(subs) = r.builds.get_mut(&b)
        {
            let news = BuildNews::Event(event);
            subs.retain(|s| s.offer(news.clone()));
        }
    }

    /// Runs the two feeds and the status check until `shutdown`.
    pub async fn run(
        self,
        nats: async_nats::Client,
        pool: freeagent_shared::db::Pool,
        shutdown: CancellationToken,
    ) {
        let logs = Feed::new(self.clone(), nats.clone(), feed::LOGS, on_log).run(shutdown.clone());
        let events = Feed::new(self.clone(), nats, feed::EVENTS, on_event).run(shutdown.clone());
        let statuses = status_check::run(self.clone(), pool, status_check::EVERY, shutdown);
        tokio::join!(logs, events, statuses);
        self.close_all();
    }

    /// Ends every open stream (each says the gateway is stopping, and its client reconnects,
    /// to another gateway or this one restarted) rather than let them hold the shutdown open.
    fn close_all(&self) {
        if let Ok(mut r) = self.registry.lock() {
            r.closed = true;
            r.builds.clear();
            r.events.clear();
        }
    }
}

/// A LOGS message: a line of the build its subject names, by the writer its subject names.
fn on_log(live: &Live, seq: u64, subject: &str, payload: &[u8]) {
    let Some(writer) = subjects::log_writer(subject) else {
        return;
    };
    let Ok(line) = wire::decode::<LogLine>(payload) else {
        return;
    };
    if subjects::log_build(subject) != Some(line.build_id) {
        return;
    }
    let entry = freeagent_shared::api::LogEntry {
        seq,
        timestamp: line.timestamp,
        level: line.level,
        message: line.message.clone(),
        attempt: line.attempt,
        stream: line.stream,
    };
    let sse = crate::http::sse::event(
        "log",
        Some(seq),
        &serde_json::to_string(&entry).unwrap_or_default(),
    );
    live.deliver_line(LiveLine {
        seq,
        writer,
        line,
        sse,
        received: std::time::Instant::now(),
    });
}

fn on_event(live: &Live, seq: u64, _subject: &str, payload: &[u8]) {
    if let Ok(e) = wire::decode::<FarmEvent>(payload) {
        live.deliver_event(seq, e);
    }
}
