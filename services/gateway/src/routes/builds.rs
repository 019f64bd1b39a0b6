//! Reading builds: the list with filters and a cursor, one build in full, and the status shape
//! old clients poll (timestamps in epoch milliseconds).

use crate::auth::{self, SCOPE_READ};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use freeagent_shared::db::{self, builds::Build, builds::ListFilter};
use freeagent_shared::ids::{BuildId, WorkerId};
use serde_json::{Value, json};
use std::collections::HashMap;

pub const DEFAULT_LIST_LIMIT: i64 = 50;
pub const MAX_LIST_LIMIT: i64 = 500;

/// Parses a build id from the path, or answers 404 (a malformed id names no build).
pub fn parse_id(raw: &str) -> Result<BuildId> {
    raw.parse().map_err(|_| GatewayError::not_found("build"))
}

pub fn summary(b: &Build) -> Value {
    json!({
        "id": b.id,
        "platform": b.platform,
        "status": b.status,
        "worker_id": b.worker_id,
        "worker_name": b.worker_name,
        "submitted_at": b.submitted_at,
        "createdAt": b.submitted_at,
        "updated_at": b.updated_at,
        "completed_at": b.completed_at,
        "error_message": b.error_message,
        "has_result": b.result_key.is_some() && b.purged_at.is_none(),
        "purged_at": b.purged_at,
    })
}

fn detail(b: &Build) -> Value {
    let mut v = summary(b);
    let duration_ms = match (b.started_at, b.completed_at) {
        (Some(s), Some(e)) => Some((e - s).num_milliseconds()),
        _ => None,
    };
    let mut artifacts =
        vec![json!({"name": "source", "size": b.source_size, "sha256": b.source_sha256})];
    if b.purged_at.is_some() {
        // Retention deleted the files; the record keeps their facts, but nothing is offered.
        artifacts.clear();
    } else if let (Some(size), Some(sha)) = (b.result_size, &b.result_sha256) {
        artifacts.push(json!({"name": format!("{}.{}", b.id, b.platform.artifact_extension()), "size": size, "sha256": sha}));
    }
    if let Some(obj) = v.as_object_mut() {
        obj.insert("attempt".into(), json!(b.attempt));
        obj.insert("max_attempts".into(), json!(b.max_attempts));
        obj.insert("timeout_secs".into(), json!(b.timeout_secs));
        obj.insert("retry_on_failure".into(), json!(b.retry_on_failure));
        obj.insert("priority".into(), json!(b.priority));
        obj.insert("queue".into(), json!(b.queue));
        obj.insert("metadata".into(), b.metadata.clone());
        obj.insert("started_at".into(), json!(b.started_at));
        obj.insert("duration_ms".into(), json!(duration_ms));
        obj.insert("progress".into(), json!(b.progress));
        obj.insert("original_build_id".into(), json!(b.original_build_id));
        obj.insert("artifacts".into(), Value::Array(artifacts));
    }
    v
}

fn query_param<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
    expected: &str,
) -> Result<Option<T>> {
    match q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            GatewayError::bad_request(format!("invalid {name} {v:?}: expected {expected}"))
        }),
    }
}

pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    auth::require_api_key(&st, &headers, SCOPE_READ).await?;
    let limit: i64 = query_param(&q, "limit", "an integer")?.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit < 1 {
        return Err(GatewayError::bad_request("limit must be at least 1"));
    }
    let filter = ListFilter {
        status: query_param(
            &q,
            "status",
            "pending, assigned, building, completed, failed or cancelled",
        )?,
        platform: query_param(&q, "platform", "ios or android")?,
        worker_id: query_param::<WorkerId>(&q, "worker_id", "a worker id")?,
        after: query_param::<BuildId>(&q, "cursor", "a cursor from next_cursor")?,
        limit: limit.min(MAX_LIST_LIMIT),
    };
    let builds = db::builds::build_list(&st.pool, &filter).await?;
    let total = db::builds::build_count(&st.pool, &filter).await?;
    let next_cursor = (builds.len() as i64 == filter.limit)
        .then(|| builds.last().map(|b| b.id))
        .flatten();
    Ok(Json(json!({
        "builds": builds.iter().map(summary).collect::<Vec<_>>(),
        "total": total,
        "next_cursor": next_cursor,
    })))
}

pub async fn get(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let id = parse_or_auth(&st, &headers, &id).await?;
    let b = auth::build_reader(&st, &headers, id).await?;
    let attempts = db::builds::build_attempts(&st.pool, b.id).await?;
    let mut v = detail(&b);
    if let Some(obj) = v.as_object_mut() {
        let attempts: Vec<Value> = attempts
            .iter()
            .map(|a| json!({"attempt": a.attempt, "worker_id": a.worker_id, "claimed_at": a.claimed_at, "ended_at": a.ended_at, "outcome": a.outcome, "error": a.error}))
            .collect();
        obj.insert("attempts".into(), Value::Array(attempts));
    }
    Ok(Json(v))
}

fn ms(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| json!(t.timestamp_millis()))
        .unwrap_or(Value::Null)
}

pub async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let id = parse_or_auth(&st, &headers, &id).await?;
    let b = auth::build_reader(&st, &headers, id).await?;
    Ok(Json(json!({
        "id": b.id,
        "status": b.status,
        "platform": b.platform,
        "worker_id": b.worker_id,
        "submitted_at": b.submitted_at.timestamp_millis(),
        "started_at": ms(b.started_at),
        "completed_at": ms(b.completed_at),
        "error_message": b.error_message,
    })))
}

/// A malformed id is 404, but only after the caller showed some credential (401 otherwise).
pub async fn parse_or_auth(st: &AppState, headers: &HeaderMap, raw: &str) -> Result<BuildId> {
    match parse_id(raw) {
        Ok(id) => Ok(id),
        Err(not_found) => {
            if auth::presented_api_key(headers).is_some() {
                auth::require_api_key(st, headers, SCOPE_READ).await?;
                Err(not_found)
            } else if headers.contains_key("x-build-token")
                || headers.contains_key("x-worker-token")
            {
                Err(GatewayError::forbidden(
                    "this build token does not grant access to this build",
                ))
            } else {
                Err(GatewayError::unauthorized())
            }
        }
    }
}
