//! A build's output, line by line, to `logs.<build_id>.<worker_id>` on JetStream (the only log
//! subjects this worker may publish on). Publishes are pipelined: up to `IN_FLIGHT` acks
//! outstanding, all awaited before the build reports its outcome, so a completed build's log is
//! complete. A line whose ack fails (the connection broke with it) is sent again, so a NATS
//! restart or a broken connection loses no line; the lines lost with a connection then come
//! after those that were still on their way (a line stored whose ack was lost shows twice).
//! A build's log is capped (`LogCaps`) so one build cannot flood the stream other
//! builds' logs live in: lines go out at most at the rate, and a burst over it waits in a spool
//! on disk (`crate::log_spool`), bounded to `LogCaps::spool_secs` of the rate; past that, and past the
//! byte cap, lines in the middle are dropped, never the last ones, with a note of how many and
//! where.

use crate::log_spool::{Backlog, Bounds, Gap, Item, Line, Why};
use backon::Retryable;
use chrono::Utc;
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::subjects;
use freeagent_shared::wire::{self, LogLevel, LogLine};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const IN_FLIGHT: usize = 256;
const QUEUE: usize = 1024;
/// One line's text is cut here (a line is one NATS message).
pub const MAX_LINE: usize = 16 << 10;
/// The spool holds at most this much disk.
pub const SPOOL_MAX_BYTES: u64 = 64 << 20;
/// The newest lines kept whatever was dropped before them (where a compiler prints its error).
pub const TAIL_LINES: usize = 1000;
pub const TAIL_MAX_BYTES: usize = 1 << 20;

/// What one build may write to its log.
#[derive(Debug, Clone, Copy)]
pub struct LogCaps {
    /// Bytes of message text in all; past it only the last lines are kept.
    pub max_bytes: u64,
    /// Lines per second published (bursts of this many); more wait in the spool.
    pub lines_per_sec: u32,
    /// The spool holds this many seconds of the rate: the longest a build's outcome waits for
    /// its log to catch up after a burst.
    pub spool_secs: u32,
}

pub const DEFAULT_LOG_CAPS: LogCaps = LogCaps {
    max_bytes: 64 << 20,
    lines_per_sec: 2_000,
    spool_secs: 30,
};

impl LogCaps {
    fn bounds(&self) -> Bounds {
        Bounds {
            spool_lines: u64::from(self.lines_per_sec.max(1)) * u64::from(self.spool_secs),
            spool_bytes: SPOOL_MAX_BYTES,
            tail_lines: TAIL_LINES,
            tail_bytes: TAIL_MAX_BYTES,
        }
    }
}

#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<(LogLevel, String)>,
}

impl LogSink {
    pub async fn line(&self, level: LogLevel, message: impl Into<String>) {
        // A closed sink means the build is over; nothing to do.
        let _ = self.tx.send((level, message.into())).await;
    }
}

/// The rate: a token bucket of lines, refilled at `lines_per_sec` up to that many.
struct Rate {
    per_sec: f64,
    tokens: f64,
    refilled: Instant,
}

impl Rate {
    fn new(lines_per_sec: u32, now: Instant) -> Self {
        let per_sec = f64::from(lines_per_sec.max(1));
        Rate {
            per_sec,
            tokens: per_sec,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        self.refilled = now;
    }

    /// Takes one line's token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// How long until the next token.
    fn next_in(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.per_sec).max(0.0))
            .max(Duration::from_millis(1))
    }
}

/// Starts the publisher; dropping every `LogSink` ends it, and the handle yields the line count.
pub fn start(
    js: async_nats::jetstream::Context,
    build_id: BuildId,
    worker: WorkerId,
    attempt: Attempt,
    caps: LogCaps,
) -> (LogSink, JoinHandle<u64>) {
    let (tx, mut rx) = mpsc::channel::<(LogLevel, String)>(QUEUE);
    let handle = tokio::spawn(async move {
        let publisher = Publisher {
            client: js.client(),
            waited_out: false,
            js,
            subject: subjects::logs(build_id, worker),
            build_id,
            attempt,
            seq: 0,
            acks: VecDeque::new(),
        };
        let mut log = Gated {
            publisher,
            caps,
            rate: Rate::new(caps.lines_per_sec, Instant::now()),
            backlog: Backlog::new(caps.bounds()),
            written: 0,
            bytes: 0,
        };
        let mut open = true;
        loop {
            log.publish_allowed(!open).await;
            if !open && log.backlog.is_empty() {
                break;
            }
            let next = log.backlog.ready(!open).then(|| log.rate.next_in());
            tokio::select! {
                line = rx.recv(), if open => {
                    let Some((level, message)) = line else {
                        open = false;
                        continue;
                    };
                    log.accept(level, message).await;
                    // Whatever else waits is taken at once: the build's output is read as fast
                    // as it comes (it has a few seconds once the build exits), the rate applies
                    // to publishing only.
                    for _ in 0..QUEUE {
                        let Ok((level, message)) = rx.try_recv() else { break };
                        log.accept(level, message).await;
                    }
                }
                _ = tokio::time::sleep(next.unwrap_or_default()), if next.is_some() => {}
            }
        }
        log.publisher.finish().await
    });
    (LogSink { tx }, handle)
}

