//! Every query on `diagnostics`: worker self-check reports, stored and read back newest first.

use super::Error;
use crate::ids::WorkerId;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Diagnostic {
    pub id: Uuid,
    pub worker_id: WorkerId,
    pub status: String,
    pub duration_ms: Option<i64>,
    pub auto_fixed: Option<bool>,
    pub checks: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewDiagnostic {
    pub worker_id: WorkerId,
    pub status: String,
    pub duration_ms: Option<i64>,
    pub auto_fixed: Option<bool>,
    pub checks: serde_json::Value,
}

pub async fn diagnostic_insert(
    db: impl PgExecutor<'_>,
    d: &NewDiagnostic,
) -> Result<Diagnostic, Error> {
    Ok(
        sqlx::query_as::<_, Diagnostic>(crate::db::sql!("sql/diagnostics/insert.sql"))
            .bind(Uuid::now_v7())
            .bind(d.worker_id)
            .bind(&d.status)
            .bind(d.duration_ms)
            .bind(d.auto_fixed)
            .bind(&d.checks)
            .fetch_one(db)
            .await?,
    )
}

/// A worker's reports, newest first.
pub async fn diagnostic_list(
    db: impl PgExecutor<'_>,
    worker: WorkerId,
    limit: i64,
) -> Result<Vec<Diagnostic>, Error> {
    Ok(
        sqlx::query_as::<_, Diagnostic>(crate::db::sql!("sql/diagnostics/list.sql"))
            .bind(worker)
            .bind(limit)
            .fetch_all(db)
            .await?,
    )
}
