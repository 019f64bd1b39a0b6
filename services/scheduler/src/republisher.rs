//! Re-publish: a dispatch unclaimed for `FREEAGENT_REDISPATCH_AFTER` is published again only
//! when JetStream no longer holds its message (a stream that lost its files, a purge), never
//! while it still waits behind others. Publishing it again while it only waited grew the queue
//! by a copy of every waiting build each interval; on a cluster after node faults the workers
//! then spent minutes refusing copies of finished builds (see ADR 0021).
//!
//! The check is by time, two reads per queue: the oldest message the stream holds for the queue
//! was stored at `t`, and a work queue removes a message only once a worker acknowledged it, so
//! a dispatch last published before `t` has left the stream unclaimed. The same rule with no
//! message left: every unclaimed dispatch of the queue is lost; and with every message handed
//! out (the consumer has none pending), a dispatch unclaimed past the interval is stuck in a
//! worker's hands and is published again too.

use crate::dispatcher::{self, DispatchError};
use crate::service_loop::Pass;
use chrono::{DateTime, Utc};
use freeagent_shared::db::{self, Pool};
use freeagent_shared::status::QueueName;
use freeagent_shared::{nats, subjects};
use std::time::Duration;

/// At most this many re-publishes of one queue per transaction.
const BATCH: i64 = 500;

/// Clocks of Postgres and NATS may differ by this much: a dispatch is taken for lost only if it
/// was published this long before the oldest message still waiting. A clock further apart than
/// that costs a duplicate message (refused at claim) or a later re-publish, never a build.
const CLOCK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

#[derive(Clone)]
pub struct Republisher {
    pub pool: Pool,
    pub js: async_nats::jetstream::Context,
    pub unclaimed_after: Duration,
}

impl Republisher {
    pub async fn run_once(&self) -> Result<Pass, DispatchError> {
        let after = self.unclaimed_after.as_secs_f64();
        let queues = db::builds::build_republish_due(&self.pool, after).await?;
        let mut pass = Pass::default();
        for queue in queues {
            let subject = subjects::dispatch(&queue);
            let oldest = nats::first_on(&self.js, subjects::BUILDS_STREAM, &subject, 0)
                .await
                .map_err(|e| DispatchError::Publish(e.to_string()))?;
            let before = match oldest {
                Some(m) if !self.all_delivered(&queue).await => {
                    DateTime::from_timestamp_nanos(m.time.unix_timestamp_nanos() as i64)
                        - CLOCK_MARGIN
                }
                _ => DateTime::<Utc>::MAX_UTC,
            };
            let mut tx = self.pool.begin().await?;
            let lost = db::builds::build_republish(&mut tx, &queue, after, before, BATCH).await?;
            if lost.is_empty() {
                tx.rollback().await?;
                continue;
            }
            dispatcher::publish(&self.js, &lost).await?;
            tx.commit().await?;
            for d in &lost {
                tracing::warn!(build_id = %d.id, attempt = %d.attempt, %queue, "dispatch lost (JetStream no longer holds it unclaimed); published again");
            }
            metrics::counter!(freeagent_shared::metrics::DISPATCHES_REPUBLISHED)
                .increment(lost.len() as u64);
            pass.done += lost.len();
            pass.more |= lost.len() as i64 >= BATCH;
        }
        Ok(pass)
    }

    /// Whether the queue's consumer has handed out every message the stream holds for it: then
    /// a dispatch still unclaimed past the interval is held by a worker that neither claimed
    /// nor acknowledged it for longer than the ack wait, and was not redelivered (seen once
    /// under load with a legacy worker's abandoned poll). Published again, its copy does not
    /// wait behind others: nothing is left to deliver before it.
    async fn all_delivered(&self, queue: &QueueName) -> bool {
        match nats::queue_consumer(&self.js, queue).await {
            Ok(c) => c.cached_info().num_pending == 0,
            Err(_) => false,
        }
    }
}
