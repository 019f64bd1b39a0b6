//! CSRF protection for requests the browser makes with the session cookie. A browser attaches
//! cookies by itself, so a state-changing request (anything but GET, HEAD, OPTIONS) that relies
//! on the session cookie must also carry the session's token in `X-CSRF-Token`, which only the
//! dashboard's own pages can read (`GET /ui/api/session`, same origin); otherwise 403.
//! `SameSite=Strict` already keeps the cookie off cross-site requests; this is the second lock.
//!
//! Requests with an explicit credential (API key, build or worker token headers) are left as
//! they are: a header is never attached by the browser on its own, so they cannot be forged
//! this way. Sign-in is exempt: it uses no session, and takes JSON only.

use super::session;
use crate::error::GatewayError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The header the dashboard sends the token in.
pub const HEADER: &str = "x-csrf-token";
/// The one state-changing route that needs no token.
pub const SIGN_IN: &str = "/ui/api/sign-in";

fn explicit_credential(req: &Request) -> bool {
    let h = req.headers();
    [
        "x-api-key",
        "authorization",
        "x-build-token",
        "x-worker-token",
    ]
    .iter()
    .any(|name| h.get(*name).is_some_and(|v| !v.is_empty()))
}

/// Whether `presented` is `expected`, in constant time.
pub fn token_matches(presented: Option<&str>, expected: &str) -> bool {
    presented.is_some_and(|p| {
        p.len() == expected.len() && bool::from(p.as_bytes().ct_eq(expected.as_bytes()))
    })
}

pub async fn middleware(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe
        || req.uri().path() == SIGN_IN
        || explicit_credential(&req)
        || crate::http::cookie::cookie(req.headers()).is_none()
    {
        return next.run(req).await;
    }
    let found = match session::find(&st, req.headers()).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let Some(s) = found else {
        return GatewayError::unauthorized()
            .hint("the dashboard session ended: sign in again at /ui/sign-in")
            .into_response();
    };
    let presented = req.headers().get(HEADER).and_then(|v| v.to_str().ok());
    if !token_matches(presented, &s.csrf_token) {
        tracing::warn!(path = %req.uri().path(), "a session request without its CSRF token was refused");
        return GatewayError::forbidden("missing or wrong CSRF token")
            .hint("requests made with the dashboard's session cookie must send X-CSRF-Token (from GET /ui/api/session)")
            .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn only_the_exact_token_matches() {
        assert!(token_matches(Some("fcs_abc"), "fcs_abc"));
        assert!(!token_matches(Some("fcs_abd"), "fcs_abc"));
        assert!(!token_matches(Some("fcs_ab"), "fcs_abc"));
        assert!(!token_matches(None, "fcs_abc"));
    }
}
