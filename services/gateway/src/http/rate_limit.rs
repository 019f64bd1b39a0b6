//! Rate limits: requests that carry a credential (a key or token header, or a dashboard session
//! cookie) are counted per credential (an API key acting for a worker counts per worker, so a
//! fleet of legacy workers sharing one key is not one bucket) and per address; requests without
//! one per address, more tightly; a result upload that names its worker only in its form, per
//! address. Over a limit the answer is 429 with `Retry-After`. Health probes and metrics are
//! never limited.

use crate::config::{Rate, RateLimits};
use crate::error::GatewayError;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use freeagent_shared::api_error::ErrorCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

fn limiter<K: Hash + Eq + Clone>(r: Rate) -> Option<Arc<DefaultKeyedRateLimiter<K>>> {
    let per_second = NonZeroU32::new(r.per_second)?;
    let burst = NonZeroU32::new(r.burst.max(r.per_second)).unwrap_or(per_second);
    Some(Arc::new(RateLimiter::keyed(
        Quota::per_second(per_second).allow_burst(burst),
    )))
}

#[derive(Clone)]
pub struct Limiter {
    keys: Option<Arc<DefaultKeyedRateLimiter<u64>>>,
    ips: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    anonymous: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    /// Credentials are bucketed by a keyed hash, never kept.
    hasher: RandomState,
}

impl Limiter {
    pub fn new(limits: &RateLimits) -> Self {
        Limiter {
            keys: limiter(limits.key),
            ips: limiter(limits.ip),
            anonymous: limiter(limits.anonymous),
            hasher: RandomState::new(),
        }
    }

    /// Forgets idle buckets, so memory follows the active clients.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.keys {
            l.retain_recent();
            l.shrink_to_fit();
        }
        for l in [&self.ips, &self.anonymous].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// How long the caller must wait, if it is over a limit.
    fn verdict(&self, req: &Request) -> Option<Duration> {
        let ip = freeagent_shared::http_server::peer(req).map(|a| a.ip());
        let wait = |l: &DefaultKeyedRateLimiter<IpAddr>, ip: &IpAddr| {
            l.check_key(ip)
                .err()
                .map(|n| n.wait_time_from(DefaultClock::default().now()))
        };
        match self.credential(req) {
            Some(cred) => {
                if !fleet_result(req)
                    && let Some(d) = self.keys.as_ref().and_then(|l| {
                        l.check_key(&cred)
                            .err()
                            .map(|n| n.wait_time_from(DefaultClock::default().now()))
                    })
                {
                    return Some(d);
                }
                ip.and_then(|ip| self.ips.as_ref().and_then(|l| wait(l, &ip)))
            }
            None => ip.and_then(|ip| {
                self.anonymous
                    .as_ref()
                    .and_then(|l| wait(l, &ip))
                    .or_else(|| self.ips.as_ref().and_then(|l| wait(l, &ip)))
            }),
        }
    }

    /// The bucket of the request's credential: the presented secret (hashed), plus the worker a
    /// key acts for.
    fn credential(&self, req: &Request) -> Option<u64> {
        let h = req.headers();
        let secret = [
            "x-api-key",
            "authorization",
            "x-build-token",
            "x-worker-token",
        ]
        .iter()
        .find_map(|name| h.get(*name).filter(|v| !v.is_empty()))
        .map(|v| v.as_bytes())
        // A dashboard session is a credential too: its pages and their API calls are not
        // squeezed into the anonymous rate of their address.
        .or_else(|| crate::http::cookie::cookie(h).map(str::as_bytes))?;
        let mut hasher = self.hasher.build_hasher();
        secret.hash(&mut hasher);
        if let Some(w) = h.get("x-worker-id") {
            w.as_bytes().hash(&mut hasher);
        } else if let Some(q) = req.uri().query()
            && let Some(w) = q.split('&').find(|p| p.starts_with("worker_id="))
        {
            w.hash(&mut hasher);
        }
        Some(hasher.finish())
    }
}

/// A result upload with a key that names no worker outside its form (the seed's workers share
/// one key and name themselves in the multipart form): counted per address only. Against the
/// shared key, a fleet's uploads refused each other and the submissions that share the key;
/// each one is refused after authentication unless its worker holds the build.
fn fleet_result(req: &Request) -> bool {
    matches!(
        req.uri().path(),
        "/api/workers/upload" | "/api/workers/result"
    ) && !req.headers().contains_key("x-worker-id")
        && !req.headers().contains_key("x-worker-token")
}

/// The middleware: 429 with `Retry-After` over a limit.
pub async fn middleware(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
    let exempt = matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics");
    if !exempt && let Some(wait) = limiter.verdict(&req) {
        metrics::counter!(freeagent_shared::metrics::HTTP_RATE_LIMITED).increment(1);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut resp = GatewayError::new(ErrorCode::RateLimited, "too many requests")
            .hint(format!(
                "slow down: retry after {secs} s (limits: FREEAGENT_RATE_LIMIT_*)"
            ))
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return resp;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;

    fn request(cookie: Option<&str>) -> Request {
        let mut b = Request::builder().uri("/api/builds");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        let mut req = b.body(axum::body::Body::empty()).unwrap();
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    }

    #[test]
    fn a_dashboard_session_is_counted_as_a_credential_not_as_anonymous() {
        let limiter = Limiter::new(&RateLimits {
            key: Rate {
                per_second: 1000,
                burst: 1000,
            },
            ip: Rate {
                per_second: 1000,
                burst: 1000,
            },
            anonymous: Rate {
                per_second: 1,
                burst: 2,
            },
        });
        let session = format!("theme=dark; {}=fas_secret", crate::http::cookie::COOKIE);
        assert!(limiter.credential(&request(Some(&session))).is_some());
        assert!(limiter.credential(&request(Some("theme=dark"))).is_none());
        assert!(limiter.credential(&request(None)).is_none());
        // Many requests of one session pass where the address's anonymous bucket holds two.
        for _ in 0..50 {
            assert_eq!(limiter.verdict(&request(Some(&session))), None);
        }
        let limited = (0..5)
            .filter_map(|_| limiter.verdict(&request(None)))
            .count();
        assert!(limited >= 2, "{limited} of 5 anonymous requests limited");
    }
}
