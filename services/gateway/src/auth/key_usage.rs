//! `last_used_at` of API keys, kept off the request path. A request that authenticates with a
//! key costs a map lookup; at most once per `INTERVAL` per key (per gateway) the key's id goes
//! to a background task, which writes whatever has arrived in one `UPDATE`. So the column is
//! approximate (by up to a minute), and a busy key costs one write a minute, not one a request.

use freeagent_shared::db::{self, Pool};
use freeagent_shared::ids::ApiKeyId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A key's use is written at most this often.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Bounds memory; when full the map starts over (at worst a few extra writes).
const MAX_ENTRIES: usize = 4096;

#[derive(Clone)]
pub struct KeyUsage {
    /// Key → when its use was last sent to the writer.
    sent: Arc<Mutex<HashMap<ApiKeyId, Instant>>>,
    writer: mpsc::UnboundedSender<ApiKeyId>,
}

impl KeyUsage {
    /// Starts the writer; it ends when the last handle is dropped.
    pub fn start(pool: Pool) -> Self {
        let (writer, rx) = mpsc::unbounded_channel();
        let sent: Arc<Mutex<HashMap<ApiKeyId, Instant>>> = Default::default();
        tokio::spawn(write_loop(pool, rx, sent.clone()));
        KeyUsage { sent, writer }
    }

    /// Notes that `id` authenticated a request now.
    pub fn used(&self, id: ApiKeyId) {
        let now = Instant::now();
        {
            let Ok(mut sent) = self.sent.lock() else {
                return;
            };
            if sent
                .get(&id)
                .is_some_and(|at| now.duration_since(*at) < INTERVAL)
            {
                return;
            }
            if sent.len() >= MAX_ENTRIES {
                sent.clear();
            }
            sent.insert(id, now);
        }
        // Fails only once the writer is gone (shutting down): nothing to record then.
        let _ = self.writer.send(id);
    }
}

async fn write_loop(
    pool: Pool,
    mut rx: mpsc::UnboundedReceiver<ApiKeyId>,
    sent: Arc<Mutex<HashMap<ApiKeyId, Instant>>>,
) {
    while let Some(first) = rx.recv().await {
        let mut ids = vec![first];
        while let Ok(more) = rx.try_recv() {
            ids.push(more);
        }
        ids.sort();
        ids.dedup();
        if let Err(e) = db::api_keys::api_key_touch(&pool, &ids, chrono::Utc::now()).await {
            tracing::warn!(error = %e, keys = ids.len(), "cannot record API key use; the next use tries again");
            // Forget them, so their next use is written rather than waiting out the interval.
            if let Ok(mut sent) = sent.lock() {
                for id in &ids {
                    sent.remove(id);
                }
            }
        }
    }
}
