//! The figures feature's routes: `/health`, the farm-wide read-outs and the overview.

use crate::http::route::{self, Limits, Route};
use crate::http::schema::json;
use freeagent_shared::api::*;

pub(crate) fn routes(_l: &Limits) -> Vec<Route> {
    vec![
        route::get("/api/builds/statistics", "Builds per status", super::reports::statistics)
            .gives(json::<Statistics>()),
        route::get("/api/builds/active", "Assigned and building builds (a `worker` key: only the builds of the workers it registered)", super::reports::active)
            .gives(json::<ActiveBuilds>()),
        route::get("/api/overview", "Queue depths, and finished builds per bucket with success and duration percentiles over the last hour and day", super::overview::overview)
            .gives(json::<Overview>()),
        route::get("/health", "Status, queue and storage figures", super::health::health)
            .gives(json::<Health>()),
        route::get("/api/health", "Status, queue and storage figures (older spelling)", super::health::health)
            .gives(json::<Health>()),
        route::get("/api/stats", "Public farm figures (any origin may read them: the seed's landing page does)", super::reports::public_stats)
            .wrap(|m| m.layer(super::reports::public_cors()))
            .gives(json::<PublicStats>()),
        route::get("/public/stats", "Public farm figures (older spelling)", super::reports::public_stats)
            .wrap(|m| m.layer(super::reports::public_cors()))
            .gives(json::<PublicStats>()),
    ]
}
