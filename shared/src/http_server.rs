//! The HTTP server every service runs: axum's router behind hyper with the limits a public
//! service needs and `axum::serve` does not give — a header read timeout (slow-header clients
//! are cut off), an idle timeout and a minimum rate on request bodies, and caps on open
//! connections, in all and per client address (past them, new connections are closed at once
//! rather than queued) — plus the client's address for per-IP limits, and a graceful shutdown
//! that waits for in-flight requests, bounded.

mod min_rate;

use crate::config::{self, ConfigError};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
pub use min_rate::{MinRate, MinRateBody, TooSlow};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// One address may hold a quarter of the connections: a whole fleet behind one NAT (or on one
/// machine) fits, one client cannot take every slot.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 1024;
/// Bytes per second a request body must average, once `FREEAGENT_BODY_IDLE_TIMEOUT` of waiting
/// for it has passed: far below any real link, far above a drip that only keeps a request open.
pub const DEFAULT_BODY_MIN_RATE: u64 = 1024;
/// How long shutdown waits for in-flight requests (long polls and uploads included).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Connection-level limits, from `FREEAGENT_HEADER_TIMEOUT`, `FREEAGENT_BODY_IDLE_TIMEOUT`,
/// `FREEAGENT_BODY_MIN_RATE`, `FREEAGENT_MAX_CONNECTIONS`, `_PER_ADDRESS` and
/// `FREEAGENT_HTTP_SHUTDOWN_GRACE`.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
    /// Bytes per second (0: no minimum).
    pub body_min_rate: u64,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
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
            body_min_rate: config::bytes("FREEAGENT_BODY_MIN_RATE", DEFAULT_BODY_MIN_RATE)?,
            max_connections: max_connections.max(1),
            max_connections_per_address: config::parse(
                "FREEAGENT_MAX_CONNECTIONS_PER_ADDRESS",
                DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
                "a number of connections",
            )?
            .max(1),
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
    let per_address = PerAddress::default();
    let min_rate = (limits.body_min_rate > 0).then_some(MinRate {
        bytes_per_sec: limits.body_min_rate,
        grace: limits.body_idle_timeout,
    });
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
        let Some(address_slot) = per_address.take(peer.ip(), limits.max_connections_per_address)
        else {
            metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED).increment(1);
            tracing::warn!(%peer, max = limits.max_connections_per_address, "this address holds as many connections as one address may; closing a new one (FREEAGENT_MAX_CONNECTIONS_PER_ADDRESS)");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(|body| match min_rate {
                        Some(rate) => axum::body::Body::new(MinRateBody::new(body, rate)),
                        None => axum::body::Body::new(body),
                    });
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
            drop(address_slot);
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

/// Open connections per client address.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection counted against its address until dropped.
struct AddressSlot {
    counts: PerAddress,
    ip: IpAddr,
}

impl PerAddress {
    fn take(&self, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The client's address, for handlers and middleware that need it.
pub fn peer(req: &axum::extract::Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
}
