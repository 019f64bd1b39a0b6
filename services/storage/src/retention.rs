//! Retention: deletes the objects of builds older than the configured age and records it on the
//! build, then sweeps objects no build record knows (left by a crash between upload and insert)
//! once they are older than a grace period. The same listing yields the per-kind statistics.
//!
//! Safe on many replicas: expired builds are locked with `FOR UPDATE SKIP LOCKED` (each replica
//! takes different ones; a crash rolls back and another replica redoes the idempotent deletes),
//! and one replica sweeps at a time under a transaction-scoped advisory lock.

use freeagent_shared::db::{self, Pool};
use freeagent_shared::ids::BuildId;
use freeagent_shared::object_key::ObjectKey;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Builds purged per transaction.
const BATCH: i64 = 100;
/// How soon retention looks again when the database is not migrated yet (a first start).
const NOT_MIGRATED_RETRY: Duration = Duration::from_secs(5);
/// After this many looks (5 minutes at the default interval) a missing schema is worth a WARN.
const NOT_MIGRATED_WARN_AFTER: u32 = 60;
/// Build ids looked up per query during the sweep.
const SWEEP_CHUNK: usize = 500;

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Objects of builds submitted longer ago than this are deleted.
    pub max_age: Duration,
    /// Objects without a build record are deleted once this old.
    pub orphan_grace: Duration,
    /// Time between runs.
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("database: {0}")]
    Db(#[from] db::Error),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// Objects and bytes of one kind, as listed in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KindStats {
    pub objects: u64,
    pub bytes: u64,
}

/// What one run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RetentionReport {
    pub builds_purged: u64,
    pub objects_deleted: u64,
    pub orphans_deleted: u64,
    /// `None` when another replica held the sweep.
    pub stats: Option<BTreeMap<&'static str, KindStats>>,
}

pub struct Retention {
    pool: Pool,
    store: Arc<dyn ObjectStore>,
    config: RetentionConfig,
}

impl Retention {
    pub fn new(pool: Pool, store: Arc<dyn ObjectStore>, config: RetentionConfig) -> Self {
        Self {
            pool,
            store,
            config,
        }
    }

    /// Purges every expired build, then sweeps orphans and measures the store.
    pub async fn run_once(&self) -> Result<RetentionReport, RetentionError> {
        let mut report = RetentionReport::default();
        loop {
            let (builds, objects) = self.purge_batch().await?;
            report.builds_purged += builds;
            report.objects_deleted += objects;
            if builds < BATCH as u64 {
                break;
            }
        }
        let mut tx = self.pool.begin().await.map_err(db::Error::from_sqlx)?;
        if db::builds::retention_try_sweep_lock(&mut tx).await? {
            let (orphans, stats) = self.sweep().await?;
            report.orphans_deleted = orphans;
            publish(&stats);
            report.stats = Some(stats);
        }
        tx.commit().await.map_err(db::Error::from_sqlx)?;
        if report.builds_purged + report.orphans_deleted > 0 {
            tracing::info!(
                builds = report.builds_purged,
                objects = report.objects_deleted,
                orphans = report.orphans_deleted,
                "retention deleted old objects"
            );
        }
        Ok(report)
    }

    /// One transaction: lock a batch of expired builds, delete their objects, mark them purged.
    async fn purge_batch(&self) -> Result<(u64, u64), RetentionError> {
        let mut tx = self.pool.begin().await.map_err(db::Error::from_sqlx)?;
        let ids = db::builds::retention_lock_expired(&mut tx, self.config.max_age, BATCH).await?;
        let mut objects = 0;
        for id in &ids {
            objects += self.delete_build_objects(*id).await?;
        }
        db::builds::retention_mark_purged(&mut tx, &ids).await?;
        tx.commit().await.map_err(db::Error::from_sqlx)?;
        Ok((ids.len() as u64, objects))
    }

