//! Every route of the gateway, once: each feature's routes, the OpenAPI document's and the
//! health router's. The router and the OpenAPI document (`/api/openapi.json`) are both built
//! from this list, and each route names its request and reply types, so the document cannot
//! drift from what is served.

use crate::http::route::{Limits, Route, Who, r};
use crate::http::schema::Body;
use crate::{builds, figures, keys, logs, workers};
use axum::routing::get;
use serde_json::Value;

pub(crate) fn routes(l: &Limits) -> Vec<Route> {
    use Who::*;
    let mut all = Vec::new();
    all.extend(builds::routes::routes(l));
    all.extend(logs::routes::routes(l));
    all.extend(workers::routes::routes(l));
    all.extend(keys::routes::routes(l));
    all.extend(figures::routes::routes(l));
    all.extend(vec![
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
    ]);
    all
}

async fn openapi_handler() -> axum::Json<Value> {
    // The document does not depend on the limits; build it from any.
    axum::Json(crate::http::openapi::document(&routes(&Limits {
        submit: 0,
        json: 0,
        result: 0,
    })))
}
