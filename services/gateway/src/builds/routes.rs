//! The builds feature's routes: submitting, reading, cancelling, retrying and downloading builds.

use crate::http::route::{Limits, Route, Who, r};
use crate::http::schema::{Body, json, json_array, query};
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
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
    use Who::*;
    let submit = || post(super::submit::submit).layer(DefaultBodyLimit::max(l.submit));
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
            get(super::read::list),
        )
        .query(query::<ListQuery>()).gives(json_array::<BuildSummary>()),
        r(
            "get",
            "/api/builds/{id}",
            ApiKeyOrBuildToken,
            "One build, with its artifacts and attempts",
            get(super::read::get),
        )
        .gives(json::<BuildDetail>()),
        r(
            "delete",
            "/api/builds/{id}",
            ApiKeyOrBuildToken,
            "Cancel a build",
            delete(super::cancel::cancel),
        )
        .gives(json::<Cancelled>()),
        r(
            "post",
            "/api/builds/{id}/cancel",
            ApiKeyOrBuildToken,
            "Cancel a build",
            post(super::cancel::cancel),
        )
        .gives(json::<Cancelled>()),
        r(
            "post",
            "/api/builds/{id}/retry",
            ApiKeyOrBuildToken,
            "A new build with the same inputs",
            post(super::retry::retry),
        )
        .gives(json::<Retried>()),
        r(
            "get",
            "/api/builds/{id}/status",
            ApiKeyOrBuildToken,
            "Status, times in epoch milliseconds",
            get(super::read::status),
        )
        .gives(json::<LegacyStatus>()),
        r(
            "get",
            "/api/builds/{id}/download",
            ApiKeyOrBuildToken,
            "Download the artifact (Range supported)",
            get(super::download::download_result),
        )
        .gives(Body::Bytes("application/octet-stream"))
        .streaming(),
        r(
            "get",
            "/api/builds/{id}/download/{kind}",
            ApiKeyOrBuildToken,
            "Download result, source or logs",
            get(super::download::download),
        )
        .gives(Body::Bytes("application/octet-stream"))
        .streaming(),
    ]
}
