//! The HTTP server every service runs: axum's router behind hyper with the limits a public
//! service needs and `axum::serve` does not give — a header read timeout (slow-header clients
//! are cut off), an idle timeout on request bodies, and a cap on open connections (past it, new
//! connections are closed at once rather than queued) — plus the client's address for per-IP
//! limits, and a graceful shutdown that waits for in-flight requests, bounded.

use crate::config::{self, ConfigError};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long shutdown waits for in-flight requests (long polls and uploads included).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Connection-level limits, from `FREEAGENT_HEADER_TIMEOUT`, `FREEAGENT_BODY_IDLE_TIMEOUT`,
/// `FREEAGENT_MAX_CONNECTIONS` and `FREEAGENT_HTTP_SHUTDOWN_GRACE`.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

impl ServerLimits {
    pub fn from_env() -> Result<Self, ConfigError> {
        let max_connections = config::parse(
            "FREEAGENT_MAX_CONNECTIONS",
            DEFAULT_MAX_CONNECTIONS,
            "a number of connections",
        )?;
        Ok(ServerLimits {
            header_timeout: config::duration("FREEAGENT_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT)?,
            body_idle_timeout: config::duration(
                "FREEAGENT_BODY_IDLE_TIMEOUT",
                DEFAULT_BODY_IDLE_TIMEOUT,
            )?,
            max_connections: max_connections.max(1),
            shutdown_grace: config::duration(
                "FREEAGENT_HTTP_SHUTDOWN_GRACE",
                DEFAULT_SHUTDOWN_GRACE,
            )?,
        })
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests finish (at most
/// `limits.shutdown_grace`). `on_shutdown` runs first (e.g. `/readyz` starts answering 503).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: &ServerLimits,
    shutdown: CancellationToken,
    on_shutdown: impl FnOnce(),
) -> std::io::Result<()> {
    // A body that stalls longer than this between two chunks fails, and the handler with it.
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_idle_timeout,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED).increment(1);
            tracing::warn!(%peer, max = limits.max_connections, "connection cap reached; closing a new connection (FREEAGENT_MAX_CONNECTIONS)");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    on_shutdown();
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "requests still in flight at the end of the shutdown grace; closing them");
    }
    Ok(())
}

/// The client's address, for handlers and middleware that need it.
pub fn peer(req: &axum::extract::Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
}
