//! The builds feature's routes: submitting, reading, cancelling, retrying and downloading builds.

use crate::http::route::{self, Limits, Route};
use crate::http::schema::{Body, json, json_array, query};
use freeagent_shared::api::*;

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

pub(crate) fn routes(l: &Limits) -> Vec<Route> {
    vec![
        route::post("/api/builds", "Submit a build (multipart: platform, source, certs?, metadata?, priority?, queue?, max_attempts?, timeout?, retry_on_failure?)", super::submit::submit)
            .limit(l.submit)
            .takes(SUBMIT_FORM)
            .gives(json::<Submitted>())
            .created()
            .streaming(),
        route::post("/api/builds/submit", "Submit a build (older spelling)", super::submit::submit)
            .limit(l.submit)
            .takes(SUBMIT_FORM)
            .gives(json::<Submitted>())
            .created()
            .streaming(),
        route::get("/api/builds", "List builds (status, platform, worker_id, limit, cursor)", super::read::list)
            .query(query::<ListQuery>())
            .gives(json_array::<BuildSummary>()),
        route::get("/api/builds/{id}", "One build, with its artifacts and attempts", super::read::get)
            .gives(json::<BuildDetail>()),
        route::delete("/api/builds/{id}", "Cancel a build", super::cancel::cancel)
            .gives(json::<Cancelled>()),
        route::post("/api/builds/{id}/cancel", "Cancel a build", super::cancel::cancel)
            .gives(json::<Cancelled>()),
        route::post("/api/builds/{id}/retry", "A new build with the same inputs", super::retry::retry)
            .gives(json::<Retried>()),
        route::get("/api/builds/{id}/status", "Status, times in epoch milliseconds", super::read::status)
            .gives(json::<LegacyStatus>()),
        route::get("/api/builds/{id}/download", "Download the artifact (Range supported)", super::download::download_result)
            .gives(Body::Bytes("application/octet-stream"))
            .streaming(),
        route::get("/api/builds/{id}/download/{kind}", "Download result, source or logs", super::download::download)
            .gives(Body::Bytes("application/octet-stream"))
            .streaming(),
    ]
}
