//! Worker self-diagnostics: `POST /api/diagnostics/report` (from the worker itself) and
//! `GET /api/diagnostics/:worker_id` (`?limit=`) and `…/latest` (operators).

use crate::auth::extract::PathId;
use crate::auth::extract::{Key, Read, WorkerAuth};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use freeagent_shared::api::{
    DiagnosticsList, DiagnosticsQuery, DiagnosticsReport, DiagnosticsView, ReportStored,
};
use freeagent_shared::db::{self, diagnostics::Diagnostic, diagnostics::NewDiagnostic};
use freeagent_shared::ids::WorkerId;
use serde_json::Value;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 500;
const MAX_CHECKS: usize = 1000;

fn view(d: &Diagnostic) -> DiagnosticsView {
    DiagnosticsView {
        id: d.id,
        worker_id: d.worker_id,
        status: d.status.clone(),
        duration_ms: d.duration_ms,
        auto_fixed: d.auto_fixed,
        checks: d.checks.clone(),
        created_at: d.created_at,
        run_at: d.created_at.timestamp_millis(),
    }
}

pub async fn report(
    State(st): State<AppState>,
    WorkerAuth(credential): WorkerAuth,
    headers: HeaderMap,
    body: std::result::Result<Json<DiagnosticsReport>, JsonRejection>,
) -> Result<Json<ReportStored>> {
    // Credentials before the body: the worker's own token, or (older workers) an API key that
    // registered the worker the report names.
    let Json(r) = body.map_err(crate::http::body::bad_json)?;
    crate::http::multipart::no_nul("status", &r.status)?;
    r.checks
        .iter()
        .try_for_each(|c| crate::http::multipart::no_nul_json("checks", c))?;
    let caller = credential
        .caller(&st, &headers, Some(r.worker_id.as_str()))
        .await?;
    if caller.worker.id.to_string() != r.worker_id.trim() {
        return Err(GatewayError::forbidden(
            "a worker may report only its own diagnostics",
        ));
    }
    let worker_id = caller.worker.id;
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
    Ok(Json(ReportStored {
        id: d.id,
        status: "stored".into(),
        access_token: caller.token,
    }))
}

pub async fn list(
    State(st): State<AppState>,
    _key: Key<Read>,
    PathId(id): PathId<WorkerId>,
    Query(q): Query<DiagnosticsQuery>,
) -> Result<Json<DiagnosticsList>> {
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| GatewayError::bad_request("limit must be a positive integer"))?,
    };
    let reports = db::diagnostics::diagnostic_list(&st.pool, id, limit.min(MAX_LIMIT)).await?;
    Ok(Json(DiagnosticsList {
        worker_id: id,
        reports: reports.iter().map(view).collect(),
    }))
}

pub async fn latest(
    State(st): State<AppState>,
    _key: Key<Read>,
    PathId(id): PathId<WorkerId>,
) -> Result<Json<DiagnosticsView>> {
    let reports = db::diagnostics::diagnostic_list(&st.pool, id, 1).await?;
    reports
        .first()
        .map(|d| Json(view(d)))
        .ok_or_else(|| GatewayError::not_found("diagnostics report"))
}
