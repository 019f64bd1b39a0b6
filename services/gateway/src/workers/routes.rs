//! The workers feature's routes: registration, the registry, and the HTTP worker protocol
//! (polling, inputs, reports, results, diagnostics).

use crate::http::route::{self, Limits, Route};
use crate::http::schema::{Body, json, query};
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
    vec![
        route::post("/api/builds/{id}/logs", "Report log lines ({level, message} or {logs: [...]})", super::reports::logs)
            .query(query::<WorkerIdQuery>())
            .takes(json::<LogBody>())
            .gives(json::<LogsAccepted>()),
        route::get("/api/builds/{id}/source", "The source, for the worker holding the build", super::poll::source)
            .query(query::<WorkerIdQuery>())
            .gives(Body::Bytes("application/octet-stream"))
            .streaming(),
        route::get("/api/builds/{id}/certs", "The certs, for the worker holding the build", super::poll::certs)
            .query(query::<WorkerIdQuery>())
            .gives(Body::Bytes("application/octet-stream"))
            .streaming(),
        route::get("/api/builds/{id}/certs-secure", "The certs as JSON for the seed's macOS VM bootstrap ({p12, p12Password, keychainPassword, provisioningProfiles}), for the worker holding the build; X-Build-Id must name the build", super::inputs::certs_secure)
            .query(query::<WorkerIdQuery>())
            .gives(json::<SecureCerts>()),
        route::post("/api/builds/{id}/heartbeat", "Renew the lease ({progress?})", super::poll::build_heartbeat)
            .query(query::<WorkerIdQuery>())
            .takes(json::<BuildBeat>())
            .gives(json::<BuildBeatReply>()),
        route::post("/api/workers/register", "Register or re-register a worker", super::register::register)
            .limit(l.json)
            .takes(json::<RegisterRequest>())
            .gives(json::<Registered>()),
        route::get("/api/workers", "The worker registry", super::registry::list)
            .gives(json::<WorkerList>()),
        route::post("/api/workers/{id}/drain", "Give a worker no new build", super::registry::drain)
            .gives(json::<Drained>()),
        route::post("/api/workers/{id}/undrain", "A draining worker takes new builds again", super::registry::undrain)
            .gives(json::<Drained>()),
        route::post("/api/workers/{id}/approve", "A worker awaiting approval (FREEAGENT_WORKER_APPROVAL=required) takes builds", super::registry::approve)
            .gives(json::<Approved>()),
        route::get("/api/workers/{id}/stats", "A worker's figures (a `worker` key: only for a worker it registered)", super::registry::stats)
            .gives(json::<WorkerStats>()),
        route::get("/api/workers/poll", "The held job, or a new one (wait ≤ 60 s)", super::poll::poll)
            .query(query::<PollQuery>())
            .gives(json::<PollReply>())
            .streaming(),
        route::post("/api/workers/heartbeat", "Presence, and a lease renewal ({build_id?, progress?})", super::reports::worker_heartbeat)
            .takes(json::<WorkerBeat>())
            .gives(json::<WorkerBeatReply>()),
        route::post("/api/workers/result", "Report the outcome (multipart: build_id, success, error_message, result)", super::result::result)
            .limit(l.result)
            .takes(RESULT_FORM)
            .gives(json::<Outcome>())
            .streaming(),
        route::post("/api/workers/upload", "Report the outcome (older spelling)", super::result::result)
            .limit(l.result)
            .takes(RESULT_FORM)
            .gives(json::<Outcome>())
            .streaming(),
        route::post("/api/workers/fail", "Report a failure ({build_id, error})", super::reports::fail)
            .takes(json::<FailBody>())
            .gives(json::<Outcome>()),
        route::post("/api/workers/abandon", "Give a build back ({build_id, reason})", super::reports::abandon)
            .takes(json::<FailBody>())
            .gives(json::<Success>()),
        route::post("/api/workers/unregister", "Leave; held builds go back to the queue", super::reports::unregister)
            .gives(json::<Unregistered>()),
        route::post("/api/workers/{id}/unregister", "Leave (older spelling, the worker's own id)", super::reports::unregister)
            .gives(json::<Unregistered>()),
        route::post("/api/builds/{id}/telemetry", "VM monitor figures ({type, timestamp, data}), kept as a debug log line", super::reports::telemetry)
            .limit(l.json)
            .query(query::<WorkerIdQuery>())
            .takes(json::<Telemetry>())
            .gives(json::<Success>()),
        route::post("/api/diagnostics/report", "Store a self-diagnostics report", super::diagnostics::report)
            .limit(l.json)
            .takes(json::<DiagnosticsReport>())
            .gives(json::<ReportStored>()),
        route::get("/api/diagnostics/{worker_id}", "A worker's reports, newest first (limit)", super::diagnostics::list)
            .query(query::<DiagnosticsQuery>())
            .gives(json::<DiagnosticsList>()),
        route::get("/api/diagnostics/{worker_id}/latest", "A worker's latest report", super::diagnostics::latest)
            .gives(json::<DiagnosticsView>()),
    ]
}