/// One attempt's log between the build and the stream: the caps' state and the backlog.
struct Gated {
    publisher: Publisher,
    caps: LogCaps,
    rate: Rate,
    backlog: Backlog,
    /// Lines taken so far (their numbers in gap notes), and their bytes.
    written: u64,
    bytes: u64,
}

impl Gated {
    /// Takes one line: out at once if the rate allows and nothing waits, else into the backlog.
    async fn accept(&mut self, level: LogLevel, mut message: String) {
        cut(&mut message);
        self.written += 1;
        self.bytes += message.len() as u64;
        let over_cap = self.bytes > self.caps.max_bytes;
        if !over_cap && self.backlog.is_empty() && self.rate.take(Instant::now()) {
            self.publisher.send(level, message).await;
        } else {
            let n = self.written;
            self.backlog.push(Line { level, message, n }, over_cap);
        }
    }

    /// Publishes what waits, oldest first, as far as the rate allows (`ended`: the tail kept
    /// past the byte cap goes too).
    async fn publish_allowed(&mut self, ended: bool) {
        while self.backlog.ready(ended) && self.rate.take(Instant::now()) {
            match self.backlog.pop(ended) {
                Some(Item::Line(l)) => self.publisher.send(l.level, l.message).await,
                Some(Item::Gap(g)) => {
                    let note = gap_note(g, self.caps);
                    self.publisher.send(LogLevel::Warn, note).await
                }
                None => break,
            }
        }
    }
}

/// The line that stands where lines were dropped: how many, and which of the build's output.
fn gap_note(g: Gap, caps: LogCaps) -> String {
    let lines = if g.count == 1 {
        format!("1 log line dropped here (line {})", g.first)
    } else {
        format!(
            "{} log lines dropped here (lines {} to {})",
            g.count, g.first, g.last
        )
    };
    match g.why {
        Why::Bytes => format!(
            "[freeagent] log truncated: the build wrote more than {} bytes of log (FREEAGENT_LOG_MAX_BYTES); {lines} of this attempt's log; its last lines follow",
            caps.max_bytes
        ),
        Why::Rate => format!(
            "[freeagent] {lines} of this attempt's log: the build wrote faster than {} lines per second (FREEAGENT_LOG_LINES_PER_SEC) for longer than the spool holds ({} s of it, FREEAGENT_LOG_SPOOL_SECS); the lines before and after are whole",
            caps.lines_per_sec, caps.spool_secs
        ),
    }
}

/// Cuts a line at `MAX_LINE` bytes, on a character boundary.
fn cut(message: &mut String) {
    if message.len() > MAX_LINE {
        let mut end = MAX_LINE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" [cut]");
    }
}

/// How long a line's publish is tried again when its ack fails (NATS restarting): past this the
/// line is given up, with a warning. Longer than the worker's report patience, so a NATS outage
/// the build's outcome survives loses no line of its log either.
const REPUBLISH_FOR: Duration = Duration::from_secs(90);
/// While the connection is down, the next line waits this long at most before it is handed to
/// the client's buffer anyway (a build's output is never held up for good).
const RECONNECT_WAIT: Duration = Duration::from_secs(60);

struct Publisher {
    js: async_nats::jetstream::Context,
    /// `js`'s connection, to see whether it is up.
    client: async_nats::Client,
    /// Set when the connection stayed down past `RECONNECT_WAIT`: later lines do not wait
    /// again until it is back.
    waited_out: bool,
    subject: String,
    build_id: BuildId,
    attempt: Attempt,
    seq: u64,
    /// Lines sent and not yet acknowledged, each with its payload to send again and the
    /// connection it went out on (`connection()`).
    acks: VecDeque<Sent>,
}

struct Sent {
    payload: bytes::Bytes,
    ack: async_nats::jetstream::context::PublishAckFuture,
    connection: u64,
}

