//! Recently verified API keys, by hash, for a few seconds: a submitter sending thousands of
//! requests costs one key lookup per interval rather than one per request. Only keys that
//! verified are kept; an unknown key always asks the database. A key revoked on another
//! gateway stops working here within `TTL`; one revoked here is forgotten at once. Expiry is
//! checked on every request (the cached row carries `expires_at`).

use freeagent_shared::db::api_keys::ApiKey;
use freeagent_shared::ids::ApiKeyId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TTL: Duration = Duration::from_secs(5);
/// Bounds memory whatever keys are presented; the cache simply starts over when full.
const MAX_ENTRIES: usize = 4096;

/// Key hash → the key and when it was verified.
type Entries = HashMap<Vec<u8>, (ApiKey, Instant)>;

#[derive(Clone, Default)]
pub struct ApiKeyCache {
    inner: Arc<Mutex<Entries>>,
}

impl ApiKeyCache {
    pub fn get(&self, hash: &[u8]) -> Option<ApiKey> {
        let map = self.inner.lock().ok()?;
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(k, _)| k.clone())
    }

    pub fn put(&self, hash: Vec<u8>, key: ApiKey) {
        if let Ok(mut map) = self.inner.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(hash, (key, Instant::now()));
        }
    }

    /// Drops the key with this id (it was just revoked), so the next request asks the database.
    pub fn forget(&self, id: ApiKeyId) {
        if let Ok(mut map) = self.inner.lock() {
            map.retain(|_, (k, _)| k.id != id);
        }
    }
}
