//! Dispatch: in one short transaction, lock a batch of due pending builds (`SKIP LOCKED`, so
//! replicas never take the same rows), bump their attempt, publish each to JetStream with
//! `Nats-Msg-Id = <id>:<attempt>:<pass>`, await every publish ack, and only then commit. A failed
//! publish rolls the batch back; a dispatch it did publish is void (its claim is refused as
//! unknown and the worker ends it), and the next pass publishes afresh under a new pass id.
//! (A dispatch whose message JetStream lost is published again by `republisher`.)

use crate::service_loop::Pass;
use freeagent_shared::db::{self, Pool};
use freeagent_shared::subjects;
use freeagent_shared::wire::{self, Dispatch};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error("publishing to JetStream failed: {0}")]
    Publish(String),
}

impl From<sqlx::Error> for DispatchError {
    fn from(e: sqlx::Error) -> Self {
        DispatchError::Db(db::Error::from_sqlx(e))
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    pub pool: Pool,
    pub js: async_nats::jetstream::Context,
    pub batch: i64,
    pub window: i64,
    /// When the last pass started: passes are at least `MIN_GAP` apart.
    pub last_pass: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    /// Queues whose dispatch window the last pass found full: a submission to one of them need
    /// not wake the dispatcher (a claim will, when it frees a slot).
    pub full_queues: FullQueues,
}

pub type FullQueues = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// Whether a wake-up for `queue` (the payload of `scheduler.wake`; empty: any) can change what
/// a dispatch pass would do.
pub fn worth_waking(full: &FullQueues, queue: &[u8]) -> bool {
    let Ok(queue) = std::str::from_utf8(queue) else {
        return true;
    };
    queue.is_empty() || full.lock().map(|f| !f.contains(queue)).unwrap_or(true)
}

/// Every submission wakes the dispatcher; at a thousand a second, back-to-back passes that find
/// a full window would keep a Postgres core busy for nothing. Spacing passes by 2 ms bounds that
/// to 500 passes a second, and lets one pass take what several submissions brought.
const MIN_GAP: Duration = Duration::from_millis(2);

impl Dispatcher {
    pub async fn run_once(&self) -> Result<Pass, DispatchError> {
        let since = self
            .last_pass
            .lock()
            .ok()
            .and_then(|mut last| last.replace(Instant::now()))
            .map(|t| t.elapsed());
        if let Some(wait) = since.and_then(|s| MIN_GAP.checked_sub(s)) {
            tokio::time::sleep(wait).await;
        }
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        let pass = db::builds::build_dispatch_batch(&mut tx, self.batch, self.window).await?;
        if let Ok(mut full) = self.full_queues.lock() {
            *full = pass.full.iter().map(|q| q.to_string()).collect();
        }
        let batch = pass.dispatched;
        if batch.is_empty() {
            tx.rollback().await?;
            return Ok(Pass::default());
        }
        publish(&self.js, &batch).await?;
        tx.commit().await?;
        let n = batch.len();
        metrics::counter!(freeagent_shared::metrics::BUILDS_DISPATCHED).increment(n as u64);
        metrics::histogram!(freeagent_shared::metrics::DISPATCH_BATCH_SECONDS)
            .record(started.elapsed().as_secs_f64());
        for d in &batch {
            tracing::debug!(build_id = %d.id, attempt = %d.attempt, queue = %d.queue, "dispatched");
        }
        Ok(Pass {
            done: n,
            more: n as i64 >= self.batch,
        })
    }
}

/// Publishes each build on its queue's subject, then awaits every ack: one round trip for the
/// batch, not one per build. Each message has its own `Nats-Msg-Id` (`<id>:<attempt>:<pass>`), so
/// a pass that failed and runs again is not taken for a duplicate of its own earlier publish.
pub async fn publish(
    js: &async_nats::jetstream::Context,
    batch: &[db::builds::Dispatched],
) -> Result<(), DispatchError> {
    let pass_id: u64 = rand::random();
    let mut acks = Vec::with_capacity(batch.len());
    for d in batch {
        let msg = Dispatch {
            build_id: d.id,
            attempt: d.attempt,
            platform: d.platform,
            queue: d.queue.clone(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            msg.msg_id(pass_id).as_str(),
        );
        let ack = js
            .publish_with_headers(
                subjects::dispatch(&d.queue),
                headers,
                wire::encode(&msg).into(),
            )
            .await
            .map_err(|e| DispatchError::Publish(e.to_string()))?;
        acks.push(ack);
    }
    for ack in acks {
        freeagent_shared::nats::stored(ack, subjects::BUILDS_STREAM)
            .await
            .map_err(|e| DispatchError::Publish(e.to_string()))?;
    }
    Ok(())
}
