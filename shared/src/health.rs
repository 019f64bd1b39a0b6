//! `/healthz`, `/readyz` and `/metrics`, the same on every service. Liveness says the process
//! answers; readiness runs named dependency checks and turns 503 while the service drains.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A named readiness check: `Ok` when the dependency answers.
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Health {
    checks: Vec<(&'static str, Check)>,
    draining: Arc<AtomicBool>,
}

impl Health {
    pub fn new() -> Self {
        // Install the recorder now: anything recorded before it would be lost.
        let _ = crate::metrics::handle();
        Self::default()
    }

    pub fn check(mut self, name: &'static str, check: Check) -> Self {
        self.checks.push((name, check));
        self
    }

    /// Ready while Postgres answers a query.
    #[cfg(feature = "db")]
    pub fn postgres(self, pool: crate::db::Pool) -> Self {
        self.check(
            "postgres",
            Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move { crate::db::ping(&pool).await.map_err(|e| e.to_string()) })
            }),
        )
    }

    /// Ready while the NATS connection is up.
    #[cfg(feature = "nats")]
    pub fn nats(self, client: async_nats::Client) -> Self {
        self.check(
            "nats",
            Arc::new(move || {
                let state = client.connection_state();
                Box::pin(async move {
                    match state {
                        async_nats::connection::State::Connected => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                })
            }),
        )
    }

    /// Ready while JetStream serves the farm's streams (each has a leader on a cluster).
    #[cfg(feature = "nats")]
    pub fn jetstream(self, client: async_nats::Client) -> Self {
        let js = async_nats::jetstream::new(client);
        self.check(
            "jetstream",
            Arc::new(move || {
                let js = js.clone();
                Box::pin(async move { crate::nats::jetstream_ready(&js).await })
            }),
        )
    }

    /// Serves `router` (plus these endpoints' router is the caller's to merge) until `shutdown`:
    /// readiness turns 503 at once, requests in flight finish, then it returns.
    /// Serves `router` with the connection limits of `crate::http_server`; on shutdown `/readyz`
    /// starts answering 503 while in-flight requests finish.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        router: Router,
        limits: &crate::http_server::ServerLimits,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<()> {
        let health = self.clone();
        crate::http_server::serve(listener, router, limits, shutdown, move || {
            health.start_draining()
        })
        .await
    }

    /// From now on `/readyz` answers 503, so load balancers stop sending work.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Runs every check; the failures, by name.
    pub async fn failures(&self) -> Vec<(&'static str, String)> {
        let mut failed = Vec::new();
        for (name, check) in &self.checks {
            if let Err(e) = check().await {
                failed.push((*name, e));
            }
        }
        failed
    }

    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route(
                "/healthz",
                get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
            )
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self)
    }
}

async fn readyz(State(h): State<Health>) -> Response {
    if h.draining.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "draining"})),
        )
            .into_response();
    }
    let failed = h.failures().await;
    if failed.is_empty() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let checks: serde_json::Map<String, serde_json::Value> = failed
            .into_iter()
            .map(|(n, e)| (n.to_owned(), serde_json::Value::String(e)))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "not_ready", "failed": checks})),
        )
            .into_response()
    }
}

async fn metrics() -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}