impl Publisher {
    /// Which connection the client is on: its count of connects, the first one included.
    fn connection(&self) -> u64 {
        self.client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn send(&mut self, level: LogLevel, message: String) {
        self.seq += 1;
        let line = LogLine {
            build_id: self.build_id,
            attempt: self.attempt,
            seq: self.seq,
            timestamp: Utc::now(),
            level,
            message: freeagent_shared::redact::redact(&message).into_owned(),
        };
        // A line written into a connection as it broke is lost with it, and so is the ack of
        // one the server stored: neither ack will come. So when the connection is down, or
        // lines went out on an earlier one, those lines are settled (their acks awaited
        // together, the failed ones sent again) before the next line goes out.
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        if connected {
            self.waited_out = false;
        }
        let connection = self.connection();
        if !connected
            || self
                .acks
                .front()
                .is_some_and(|s| s.connection != connection)
        {
            self.settle().await;
        }
        let payload = bytes::Bytes::from(wire::encode(&line));
        let connection = self.connection();
        match self.js.publish(self.subject.clone(), payload.clone()).await {
            Ok(ack) => self.acks.push_back(Sent {
                payload,
                ack,
                connection,
            }),
            Err(_) => self.republish(payload).await,
        }
        if self.acks.len() >= IN_FLIGHT
            && let Some(sent) = self.acks.pop_front()
            && sent.ack.await.is_err()
        {
            self.republish(sent.payload).await;
        }
    }

    /// Waits (a while) for the connection, then for every outstanding ack at once, sending
    /// again, in order, each line whose ack failed.
    async fn settle(&mut self) {
        let deadline = Instant::now() + RECONNECT_WAIT;
        while !self.waited_out
            && self.client.connection_state() != async_nats::connection::State::Connected
        {
            if Instant::now() >= deadline {
                self.waited_out = true;
                tracing::warn!(build_id = %self.build_id, "NATS has been away for a minute; log lines go to the client's buffer until it is back");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let outstanding = self.acks.drain(..).map(|s| async move {
            let acked = s.ack.await.is_ok();
            (s.payload, acked)
        });
        for (payload, acked) in futures::future::join_all(outstanding).await {
            if !acked {
                self.republish(payload).await;
            }
        }
    }

    /// Sends a line again until it is acknowledged or `REPUBLISH_FOR` has passed. A line lost
    /// with the connection shows once, after the lines that were still on their way; one the
    /// server stored but whose ack was lost shows twice.
    async fn republish(&mut self, payload: bytes::Bytes) {
        let (js, subject) = (self.js.clone(), self.subject.clone());
        let sent = (|| {
            let (js, subject, payload) = (js.clone(), subject.clone(), payload.clone());
            async move {
                js.publish(subject, payload)
                    .await?
                    .await
                    .map(|_| ())
                    .map_err(async_nats::Error::from)
            }
        })
        .retry(
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_total_delay(Some(REPUBLISH_FOR))
                .without_max_times(),
        )
        .await;
        if let Err(e) = sent {
            tracing::warn!(build_id = %self.build_id, error = %e, "a log line could not be stored while NATS was away; it is missing from the log");
        }
    }

    /// Awaits every outstanding ack (sending again what failed); the number of lines sent.
    async fn finish(mut self) -> u64 {
        self.settle().await;
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_gives_a_burst_then_a_token_per_interval() {
        let t0 = Instant::now();
        let mut r = Rate::new(3, t0);
        for _ in 0..3 {
            assert!(r.take(t0));
        }
        assert!(!r.take(t0));
        assert!(r.next_in() <= Duration::from_millis(334));
        assert!(r.take(t0 + Duration::from_millis(340)));
    }

    #[test]
    fn notes_say_how_many_lines_were_dropped_and_where() {
        let g = Gap {
            count: 3,
            first: 10,
            last: 12,
            why: Why::Rate,
        };
        let note = gap_note(g, DEFAULT_LOG_CAPS);
        assert!(
            note.contains("3 log lines dropped here (lines 10 to 12)"),
            "{note}"
        );
        let note = gap_note(
            Gap {
                why: Why::Bytes,
                ..g
            },
            DEFAULT_LOG_CAPS,
        );
        assert!(note.contains("log truncated") && note.contains("last lines follow"));
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let mut s = "é".repeat(MAX_LINE);
        cut(&mut s);
        assert!(s.len() <= MAX_LINE + 6);
        assert!(s.ends_with(" [cut]"));
    }
}
