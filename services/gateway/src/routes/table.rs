//! Every route of the gateway, once: the router and the OpenAPI document (`/api/openapi.json`)
//! are both built from this table, and each route names its request and reply types, so the
//! document cannot drift from what is served.

use super::openapi::{Body, Params, json, json_array, query};
use super::*;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post};
use freeagent_shared::api::*;
use serde_json::Value;

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
    pub request: Body,
    pub reply: Body,
    /// The status of a success.
    pub status: u16,
    pub query: Option<Params>,
    /// Uploads, downloads and long polls: no request deadline.
    pub streaming: bool,
}

impl Route {
    fn takes(mut self, body: Body) -> Self {
        self.request = body;
        self
    }
    fn gives(mut self, body: Body) -> Self {
        self.reply = body;
        self
    }
    fn created(mut self) -> Self {
        self.status = 201;
        self
    }
    fn query(mut self, params: Params) -> Self {
        self.query = Some(params);
        self
    }
    fn streaming(mut self) -> Self {
        self.streaming = true;
        self
    }
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
        request: Body::None,
        reply: Body::None,
        status: 200,
        query: None,
        streaming: false,
    }
}

/// Body limits the table needs.
pub struct Limits {
    pub submit: usize,
    pub json: usize,
    pub result: usize,
}

/// The parts of a submission (any order; unknown parts are ignored).
const SUBMIT_FORM: Body = Body::Multipart(&[
    ("platform", false),
    ("source", true),
    ("certs", true),
    ("metadata", false),
    ("priority", false),
    ("queue", false),
    ("max_attempts", false),
    ("timeout", false),
    ("retry_on_failure", false),
]);

/// The parts of a worker's report, in any order.
const RESULT_FORM: Body = Body::Multipart(&[
    ("build_id", false),
    ("worker_id", false),
    ("success", false),
    ("error_message", false),
    ("result", true),
]);

