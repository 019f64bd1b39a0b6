//! Every route of the gateway, once: each feature's routes, the OpenAPI document's and the
//! health router's. The router and the OpenAPI document (`/api/openapi.json`) are both built
//! from this list, and each route names its request and reply types, so the document cannot
//! drift from what is served.

use crate::http::route::{self, Limits, Public, Route};
use crate::http::schema::Body;
use crate::{builds, figures, keys, logs, workers};
use serde_json::Value;

pub(crate) fn routes(l: &Limits) -> Vec<Route> {
    let mut all = Vec::new();
    all.extend(builds::routes::routes(l));
    all.extend(logs::routes::routes(l));
    all.extend(workers::routes::routes(l));
    all.extend(keys::routes::routes(l));
    all.extend(figures::routes::routes(l));
    all.extend(vec![
        route::get("/api/openapi.json", "This document", openapi_handler),
        route::served_elsewhere("/healthz", "Liveness", Body::Bytes("text/plain")),
        route::served_elsewhere(
            "/readyz",
            "Readiness of Postgres, NATS and storage",
            Body::Bytes("text/plain"),
        ),
        route::served_elsewhere("/metrics", "Prometheus metrics", Body::Bytes("text/plain")),
    ]);
    all
}

async fn openapi_handler(_: Public) -> axum::Json<Value> {
    // The document does not depend on the limits; build it from any.
    axum::Json(crate::http::openapi::document(&routes(&Limits {
        submit: 0,
        json: 0,
        result: 0,
    })))
}
