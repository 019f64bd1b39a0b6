//! The JetStream consumer of each queue, looked up once per gateway instead of twice per poll:
//! a fleet of HTTP workers polling at once would otherwise queue hundreds of JetStream API
//! requests ahead of their own pulls.

use async_nats::jetstream::consumer::{Consumer, pull};
use freeagent_shared::status::QueueName;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub type QueueConsumer = Consumer<pull::Config>;

#[derive(Clone, Default)]
pub struct QueueConsumers {
    known: Arc<Mutex<HashMap<QueueName, QueueConsumer>>>,
}

impl QueueConsumers {
    /// The consumer of `queue`, created if missing.
    pub async fn get(
        &self,
        nats: &async_nats::Client,
        queue: &QueueName,
    ) -> Result<QueueConsumer, freeagent_shared::nats::Error> {
        if let Some(c) = self.known.lock().ok().and_then(|k| k.get(queue).cloned()) {
            return Ok(c);
        }
        let js = async_nats::jetstream::new(nats.clone());
        let c = freeagent_shared::nats::ensure_queue_consumer(&js, queue).await?;
        if let Ok(mut k) = self.known.lock() {
            k.insert(queue.clone(), c.clone());
        }
        Ok(c)
    }

    /// Forgets `queue`'s consumer after a failed pull (deleted, or the server restarted without
    /// it): the next poll looks it up again.
    pub fn forget(&self, queue: &QueueName) {
        if let Ok(mut k) = self.known.lock() {
            k.remove(queue);
        }
    }
}
