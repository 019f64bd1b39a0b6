//! Worker self-diagnostics: `POST /api/diagnostics/report` (from the worker itself) and
//! `GET /api/diagnostics/:worker_id` (`?limit=`) and `…/latest` (operators).

use crate::auth::{self, SCOPE_READ, SCOPE_WORKER};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use freeagent_shared::db::{self, diagnostics::Diagnostic, diagnostics::NewDiagnostic};
use freeagent_shared::ids::WorkerId;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 500;
const MAX_CHECKS: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct Report {
    pub worker_id: String,
    pub status: String,
    pub duration_ms: Option<i64>,
    pub auto_fixed: Option<bool>,
    #[serde(default)]
    pub checks: Vec<Value>,
}

fn view(d: &Diagnostic) -> Value {
    json!({"id": d.id, "worker_id": d.worker_id, "status": d.status, "duration_ms": d.duration_ms, "auto_fixed": d.auto_fixed, "checks": d.checks, "created_at": d.created_at})
}

pub async fn report(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: std::result::Result<Json<Report>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(r) = body.map_err(super::workers::bad_json)?;
    let worker_id: WorkerId = r
        .worker_id
        .parse()
        .map_err(|_| GatewayError::bad_request("worker_id must be a registered worker's id"))?;
    // The worker's own token, or (older workers) an API key allowed to act as a worker.
    match headers.get("x-worker-token").and_then(|v| v.to_str().ok()) {
        Some(t) => {
            let w = db::workers::worker_get(&st.pool, worker_id).await?;
            if !w.is_some_and(|w| w.token_ok(t, chrono::Utc::now())) {
                return Err(GatewayError::forbidden(
                    "this worker token does not belong to that worker",
                ));
            }
        }
        None => {
            auth::require_api_key(&st, &headers, SCOPE_WORKER).await?;
            if db::workers::worker_get(&st.pool, worker_id)
                .await?
                .is_none()
            {
                return Err(GatewayError::not_found("worker"));
            }
        }
    }
    if !["healthy", "warning", "critical"].contains(&r.status.as_str()) {
        return Err(GatewayError::bad_request(
            "status must be healthy, warning or critical",
        ));
    }
    if r.checks.len() > MAX_CHECKS {
        return Err(GatewayError::bad_request(format!(
            "at most {MAX_CHECKS} checks per report"
        )));
    }
    if r.checks.iter().any(|c| !c.is_object()) {
        return Err(GatewayError::bad_request(
            "each check must be an object with name, status and message",
        ));
    }
    let d = db::diagnostics::diagnostic_insert(
        &st.pool,
        &NewDiagnostic {
            worker_id,
            status: r.status,
            duration_ms: r.duration_ms,
            auto_fixed: r.auto_fixed,
            checks: Value::Array(r.checks),
        },
    )
    .await?;
    let token = headers.get("x-worker-token").and_then(|v| v.to_str().ok());
    Ok(Json(
        json!({"id": d.id, "status": "stored", "access_token": token}),
    ))
}

fn worker(raw: &str) -> Result<WorkerId> {
    raw.parse().map_err(|_| GatewayError::not_found("worker"))
}

pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    auth::require_api_key(&st, &headers, SCOPE_READ).await?;
    let id = worker(&raw)?;
    let limit = match q.get("limit").filter(|s| !s.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| GatewayError::bad_request("limit must be a positive integer"))?,
    };
    let reports = db::diagnostics::diagnostic_list(&st.pool, id, limit.min(MAX_LIMIT)).await?;
    Ok(Json(
        json!({"worker_id": id, "reports": reports.iter().map(view).collect::<Vec<_>>()}),
    ))
}

pub async fn latest(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    auth::require_api_key(&st, &headers, SCOPE_READ).await?;
    let id = worker(&raw)?;
    let reports = db::diagnostics::diagnostic_list(&st.pool, id, 1).await?;
    reports
        .first()
        .map(|d| Json(view(d)))
        .ok_or_else(|| GatewayError::not_found("diagnostics report"))
}
