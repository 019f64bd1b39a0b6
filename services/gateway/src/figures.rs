//! The farm's figures (`/health`, `/api/stats`, `/api/builds/statistics`), computed at most
//! once per `FREEAGENT_FIGURES_TTL` (2 s) and served from memory in between: their cost per call does not grow
//! with the number of builds, and a crowd of callers cannot stack up table scans. A stale value
//! is served at once while one background refresh runs; only the very first call waits.

use freeagent_shared::db::builds::{FarmStats, QueueDepth};
use freeagent_shared::db::{self, Pool};
use freeagent_shared::status::BuildStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Figures are at most this old (plus one refresh), by default.
pub const DEFAULT_FIGURES_TTL: Duration = Duration::from_secs(2);

/// One snapshot, taken by `Figures::measure`.
pub struct Figures {
    pub counts: Vec<(BuildStatus, i64)>,
    pub storage_by_kind: Vec<(String, i64, i64)>,
    pub queues: Vec<QueueDepth>,
    pub farm: FarmStats,
    pub workers_online: i64,
    pub measured_at: Instant,
}

impl Figures {
    async fn measure(pool: &Pool, live_within_secs: f64) -> Result<Self, db::Error> {
        metrics::counter!(freeagent_shared::metrics::FIGURES_REFRESHES).increment(1);
        Ok(Figures {
            counts: db::builds::build_count_by_status(pool).await?,
            storage_by_kind: db::builds::build_storage_by_kind(pool).await?,
            queues: db::builds::build_queue_depths(pool, live_within_secs).await?,
            farm: db::builds::build_farm_stats(pool).await?,
            workers_online: db::workers::worker_count_online(pool, live_within_secs).await?,
            measured_at: Instant::now(),
        })
    }

    pub fn count(&self, s: BuildStatus) -> i64 {
        self.counts
            .iter()
            .find(|(st, _)| *st == s)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }
}

#[derive(Clone)]
pub struct FiguresCache {
    latest: Arc<RwLock<Option<Arc<Figures>>>>,
    refreshing: Arc<AtomicBool>,
    /// Zero: no cache, every call measures (for tests that need exact figures at once).
    ttl: Duration,
}

impl FiguresCache {
    pub fn new(ttl: Duration) -> Self {
        FiguresCache {
            latest: Default::default(),
            refreshing: Default::default(),
            ttl,
        }
    }

    /// The latest figures; stale ones start a refresh in the background.
    pub async fn get(&self, pool: &Pool) -> Result<Arc<Figures>, db::Error> {
        let live = crate::routes::workers::OFFLINE_AFTER_SECS;
        if self.ttl.is_zero() {
            return Ok(Arc::new(Figures::measure(pool, live).await?));
        }
        if let Some(f) = self.latest.read().await.clone() {
            if f.measured_at.elapsed() > self.ttl && !self.refreshing.swap(true, Ordering::SeqCst) {
                let (cache, pool) = (self.clone(), pool.clone());
                tokio::spawn(async move {
                    match Figures::measure(&pool, live).await {
                        Ok(f) => *cache.latest.write().await = Some(Arc::new(f)),
                        Err(e) => tracing::warn!(error = %e, "could not refresh the farm figures"),
                    }
                    cache.refreshing.store(false, Ordering::SeqCst);
                });
            }
            return Ok(f);
        }
        // The first call: measure, one caller at a time.
        let mut latest = self.latest.write().await;
        if let Some(f) = latest.clone() {
            return Ok(f);
        }
        let f = Arc::new(Figures::measure(pool, live).await?);
        *latest = Some(f.clone());
        Ok(f)
    }
}
