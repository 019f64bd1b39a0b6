//! A build's output, line by line, to the scheduler's log gate, which stores it on the LOGS
//! stream (`logs.<build_id>.<worker_id>`) once it has checked this worker holds the attempt
//! (ADR-0018). Lines go in batches, one in flight at a time while the next gathers, so the
//! stream keeps their order; every batch is answered before the build reports its outcome, so a
//! completed build's log is complete. A batch no scheduler answered (NATS restarting, a
//! scheduler's failover) is sent again, so neither loses a line, and the gate does not store a
//! line twice when only its answer was lost.
//! A build's log is capped (`LogCaps`) so one build cannot flood the stream other
//! builds' logs live in: lines go out at most at the rate, and a burst over it waits in a spool
//! on disk (`crate::log_spool`), bounded to `LogCaps::spool_secs` of the rate; past that, and past the
//! byte cap, lines in the middle are dropped, never the last ones, with a note of how many and
//! where.

use crate::log_spool::{Backlog, Bounds, Gap, Item, Line, Why};
use chrono::Utc;
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::scheduler_client::SchedulerClient;
use freeagent_shared::wire::{
    self, LogBatch, LogLevel, LogLine, LogReply, LogStream, MAX_LOG_BATCH_LINES,
};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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

/// A line as the build (or the worker) wrote it: level, text, and which output of the build.
type Written = (LogLevel, String, Option<LogStream>);

#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Written>,
}

impl LogSink {
    pub async fn line(&self, level: LogLevel, message: impl Into<String>) {
        self.write((level, message.into(), None)).await
    }

    /// A line of one of the build command's outputs (stderr lines are `warn`, as before the
    /// stream was named, so old readers see them as they did).
    pub async fn output(&self, stream: LogStream, message: String) {
        let level = match stream {
            LogStream::Stdout => LogLevel::Info,
            LogStream::Stderr => LogLevel::Warn,
        };
        let stream = (stream == LogStream::Stderr).then_some(stream);
        self.write((level, message, stream)).await
    }