    /// Deletes everything under `builds/<id>/`; deleting what is already gone is fine.
    async fn delete_build_objects(&self, id: BuildId) -> Result<u64, RetentionError> {
        let prefix = Path::from(format!("builds/{id}"));
        let paths: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map(|m| m.map(|m| m.location))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        for p in &paths {
            match self.store.delete(p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(paths.len() as u64)
    }

    /// Lists `builds/`, counting every object by kind and deleting those older than the grace
    /// period whose build has no record.
    async fn sweep(&self) -> Result<(u64, BTreeMap<&'static str, KindStats>), RetentionError> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(self.config.orphan_grace).unwrap_or(chrono::Duration::MAX);
        let mut stats: BTreeMap<&'static str, KindStats> = BTreeMap::new();
        let mut old: HashMap<BuildId, Vec<Path>> = HashMap::new();
        let mut deleted = 0;
        let mut listing = self.store.list(Some(&Path::from("builds")));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let key = ObjectKey::parse(meta.location.as_ref()).ok();
            let entry = stats.entry(kind_of(key.as_ref())).or_default();
            entry.objects += 1;
            entry.bytes += meta.size;
            let owner = key
                .map(|k| k.build_id())
                .or_else(|| build_of(meta.location.as_ref()));
            if let Some(id) = owner
                && meta.last_modified < cutoff
            {
                old.entry(id).or_default().push(meta.location);
                if old.len() >= SWEEP_CHUNK {
                    deleted += self.delete_orphans(std::mem::take(&mut old)).await?;
                }
            }
        }
        deleted += self.delete_orphans(old).await?;
        Ok((deleted, stats))
    }

    async fn delete_orphans(
        &self,
        mut candidates: HashMap<BuildId, Vec<Path>>,
    ) -> Result<u64, RetentionError> {
        if candidates.is_empty() {
            return Ok(0);
        }
        let ids: Vec<BuildId> = candidates.keys().copied().collect();
        for known in db::builds::retention_existing(&self.pool, &ids).await? {
            candidates.remove(&known);
        }
        let mut n = 0;
        for (id, paths) in candidates {
            for p in paths {
                match self.store.delete(&p).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            tracing::info!(build = %id, "deleted objects of a build that was never recorded");
        }
        Ok(n)
    }

    /// Runs until `shutdown`: once at start, then every interval. Failures are logged and
    /// retried at the next tick (the work is idempotent).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut waited = 0u32;
        loop {
            let wait = match self.run_once().await {
                Ok(_) => self.config.interval,
                // A first start: storage can come up before the services that migrate the
                // database. Nothing for the operator to do; look again soon.
                Err(RetentionError::Db(db::Error::NotMigrated)) => {
                    waited += 1;
                    if waited == 1 {
                        tracing::info!(
                            "the database is not migrated yet; retention starts once it is"
                        );
                    } else if waited == NOT_MIGRATED_WARN_AFTER {
                        tracing::warn!(
                            "the database is still not migrated: is FREEAGENT_DATABASE_URL the farm's database? The gateway and the scheduler create its tables when they start"
                        );
                    }
                    NOT_MIGRATED_RETRY.min(self.config.interval)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention run failed; retrying at the next interval");
                    self.config.interval
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

fn kind_of(key: Option<&ObjectKey>) -> &'static str {
    match key {
        Some(ObjectKey::Source(_)) => "source",
        Some(ObjectKey::Certs(_)) => "certs",
        Some(ObjectKey::Result(..)) => "result",
        Some(ObjectKey::Logs(_)) => "logs",
        None => "other",
    }
}

/// The build id of any path under `builds/<id>/`, even one that is not a known key.
fn build_of(path: &str) -> Option<BuildId> {
    path.strip_prefix("builds/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

fn publish(stats: &BTreeMap<&'static str, KindStats>) {
    for kind in ["source", "certs", "result", "logs", "other"] {
        let s = stats.get(kind).copied().unwrap_or_default();
        metrics::gauge!(freeagent_shared::metrics::STORAGE_OBJECTS, "kind" => kind)
            .set(s.objects as f64);
        metrics::gauge!(freeagent_shared::metrics::STORAGE_BYTES, "kind" => kind)
            .set(s.bytes as f64);
    }
}
