//! The figures feature's routes: `/health`, the farm-wide read-outs and the overview.

use crate::http::route::{Limits, Route, Who, r};
use crate::http::schema::json;
use axum::routing::get;
use freeagent_shared::api::*;

pub(crate) fn routes(_l: &Limits) -> Vec<Route> {
    use Who::*;
    vec![
        r(
            "get",
            "/api/builds/statistics",
            ApiKey,
            "Builds per status",
            get(super::reports::statistics),
        )
        .gives(json::<Statistics>()),
        r(
            "get",
            "/api/builds/active",
            ApiKey,
            "Assigned and building builds (a `worker` key: only the builds of the workers it registered)",
            get(super::reports::active),
        )
        .gives(json::<ActiveBuilds>()),
        r(
            "get",
            "/api/overview",
            ApiKey,
            "Queue depths, and finished builds per bucket with success and duration percentiles over the last hour and day",
            get(super::overview::overview),
        )
        .gives(json::<Overview>()),
        r(
            "get",
            "/health",
            Anyone,
            "Status, queue and storage figures",
            get(super::health::health),
        )
        .gives(json::<Health>()),
        r(
            "get",
            "/api/health",
            Anyone,
            "Status, queue and storage figures (older spelling)",
            get(super::health::health),
        )
        .gives(json::<Health>()),
        r(
            "get",
            "/api/stats",
            Anyone,
            "Public farm figures (any origin may read them: the seed's landing page does)",
            get(super::reports::public_stats).layer(super::reports::public_cors()),
        )
        .gives(json::<PublicStats>()),
        r(
            "get",
            "/public/stats",
            Anyone,
            "Public farm figures (older spelling)",
            get(super::reports::public_stats).layer(super::reports::public_cors()),
        )
        .gives(json::<PublicStats>()),
    ]
}
