//! Every route of the gateway, once: the router and the OpenAPI document (`/api/openapi.json`)
//! are both built from this table, so the document cannot drift from what is served.

use super::*;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::{Map, Value, json};

/// Who may call a route, as the OpenAPI security requirement.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Anyone,
    ApiKey,
    ApiKeyOrBuildToken,
    Worker,
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub who: Who,
    /// `None` for routes served by the shared health router.
    pub handler: Option<MethodRouter<AppState>>,
}

fn r(
    method: &'static str,
    path: &'static str,
    who: Who,
    summary: &'static str,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        summary,
        who,
        handler: Some(handler),
    }
}

/// Body limits the table needs.
pub struct Limits {
    pub submit: usize,
    pub json: usize,
    pub result: usize,
}

pub fn routes(l: &Limits) -> Vec<Route> {
    use Who::*;
    let submit = || post(submit::submit).layer(DefaultBodyLimit::max(l.submit));
    let result = || post(worker_reports::result).layer(DefaultBodyLimit::max(l.result));
    vec![
        r(
            "post",
            "/api/builds",
            ApiKey,
            "Submit a build (multipart: platform, source, certs?, metadata?, priority?, queue?, max_attempts?, timeout?, retry_on_failure?)",
            submit(),
        ),
        r(
            "post",
            "/api/builds/submit",
            ApiKey,
            "Submit a build (older spelling)",
            submit(),
        ),
        r(
            "get",
            "/api/builds",
            ApiKey,
            "List builds (status, platform, worker_id, limit, cursor)",
            get(builds::list),
        ),
        r(
            "get",
            "/api/builds/statistics",
            ApiKey,
            "Builds per status",
            get(reports::statistics),
        ),
        r(
            "get",
            "/api/builds/active",
            ApiKey,
            "Assigned and building builds",
            get(reports::active),
        ),
        r(
            "get",
            "/api/builds/{id}",
            ApiKeyOrBuildToken,
            "One build, with its artifacts and attempts",
            get(builds::get),
        ),
        r(
            "delete",
            "/api/builds/{id}",
            ApiKeyOrBuildToken,
            "Cancel a build",
            delete(cancel::cancel),
        ),
        r(
            "post",
            "/api/builds/{id}/cancel",
            ApiKeyOrBuildToken,
            "Cancel a build",
            post(cancel::cancel),
        ),
        r(
            "post",
            "/api/builds/{id}/retry",
            ApiKeyOrBuildToken,
            "A new build with the same inputs",
            post(retry::retry),
        ),
        r(
            "get",
            "/api/builds/{id}/status",
            ApiKeyOrBuildToken,
            "Status, times in epoch milliseconds",
            get(builds::status),
        ),
        r(
            "get",
            "/api/builds/{id}/logs",
            ApiKeyOrBuildToken,
            "Log lines (after, limit)",
            get(logs::get),
        ),
        r(
            "post",
            "/api/builds/{id}/logs",
            Worker,
            "Report log lines ({level, message} or {logs: [...]})",
            post(worker_reports::logs),
        ),
        r(
            "get",
            "/api/builds/{id}/download",
            ApiKeyOrBuildToken,
            "Download the artifact (Range supported)",
            get(download::download_result),
        ),
        r(
            "get",
            "/api/builds/{id}/download/{kind}",
            ApiKeyOrBuildToken,
            "Download result, source or logs",
            get(download::download),
        ),
        r(
            "get",
            "/api/builds/{id}/source",
            Worker,
            "The source, for the worker holding the build",
            get(worker_protocol::source),
        ),
        r(
            "get",
            "/api/builds/{id}/certs",
            Worker,
            "The certs, for the worker holding the build",
            get(worker_protocol::certs),
        ),
        r(
            "post",
            "/api/builds/{id}/heartbeat",
            Worker,
            "Renew the lease ({progress?})",
            post(worker_protocol::build_heartbeat),
        ),
        r(
            "post",
            "/api/workers/register",
            ApiKey,
            "Register or re-register a worker",
            post(workers::register).layer(DefaultBodyLimit::max(l.json)),
        ),
        r(
            "get",
            "/api/workers",
            ApiKey,
            "The worker registry",
            get(workers::list),
        ),
        r(
            "post",
            "/api/workers/{id}/drain",
            ApiKey,
            "Give a worker no new build",
            post(workers::drain),
        ),
        r(
            "get",
            "/api/workers/{id}/stats",
            ApiKey,
            "A worker's figures",
            get(workers::stats),
        ),
        r(
            "get",
            "/api/workers/poll",
            Worker,
            "The held job, or a new one (wait ≤ 60 s)",
            get(worker_protocol::poll),
        ),
        r(
            "post",
            "/api/workers/heartbeat",
            Worker,
            "Presence, and a lease renewal ({build_id?, progress?})",
            post(worker_reports::worker_heartbeat),
        ),
        r(
            "post",
            "/api/workers/result",
            Worker,
            "Report the outcome (multipart: build_id, success, error_message, result)",
            result(),
        ),
        r(
            "post",
            "/api/workers/upload",
            Worker,
            "Report the outcome (older spelling)",
            result(),
        ),
        r(
            "post",
            "/api/workers/fail",
            Worker,
            "Report a failure ({build_id, error})",
            post(worker_reports::fail),
        ),
        r(
            "post",
            "/api/workers/abandon",
            Worker,
            "Give a build back ({build_id, reason})",
            post(worker_reports::abandon),
        ),
        r(
            "post",
            "/api/workers/unregister",
            Worker,
            "Leave; held builds go back to the queue",
            post(worker_reports::unregister),
        ),
        r(
            "post",
            "/api/diagnostics/report",
            Worker,
            "Store a self-diagnostics report",
            post(diagnostics::report).layer(DefaultBodyLimit::max(l.json)),
        ),
        r(
            "get",
            "/api/diagnostics/{worker_id}",
            ApiKey,
            "A worker's reports, newest first (limit)",
            get(diagnostics::list),
        ),
        r(
            "get",
            "/api/diagnostics/{worker_id}/latest",
            ApiKey,
            "A worker's latest report",
            get(diagnostics::latest),
        ),
        r(
            "get",
            "/health",
            Anyone,
            "Status, queue and storage figures",
            get(health::health),
        ),
        r(
            "get",
            "/api/health",
            Anyone,
            "Status, queue and storage figures (older spelling)",
            get(health::health),
        ),
        r(
            "get",
            "/api/stats",
            Anyone,
            "Public farm figures",
            get(reports::public_stats),
        ),
        r(
            "get",
            "/public/stats",
            Anyone,
            "Public farm figures (older spelling)",
            get(reports::public_stats),
        ),
        r(
            "get",
            "/api/openapi.json",
            Anyone,
            "This document",
            get(openapi_handler),
        ),
        Route {
            method: "get",
            path: "/healthz",
            summary: "Liveness",
            who: Anyone,
            handler: None,
        },
        Route {
            method: "get",
            path: "/readyz",
            summary: "Readiness of Postgres, NATS and storage",
            who: Anyone,
            handler: None,
        },
        Route {
            method: "get",
            path: "/metrics",
            summary: "Prometheus metrics",
            who: Anyone,
            handler: None,
        },
    ]
}

async fn openapi_handler() -> axum::Json<Value> {
    // The document does not depend on the limits; build it from any.
    axum::Json(openapi(&routes(&Limits {
        submit: 0,
        json: 0,
        result: 0,
    })))
}

/// The OpenAPI 3 document of `routes`.
pub fn openapi(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let security = match route.who {
            Who::Anyone => json!([]),
            Who::ApiKey => json!([{"apiKey": []}, {"bearer": []}]),
            Who::ApiKeyOrBuildToken => json!([{"apiKey": []}, {"bearer": []}, {"buildToken": []}]),
            Who::Worker => json!([{"workerToken": []}, {"apiKey": []}]),
        };
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let op = json!({
            "summary": route.summary,
            "operationId": format!("{}{}", route.method, route.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "security": security,
            "responses": {
                "200": {"description": "Success"},
                "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(route.method.to_owned(), op);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Free Agent gateway", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "buildToken": {"type": "apiKey", "in": "header", "name": "X-Build-Token"},
                "workerToken": {"type": "apiKey", "in": "header", "name": "X-Worker-Token"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "code"],
                    "properties": {"error": {"type": "string"}, "code": {"type": "string"}, "hint": {"type": "string"}},
                },
            },
        },
    })
}
