//! A build's output, line by line, to `logs.<build_id>.<worker_id>` on JetStream (the only log
//! subjects this worker may publish on). Publishes are pipelined:
//! up to `IN_FLIGHT` acks outstanding, all awaited before the build reports its outcome, so a
//! completed build's log is complete.

use chrono::Utc;
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::subjects;
use freeagent_shared::wire::{self, LogLevel, LogLine};
use std::collections::VecDeque;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const IN_FLIGHT: usize = 256;
const QUEUE: usize = 1024;

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

/// Starts the publisher; dropping every `LogSink` ends it, and the handle yields the line count.
pub fn start(
    js: async_nats::jetstream::Context,
    build_id: BuildId,
    worker: WorkerId,
    attempt: Attempt,
) -> (LogSink, JoinHandle<u64>) {
    let (tx, mut rx) = mpsc::channel::<(LogLevel, String)>(QUEUE);
    let handle = tokio::spawn(async move {
        let subject = subjects::logs(build_id, worker);
        let mut acks = VecDeque::new();
        let mut seq = 0u64;
        while let Some((level, message)) = rx.recv().await {
            seq += 1;
            let line = LogLine {
                build_id,
                attempt,
                seq,
                timestamp: Utc::now(),
                level,
                message,
            };
            match js
                .publish(subject.clone(), wire::encode(&line).into())
                .await
            {
                Ok(ack) => acks.push_back(ack),
                Err(e) => tracing::warn!(%build_id, error = %e, "could not publish a log line"),
            }
            if acks.len() >= IN_FLIGHT
                && let Some(ack) = acks.pop_front()
                && let Err(e) = ack.await
            {
                tracing::warn!(%build_id, error = %e, "a log line was not acknowledged");
            }
        }
        for ack in acks {
            if let Err(e) = ack.await {
                tracing::warn!(%build_id, error = %e, "a log line was not acknowledged");
            }
        }
        seq
    });
    (LogSink { tx }, handle)
}
