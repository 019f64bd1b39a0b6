//! A build's output, line by line, to `logs.<build_id>.<worker_id>` on JetStream (the only log
//! subjects this worker may publish on). Publishes are pipelined: up to `IN_FLIGHT` acks
//! outstanding, all awaited before the build reports its outcome, so a completed build's log is
//! complete. A build's log is capped (`LogCaps`): lines over the rate are dropped (and counted in
//! a line of their own), and past the byte cap the log ends with a "log truncated" line, so one
//! build cannot flood the stream other builds' logs live in.

use chrono::Utc;
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::subjects;
use freeagent_shared::wire::{self, LogLevel, LogLine};
use std::collections::VecDeque;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const IN_FLIGHT: usize = 256;
const QUEUE: usize = 1024;
/// One line's text is cut here (a line is one NATS message).
pub const MAX_LINE: usize = 16 << 10;

/// What one build may write to its log.
#[derive(Debug, Clone, Copy)]
pub struct LogCaps {
    /// Bytes of message text in all; then the log ends with a truncation line.
    pub max_bytes: u64,
    /// Sustained lines per second (bursts of this many); lines over it are dropped and counted.
    pub lines_per_sec: u32,
}

pub const DEFAULT_LOG_CAPS: LogCaps = LogCaps {
    max_bytes: 64 << 20,
    lines_per_sec: 2_000,
};

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

/// What to do with the next line, as the caps decide.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Publish it (after a note of `dropped` lines, if any).
    Keep { dropped: u64 },
    /// Over the rate: dropped (and counted).
    Drop,
    /// Over the byte cap: publish the truncation line once, then nothing more.
    Truncate,
    /// Already truncated.
    Done,
}

/// The caps' state for one build's log: a token bucket for lines and a byte count.
struct Gate {
    caps: LogCaps,
    tokens: f64,
    refilled: Instant,
    bytes: u64,
    dropped: u64,
    truncated: bool,
}

impl Gate {
    fn new(caps: LogCaps, now: Instant) -> Self {
        Self {
            caps,
            tokens: f64::from(caps.lines_per_sec.max(1)),
            refilled: now,
            bytes: 0,
            dropped: 0,
            truncated: false,
        }
    }

    fn judge(&mut self, len: usize, now: Instant) -> Verdict {
        if self.truncated {
            return Verdict::Done;
        }
        let rate = f64::from(self.caps.lines_per_sec.max(1));
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            return Verdict::Drop;
        }
        self.tokens -= 1.0;
        if self.bytes + len as u64 > self.caps.max_bytes {
            self.truncated = true;
            return Verdict::Truncate;
        }
        self.bytes += len as u64;
        Verdict::Keep {
            dropped: std::mem::take(&mut self.dropped),
        }
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
        let mut publisher = Publisher {
            js,
            subject: subjects::logs(build_id, worker),
            build_id,
            attempt,
            seq: 0,
            acks: VecDeque::new(),
        };
        let mut gate = Gate::new(caps, Instant::now());
        while let Some((level, mut message)) = rx.recv().await {
            cut(&mut message);
            match gate.judge(message.len(), Instant::now()) {
                Verdict::Keep { dropped } => {
                    if dropped > 0 {
                        publisher
                            .send(LogLevel::Warn, dropped_note(dropped, caps))
                            .await;
                    }
                    publisher.send(level, message).await;
                }
                Verdict::Drop | Verdict::Done => {}
                Verdict::Truncate => {
                    let note = format!(
                        "[freeagent] log truncated: the build wrote more than {} bytes of log (FREEAGENT_LOG_MAX_BYTES); later lines are dropped",
                        caps.max_bytes
                    );
                    publisher.send(LogLevel::Warn, note).await;
                }
            }
        }
        if gate.dropped > 0 && !gate.truncated {
            publisher
                .send(LogLevel::Warn, dropped_note(gate.dropped, caps))
                .await;
        }
        publisher.finish().await
    });
    (LogSink { tx }, handle)
}

fn dropped_note(n: u64, caps: LogCaps) -> String {
    format!(
        "[freeagent] {n} log lines dropped: the build wrote more than {} lines per second (FREEAGENT_LOG_LINES_PER_SEC)",
        caps.lines_per_sec
    )
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

struct Publisher {
    js: async_nats::jetstream::Context,
    subject: String,
    build_id: BuildId,
    attempt: Attempt,
    seq: u64,
    acks: VecDeque<async_nats::jetstream::context::PublishAckFuture>,
}

impl Publisher {
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
        let build_id = self.build_id;
        match self
            .js
            .publish(self.subject.clone(), wire::encode(&line).into())
            .await
        {
            Ok(ack) => self.acks.push_back(ack),
            Err(e) => tracing::warn!(%build_id, error = %e, "could not publish a log line"),
        }
        if self.acks.len() >= IN_FLIGHT
            && let Some(ack) = self.acks.pop_front()
            && let Err(e) = ack.await
        {
            tracing::warn!(%build_id, error = %e, "a log line was not acknowledged");
        }
    }

    /// Awaits every outstanding ack; the number of lines sent.
    async fn finish(self) -> u64 {
        for ack in self.acks {
            if let Err(e) = ack.await {
                tracing::warn!(build_id = %self.build_id, error = %e, "a log line was not acknowledged");
            }
        }
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_over_the_rate_are_dropped_then_counted() {
        let t0 = Instant::now();
        let mut g = Gate::new(
            LogCaps {
                max_bytes: 1 << 20,
                lines_per_sec: 3,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(g.judge(1, t0), Verdict::Keep { dropped: 0 });
        }
        assert_eq!(g.judge(1, t0), Verdict::Drop);
        assert_eq!(g.judge(1, t0), Verdict::Drop);
        // A third of a second later one token is back: the note counts the two dropped.
        let later = t0 + Duration::from_millis(340);
        assert_eq!(g.judge(1, later), Verdict::Keep { dropped: 2 });
    }

    #[test]
    fn the_byte_cap_truncates_once() {
        let t0 = Instant::now();
        let mut g = Gate::new(
            LogCaps {
                max_bytes: 10,
                lines_per_sec: 1000,
            },
            t0,
        );
        assert_eq!(g.judge(6, t0), Verdict::Keep { dropped: 0 });
        assert_eq!(g.judge(4, t0), Verdict::Keep { dropped: 0 });
        assert_eq!(g.judge(1, t0), Verdict::Truncate);
        assert_eq!(g.judge(1, t0), Verdict::Done);
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let mut s = "é".repeat(MAX_LINE);
        cut(&mut s);
        assert!(s.len() <= MAX_LINE + 6);
        assert!(s.ends_with(" [cut]"));
    }
}
