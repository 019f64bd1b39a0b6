//! The workers feature's routes: registration, the registry, and the HTTP worker protocol
//! (polling, inputs, reports, results, diagnostics).

use crate::http::route::{Limits, Route, Who, r};
use crate::http::schema::{Body, json, query};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use freeagent_shared::api::*;

/// The parts of a worker's report, in any order.
const RESULT_FORM: Body = Body::Multipart(&[
    ("build_id", false),
    ("worker_id", false),
    ("success", false),
    ("error_message", false),
    ("result", true),
]);

pub(crate) fn routes(l: &Limits) -> Vec<Route> {
    use Who::*;
    let result = || post(super::result::result).layer(DefaultBodyLimit::max(l.result));
    vec![
        r(
            "post",
            "/api/builds/{id}/logs",
            Worker,
            "Report log lines ({level, message} or {logs: [...]})",
            post(super::reports::logs),
        )
        .query(query::<WorkerIdQuery>()).takes(json::<LogBody>()).gives(json::<LogsAccepted>()),
        r(
            "get",
            "/api/builds/{id}/source",
            Worker,
            "The source, for the worker holding the build",
            get(super::poll::source),
        )
        .query(query::<WorkerIdQuery>()).gives(Body::Bytes("application/octet-stream"))
        .streaming(),
        r(
            "get",
            "/api/builds/{id}/certs",
            Worker,
            "The certs, for the worker holding the build",
            get(super::poll::certs),
        )
        .query(query::<WorkerIdQuery>()).gives(Body::Bytes("application/octet-stream"))
        .streaming(),
        r(
            "get",
            "/api/builds/{id}/certs-secure",
            Worker,
            "The certs as JSON for the seed's macOS VM bootstrap ({p12, p12Password, keychainPassword, provisioningProfiles}), for the worker holding the build; X-Build-Id must name the build",
            get(super::inputs::certs_secure),
        )
        .query(query::<WorkerIdQuery>()).gives(json::<SecureCerts>()),
        r(
            "post",
            "/api/builds/{id}/heartbeat",
            Worker,
            "Renew the lease ({progress?})",
            post(super::poll::build_heartbeat),
        )
        .query(query::<WorkerIdQuery>()).takes(json::<BuildBeat>()).gives(json::<BuildBeatReply>()),
        r(
            "post",
            "/api/workers/register",
            ApiKey,
            "Register or re-register a worker",
            post(super::register::register).layer(DefaultBodyLimit::max(l.json)),
        )
        .takes(json::<RegisterRequest>()).gives(json::<Registered>()),
        r(
            "get",
            "/api/workers",
            ApiKey,
            "The worker registry",
            get(super::registry::list),
        )
        .gives(json::<WorkerList>()),
        r(
            "post",
            "/api/workers/{id}/drain",
            ApiKey,
            "Give a worker no new build",
            post(super::registry::drain),
        )
        .gives(json::<Drained>()),
        r(
            "post",
            "/api/workers/{id}/undrain",
            ApiKey,
            "A draining worker takes new builds again",
            post(super::registry::undrain),
        )
        .gives(json::<Drained>()),
        r(
            "post",
            "/api/workers/{id}/approve",
            ApiKey,
            "A worker awaiting approval (FREEAGENT_WORKER_APPROVAL=required) takes builds",
            post(super::registry::approve),
        )
        .gives(json::<Approved>()),
        r(
            "get",
            "/api/workers/{id}/stats",
            ApiKey,
            "A worker's figures (a `worker` key: only for a worker it registered)",
            get(super::registry::stats),
        )
        .gives(json::<WorkerStats>()),
        r(
            "get",
            "/api/workers/poll",
            Worker,
            "The held job, or a new one (wait ≤ 60 s)",
            get(super::poll::poll),
        )
        .query(query::<PollQuery>()).gives(json::<PollReply>())
        .streaming(),
        r(
            "post",
            "/api/workers/heartbeat",
            Worker,
            "Presence, and a lease renewal ({build_id?, progress?})",
            post(super::reports::worker_heartbeat),
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
            post(super::reports::fail),
        )
        .takes(json::<FailBody>()).gives(json::<Outcome>()),
        r(
            "post",
            "/api/workers/abandon",
            Worker,
            "Give a build back ({build_id, reason})",
            post(super::reports::abandon),
        )
        .takes(json::<FailBody>()).gives(json::<Success>()),
        r(
            "post",
            "/api/workers/unregister",
            Worker,
            "Leave; held builds go back to the queue",
            post(super::reports::unregister),
        )
        .gives(json::<Unregistered>()),
        r(
            "post",
            "/api/workers/{id}/unregister",
            Worker,
            "Leave (older spelling, the worker's own id)",
            post(super::reports::unregister),
        )
        .gives(json::<Unregistered>()),
        r(
            "post",
            "/api/builds/{id}/telemetry",
            Worker,
            "VM monitor figures ({type, timestamp, data}), kept as a debug log line",
            post(super::reports::telemetry).layer(DefaultBodyLimit::max(l.json)),
        )
        .query(query::<WorkerIdQuery>()).takes(json::<Telemetry>()).gives(json::<Success>()),
        r(
            "post",
            "/api/diagnostics/report",
            Worker,
            "Store a self-diagnostics report",
            post(super::diagnostics::report).layer(DefaultBodyLimit::max(l.json)),
        )
        .takes(json::<DiagnosticsReport>()).gives(json::<ReportStored>()),
        r(
            "get",
            "/api/diagnostics/{worker_id}",
            ApiKey,
            "A worker's reports, newest first (limit)",
            get(super::diagnostics::list),
        )
        .query(query::<DiagnosticsQuery>()).gives(json::<DiagnosticsList>()),
        r(
            "get",
            "/api/diagnostics/{worker_id}/latest",
            ApiKey,
            "A worker's latest report",
            get(super::diagnostics::latest),
        )
        .gives(json::<DiagnosticsView>()),
    ]
}
