//! The farm's figures (`/health`, `/api/stats`, `/api/builds/statistics`), computed at most
//! once per `FREEAGENT_FIGURES_TTL` (2 s) whatever the number of callers, so a crowd of callers
//! cannot stack up table scans. No answer is older than the TTL (a script that reads `/health`
//! right after a submit, after an idle spell, sees the submit): a call that finds the figures
//! past half the TTL starts one measurement in the background and is answered at once; a call
//! that finds them past the TTL waits for that measurement (or makes it), as do the calls
//! arriving meanwhile.

pub(crate) mod health;
pub(crate) mod overview;
pub(crate) mod reports;
pub(crate) mod routes;

use freeagent_shared::db::builds::{FarmStats, QueueDepth};
use freeagent_shared::db::{self, Pool};
use freeagent_shared::status::BuildStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

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
        // Their age counts from the start: a change committed after this moment may be missing.
        let measured_at = Instant::now();
        Ok(Figures {
            counts: db::builds::build_count_by_status(pool).await?,
            storage_by_kind: db::builds::build_storage_by_kind(pool).await?,
            queues: db::builds::build_queue_depths(pool, live_within_secs).await?,
            farm: db::builds::build_farm_stats(pool).await?,
            workers_online: db::workers::worker_count_online(pool, live_within_secs).await?,
            measured_at,
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
    /// Held while measuring: one measurement at a time; callers that need fresh figures wait.
    measuring: Arc<Mutex<()>>,
    /// Zero: no cache, every call measures (for tests that need exact figures at once).
    ttl: Duration,
    /// Workers heard from within this long count as live (`FREEAGENT_WORKER_OFFLINE_AFTER`).
    live_within_secs: f64,
}

impl FiguresCache {
    pub fn new(ttl: Duration, worker_offline_after: Duration) -> Self {
        FiguresCache {
            latest: Default::default(),
            measuring: Default::default(),
            ttl,
            live_within_secs: worker_offline_after.as_secs_f64(),
        }
    }

    async fn age_of_latest(&self) -> Option<(Arc<Figures>, Duration)> {
        let f = self.latest.read().await.clone()?;
        let age = f.measured_at.elapsed();
        Some((f, age))
    }

    /// Measures and stores, unless a measurement that finished meanwhile is younger than `max_age`.
    async fn refresh(&self, pool: &Pool, max_age: Duration) -> Result<Arc<Figures>, db::Error> {
        let _one = self.measuring.lock().await;
        if let Some((f, age)) = self.age_of_latest().await
            && age <= max_age
        {
            return Ok(f);
        }
        let f = Arc::new(Figures::measure(pool, self.live_within_secs).await?);
        *self.latest.write().await = Some(f.clone());
        Ok(f)
    }

    /// Figures no older than the TTL.
    pub async fn get(&self, pool: &Pool) -> Result<Arc<Figures>, db::Error> {
        if self.ttl.is_zero() {
            return Ok(Arc::new(
                Figures::measure(pool, self.live_within_secs).await?,
            ));
        }
        match self.age_of_latest().await {
            Some((f, age)) if age <= self.ttl / 2 => Ok(f),
            Some((f, age)) if age <= self.ttl => {
                // Measure ahead, so that callers rarely wait; one measurement at a time.
                if let Ok(guard) = self.measuring.clone().try_lock_owned() {
                    let (cache, pool) = (self.clone(), pool.clone());
                    tokio::spawn(async move {
                        drop(guard);
                        if let Err(e) = cache.refresh(&pool, cache.ttl / 2).await {
                            tracing::warn!(error = %e, "could not refresh the farm figures");
                        }
                    });
                }
                Ok(f)
            }
            _ => self.refresh(pool, self.ttl).await,
        }
    }
}
