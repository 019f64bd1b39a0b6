//! New builds are inserted in batches: concurrent submissions share one `INSERT … SELECT FROM
//! unnest` and one commit. If a batch fails, its rows are retried one by one, so one bad row
//! (which validation should already have refused) cannot fail its neighbours.

use crate::error::GatewayError;
use freeagent_shared::batcher::{BatchError, Batcher};
use freeagent_shared::db::builds::{Build, NewBuild};
use freeagent_shared::db::{self, Pool};
use freeagent_shared::ids::BuildId;
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

/// Most rows one statement inserts.
const MAX_BATCH: usize = 128;
/// Insert statements in flight at once.
const PARALLEL: usize = 4;

pub type Inserts = Batcher<NewBuild, Result<Build, String>, String>;

pub fn start(pool: Pool) -> Inserts {
    // The batch task ends when the last handle (in `AppState`) is dropped.
    Batcher::start(MAX_BATCH, PARALLEL, CancellationToken::new(), move |rows| {
        let pool = pool.clone();
        async move { Ok(insert_batch(&pool, rows).await) }
    })
}

async fn insert_batch(pool: &Pool, rows: Vec<NewBuild>) -> Vec<Result<Build, String>> {
    match db::builds::build_insert_many(pool, &rows).await {
        Ok(inserted) => {
            let mut by_id: HashMap<BuildId, Build> =
                inserted.into_iter().map(|b| (b.id, b)).collect();
            rows.iter()
                .map(|r| {
                    by_id
                        .remove(&r.id)
                        .ok_or_else(|| format!("build {} was not inserted", r.id))
                })
                .collect()
        }
        Err(e) if rows.len() == 1 => vec![Err(e.to_string())],
        Err(e) => {
            tracing::warn!(error = %e, rows = rows.len(), "a batch insert failed; inserting its rows one by one");
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(
                    db::builds::build_insert(pool, r)
                        .await
                        .map_err(|e| e.to_string()),
                );
            }
            out
        }
    }
}

/// Inserts one build through the batcher.
pub async fn insert(inserts: &Inserts, row: NewBuild) -> Result<Build, GatewayError> {
    match inserts.call(row).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) | Err(BatchError::Failed(e)) => Err(GatewayError::unavailable(e)),
        Err(BatchError::Closed) => Err(GatewayError::unavailable("the gateway is shutting down")),
    }
}