pub fn routes(l: &Limits) -> Vec<Route> {
    use Who::*;
    let submit = || post(submit::submit).layer(DefaultBodyLimit::max(l.submit));
    let result = || post(worker_result::result).layer(DefaultBodyLimit::max(l.result));
    vec![
        r(
            "post",
            "/api/builds",
            ApiKey,
            "Submit a build (multipart: platform, source, certs?, metadata?, priority?, queue?, max_attempts?, timeout?, retry_on_failure?)",
            submit(),
        )
        .takes(SUBMIT_FORM).gives(json::<Submitted>()).created()
        .streaming(),
        r(
            "post",
            "/api/builds/submit",
            ApiKey,
            "Submit a build (older spelling)",
            submit(),
        )
        .takes(SUBMIT_FORM).gives(json::<Submitted>()).created()
        .streaming(),
        r(
            "get",
            "/api/builds",
            ApiKey,
            "List builds (status, platform, worker_id, limit, cursor)",
            get(builds::list),
        )
        .query(query::<ListQuery>()).gives(json_array::<BuildSummary>()),
        r(
            "get",
            "/api/builds/statistics",
            ApiKey,
            "Builds per status",
            get(reports::statistics),
        )
        .gives(json::<Statistics>()),
        r(
            "get",
            "/api/builds/active",
            ApiKey,
            "Assigned and building builds (a `worker` key: only the builds of the workers it registered)",
            get(reports::active),
        )
        .gives(json::<ActiveBuilds>()),
        r(
            "get",
            "/api/builds/{id}",
            ApiKeyOrBuildToken,
            "One build, with its artifacts and attempts",
            get(builds::get),
        )
        .gives(json::<BuildDetail>()),
        r(
            "delete",
            "/api/builds/{id}",
            ApiKeyOrBuildToken,
            "Cancel a build",
            delete(cancel::cancel),
        )
        .gives(json::<Cancelled>()),
        r(
            "post",
            "/api/builds/{id}/cancel",
            ApiKeyOrBuildToken,
            "Cancel a build",
            post(cancel::cancel),
        )
        .gives(json::<Cancelled>()),
        r(
            "post",
            "/api/builds/{id}/retry",
            ApiKeyOrBuildToken,
            "A new build with the same inputs",
            post(retry::retry),
        )
        .gives(json::<Retried>()),
        r(
            "get",
            "/api/builds/{id}/status",
            ApiKeyOrBuildToken,
            "Status, times in epoch milliseconds",
            get(builds::status),
        )
        .gives(json::<LegacyStatus>()),
        r(
            "get",
            "/api/builds/{id}/logs",
            ApiKeyOrBuildToken,
            "Log lines (after, limit); with follow=true or Accept: text/event-stream, a live event stream (log, status, end; Last-Event-ID resumes)",
            get(logs::get),
        )
        .query(query::<LogQuery>()).gives(json::<LogPage>())
        .streaming(),
        r(
            "get",
            "/api/events",
            ApiKey,
            "The farm's events as server-sent events (event: build | worker; data: a FarmEvent); filters queue, build_id, worker_id; Last-Event-ID or after resumes",
            get(events::get),
        )
        .query(query::<EventsQuery>()).gives(Body::Bytes("text/event-stream"))
        .streaming(),
        r(
            "post",
            "/api/builds/{id}/logs",
            Worker,
            "Report log lines ({level, message} or {logs: [...]})",
            post(worker_reports::logs),
        )
        .query(query::<WorkerIdQuery>()).takes(json::<LogBody>()).gives(json::<LogsAccepted>()),
        r(
            "get",
            "/api/builds/{id}/download",
            ApiKeyOrBuildToken,
            "Download the artifact (Range supported)",
            get(download::download_result),
        )
        .gives(Body::Bytes("application/octet-stream"))
        .streaming(),
        r(
            "get",
            "/api/builds/{id}/download/{kind}",
            ApiKeyOrBuildToken,
            "Download result, source or logs",
            get(download::download),
        )
        .gives(Body::Bytes("application/octet-stream"))
        .streaming(),
        r(
            "get",
            "/api/builds/{id}/source",
            Worker,
            "The source, for the worker holding the build",
            get(worker_protocol::source),
        )
        .query(query::<WorkerIdQuery>()).gives(Body::Bytes("application/octet-stream"))
        .streaming(),
        r(
            "get",
            "/api/builds/{id}/certs",
            Worker,
            "The certs, for the worker holding the build",
            get(worker_protocol::certs),
        )
        .query(query::<WorkerIdQuery>()).gives(Body::Bytes("application/octet-stream"))
        .streaming(),
        r(
            "get",
            "/api/builds/{id}/certs-secure",
            Worker,
            "The certs as JSON for the seed's macOS VM bootstrap ({p12, p12Password, keychainPassword, provisioningProfiles}), for the worker holding the build; X-Build-Id must name the build",
            get(certs_secure::certs_secure),
        )
        .query(query::<WorkerIdQuery>()).gives(json::<SecureCerts>()),
        r(
            "post",
            "/api/builds/{id}/heartbeat",
            Worker,
            "Renew the lease ({progress?})",
            post(worker_protocol::build_heartbeat),
        )
        .query(query::<WorkerIdQuery>()).takes(json::<BuildBeat>()).gives(json::<BuildBeatReply>()),
        r(
            "post",
            "/api/workers/register",
            ApiKey,
            "Register or re-register a worker",
            post(workers::register).layer(DefaultBodyLimit::max(l.json)),
        )
        .takes(json::<RegisterRequest>()).gives(json::<Registered>()),
        r(
            "get",
            "/api/workers",
            ApiKey,
            "The worker registry",
            get(workers::list),
        )
        .gives(json::<WorkerList>()),
        r(
            "post",
            "/api/workers/{id}/drain",
            ApiKey,
            "Give a worker no new build",
            post(workers::drain),
        )
        .gives(json::<Drained>()),
        r(
            "post",
            "/api/workers/{id}/undrain",
            ApiKey,
            "A draining worker takes new builds again",
            post(workers::undrain),
        )
        .gives(json::<Drained>()),
        r(
            "post",
            "/api/workers/{id}/approve",
            ApiKey,
            "A worker awaiting approval (FREEAGENT_WORKER_APPROVAL=required) takes builds",
            post(workers::approve),
        )
        .gives(json::<Approved>()),
        r(
            "get",
            "/api/overview",
            ApiKey,
            "Queue depths, and finished builds per bucket with success and duration percentiles over the last hour and day",
            get(crate::ui::overview::overview),
        )
        .gives(json::<Overview>()),
        r(
            "get",
            "/api/workers/{id}/stats",
            ApiKey,
            "A worker's figures (a `worker` key: only for a worker it registered)",
            get(workers::stats),
        )
        .gives(json::<WorkerStats>()),
        r(
            "get",
            "/api/workers/poll",
            Worker,
            "The held job, or a new one (wait ≤ 60 s)",
            get(worker_protocol::poll),
        )
        .query(query::<PollQuery>()).gives(json::<PollReply>())
        .streaming(),
        r(
            "post",
            "/api/workers/heartbeat",
            Worker,
            "Presence, and a lease renewal ({build_id?, progress?})",
            post(worker_reports::worker_heartbeat),
        )
        .takes(json::<WorkerBeat>()).gives(json::<WorkerBeatReply>()),
        r(
            "post",
            "/api/workers/result",
            Worker,
            "Report the outcome (multipart: build_id, success, error_message, result)",
            result(),
        )
        .takes(RESULT_FORM).gives(json::<Outcome>())
        .streaming(),
        r(
            "post",
            "/api/workers/upload",
            Worker,
            "Report the outcome (older spelling)",
            result(),
        )
        .takes(RESULT_FORM).gives(json::<Outcome>())
        .streaming(),
        r(
            "post",
            "/api/workers/fail",
            Worker,
            "Report a failure ({build_id, error})",
            post(worker_reports::fail),
        )
        .takes(json::<FailBody>()).gives(json::<Outcome>()),
        r(
            "post",
            "/api/workers/abandon",
            Worker,
            "Give a build back ({build_id, reason})",
            post(worker_reports::abandon),
        )
        .takes(json::<FailBody>()).gives(json::<Success>()),
        r(
            "post",
            "/api/workers/unregister",
            Worker,
            "Leave; held builds go back to the queue",
            post(worker_reports::unregister),
        )
        .gives(json::<Unregistered>()),
        r(
            "post",
            "/api/workers/{id}/unregister",
            Worker,
            "Leave (older spelling, the worker's own id)",
            post(worker_reports::unregister),
        )
        .gives(json::<Unregistered>()),
        r(
            "post",
            "/api/builds/{id}/telemetry",
            Worker,
            "VM monitor figures ({type, timestamp, data}), kept as a debug log line",
            post(worker_reports::telemetry).layer(DefaultBodyLimit::max(l.json)),
        )
        .query(query::<WorkerIdQuery>()).takes(json::<Telemetry>()).gives(json::<Success>()),
        r(
            "post",
            "/api/diagnostics/report",
            Worker,
            "Store a self-diagnostics report",
            post(diagnostics::report).layer(DefaultBodyLimit::max(l.json)),
        )
        .takes(json::<DiagnosticsReport>()).gives(json::<ReportStored>()),
        r(
            "get",
            "/api/diagnostics/{worker_id}",
            ApiKey,
            "A worker's reports, newest first (limit)",
            get(diagnostics::list),
        )
        .query(query::<DiagnosticsQuery>()).gives(json::<DiagnosticsList>()),
        r(
            "get",
            "/api/diagnostics/{worker_id}/latest",
            ApiKey,
            "A worker's latest report",
            get(diagnostics::latest),
        )
        .gives(json::<DiagnosticsView>()),
        r(
            "post",
            "/api/keys",
            ApiKey,
            "Create an API key ({name, scopes, expires_at?}); the secret is in this reply only (admin)",
            post(keys::create),
        )
        .takes(json::<CreateKeyRequest>()).gives(json::<CreatedKey>()).created(),
        r(
            "get",
            "/api/keys",
            ApiKey,
            "Every API key, without secrets (admin)",
            get(keys::list),
        )
        .gives(json::<KeyList>()),
        r(
            "delete",
            "/api/keys/{id}",
            ApiKey,
            "Revoke an API key (admin)",
            delete(keys::revoke),
        )
        .gives(json::<KeyRevoked>()),
        r(
            "post",
            "/api/keys/{id}/revoke",
            ApiKey,
            "Revoke an API key (admin)",
            post(keys::revoke),
        )
        .gives(json::<KeyRevoked>()),
        r(
            "get",
            "/health",
            Anyone,
            "Status, queue and storage figures",
            get(health::health),
        )
        .gives(json::<Health>()),
        r(
            "get",
            "/api/health",
            Anyone,
            "Status, queue and storage figures (older spelling)",
            get(health::health),
        )
        .gives(json::<Health>()),
        r(
            "get",
            "/api/stats",
            Anyone,
            "Public farm figures (any origin may read them: the seed's landing page does)",
            get(reports::public_stats).layer(reports::public_cors()),
        )
        .gives(json::<PublicStats>()),
        r(
            "get",
            "/public/stats",
            Anyone,
            "Public farm figures (older spelling)",
            get(reports::public_stats).layer(reports::public_cors()),
        )
        .gives(json::<PublicStats>()),
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
            request: Body::None,
            reply: Body::Bytes("text/plain"),
            status: 200,
            query: None,
            streaming: false,
        },
        Route {
            method: "get",
            path: "/readyz",
            summary: "Readiness of Postgres, NATS and storage",
            who: Anyone,
            handler: None,
            request: Body::None,
            reply: Body::Bytes("text/plain"),
            status: 200,
            query: None,
            streaming: false,
        },
        Route {
            method: "get",
            path: "/metrics",
            summary: "Prometheus metrics",
            who: Anyone,
            handler: None,
            request: Body::None,
            reply: Body::Bytes("text/plain"),
            status: 200,
            query: None,
            streaming: false,
        },
    ]
}

async fn openapi_handler() -> axum::Json<Value> {
    // The document does not depend on the limits; build it from any.
    axum::Json(super::openapi::document(&routes(&Limits {
        submit: 0,
        json: 0,
        result: 0,
    })))
}