    async fn write(&self, w: Written) {
        // A closed sink means the build is over; nothing to do.
        let _ = self.tx.send(w).await;
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
    scheduler: SchedulerClient,
    build_id: BuildId,
    worker: WorkerId,
    attempt: Attempt,
    caps: LogCaps,
) -> (LogSink, JoinHandle<u64>) {
    let (tx, mut rx) = mpsc::channel::<Written>(QUEUE);
    let handle = tokio::spawn(async move {
        let publisher = Publisher {
            scheduler,
            worker,
            build_id,
            attempt,
            seq: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            in_flight: None,
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
            log.publisher.flush_if_idle().await;
            if !open && log.backlog.is_empty() {
                break;
            }
            let next = log.backlog.ready(!open).then(|| log.rate.next_in());
            let waiting = log.publisher.waiting();
            tokio::select! {
                line = rx.recv(), if open => {
                    let Some(line) = line else {
                        open = false;
                        continue;
                    };
                    log.accept(line).await;
                    // Whatever else waits is taken at once: the build's output is read as fast
                    // as it comes (it has a few seconds once the build exits), the rate applies
                    // to publishing only.
                    for _ in 0..QUEUE {
                        let Ok(line) = rx.try_recv() else { break };
                        log.accept(line).await;
                    }
                }
                _ = tokio::time::sleep(next.unwrap_or_default()), if next.is_some() => {}
                _ = log.publisher.delivered(), if waiting => {}
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
    async fn accept(&mut self, (level, mut message, stream): Written) {
        cut(&mut message);
        self.written += 1;
        self.bytes += message.len() as u64;
        let over_cap = self.bytes > self.caps.max_bytes;
        if !over_cap && self.backlog.is_empty() && self.rate.take(Instant::now()) {
            self.publisher.send(level, message, stream).await;
        } else {
            let n = self.written;
            self.backlog.push(
                Line {
                    level,
                    message,
                    n,
                    stream,
                },
                over_cap,
            );
        }
    }

    /// Publishes what waits, oldest first, as far as the rate allows (`ended`: the tail kept
    /// past the byte cap goes too).
    async fn publish_allowed(&mut self, ended: bool) {
        while self.backlog.ready(ended) && self.rate.take(Instant::now()) {
            match self.backlog.pop(ended) {
                Some(Item::Line(l)) => self.publisher.send(l.level, l.message, l.stream).await,
                Some(Item::Gap(g)) => {
                    let note = gap_note(g, self.caps);
                    self.publisher.send(LogLevel::Warn, note, None).await
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

/// How long a batch is sent again while no scheduler answers (NATS restarting, a scheduler's
/// failover) or the worker is over its log budget: past this its lines are given up, with a
/// warning. Longer than the worker's report patience, so a NATS outage the build's outcome
/// survives loses no line of its log either.
const REPUBLISH_FOR: Duration = Duration::from_secs(90);
/// A batch goes out once it holds this many bytes (as sent) or `MAX_LOG_BATCH_LINES` lines, or
/// as soon as the one before it is answered: well under a worker's largest NATS message.
const BATCH_BYTES: usize = 64 << 10;

/// Sends the attempt's lines to the scheduler's log gate (`scheduler.log.<worker>`), which
/// stores them on LOGS: one batch in flight at a time, so the stream keeps the build's order,
/// and the next one gathers meanwhile.
struct Publisher {
    scheduler: SchedulerClient,
    worker: WorkerId,
    build_id: BuildId,
    attempt: Attempt,
    seq: u64,
    batch: Vec<LogLine>,
    batch_bytes: usize,
    in_flight: Option<JoinHandle<()>>,
}

impl Publisher {
    async fn send(&mut self, level: LogLevel, message: String, stream: Option<LogStream>) {
        self.seq += 1;
        let line = LogLine {
            build_id: self.build_id,
            attempt: self.attempt,
            seq: self.seq,
            timestamp: Utc::now(),
            level,
            message: freeagent_shared::redact::redact(&message).into_owned(),
            stream,
        };
        self.batch_bytes += wire::encode(&line).len();
        self.batch.push(line);
        if self.batch.len() >= MAX_LOG_BATCH_LINES || self.batch_bytes >= BATCH_BYTES {
            self.delivered().await;
            self.deliver();
        }
    }

    /// Whether lines wait for the batch in flight to be answered.
    fn waiting(&self) -> bool {
        self.in_flight.is_some() && !self.batch.is_empty()
    }

    /// Sends what gathered if no batch is in flight.
    async fn flush_if_idle(&mut self) {
        if self.in_flight.as_ref().is_some_and(|h| h.is_finished()) {
            self.delivered().await;
        }
        if self.in_flight.is_none() && !self.batch.is_empty() {
            self.deliver();
        }
    }

    /// Waits for the batch in flight (cancel-safe: the batch stays in flight if dropped).
    async fn delivered(&mut self) {
        if let Some(h) = &mut self.in_flight {
            let _ = h.await;
            self.in_flight = None;
        }
    }

    fn deliver(&mut self) {
        let batch = LogBatch {
            worker_id: self.worker,
            build_id: self.build_id,
            attempt: self.attempt,
            lines: std::mem::take(&mut self.batch),
        };
        self.batch_bytes = 0;
        self.in_flight = Some(tokio::spawn(deliver(self.scheduler.clone(), batch)));
    }

    /// Sends what is left and waits until every batch is answered; the number of lines sent.
    async fn finish(mut self) -> u64 {
        self.delivered().await;
        if !self.batch.is_empty() {
            self.deliver();
            self.delivered().await;
        }
        self.seq
    }
}

/// Sends one batch until every line is stored, the gate refuses it, or `REPUBLISH_FOR` passed.
/// A line stored whose answer was lost is not stored twice (the gate remembers the last one).
async fn deliver(scheduler: SchedulerClient, mut batch: LogBatch) {
    let deadline = Instant::now() + REPUBLISH_FOR;
    loop {
        let patience = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let wait = match scheduler.log(&batch, patience).await {
            Ok(LogReply::Stored { through }) => {
                batch.lines.retain(|l| l.seq > through);
                // Part of it: the stream took the first lines and then refused one.
                Duration::from_millis(200)
            }
            Ok(LogReply::Slow {
                through,
                retry_after_ms,
            }) => {
                batch.lines.retain(|l| l.seq > through);
                Duration::from_millis(retry_after_ms).min(Duration::from_secs(5))
            }
            Ok(LogReply::NotYours { reason }) => {
                tracing::warn!(build_id = %batch.build_id, lines = batch.lines.len(), ?reason, "the scheduler refused log lines: this worker no longer holds the attempt");
                return;
            }
            Ok(LogReply::Error { message }) | Ok(LogReply::Unavailable { message }) => {
                tracing::warn!(build_id = %batch.build_id, lines = batch.lines.len(), %message, "the scheduler refused log lines; they are missing from the log");
                return;
            }
            Err(e) => {
                tracing::warn!(build_id = %batch.build_id, lines = batch.lines.len(), error = %e, "log lines could not be stored while no scheduler answered; they are missing from the log");
                return;
            }
        };
        if batch.lines.is_empty() {
            return;
        }
        if Instant::now() + wait >= deadline {
            tracing::warn!(build_id = %batch.build_id, lines = batch.lines.len(), "log lines were held back by the worker's log budget for too long; they are missing from the log");
            return;
        }
        tokio::time::sleep(wait).await;
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
