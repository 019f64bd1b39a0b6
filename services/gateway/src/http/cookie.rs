//! The dashboard session's cookie, read from a request's headers: the rate limits count a
//! session by it before any credential is checked, and the credential checks look it up.

use axum::http::{HeaderMap, header};

/// The cookie's name.
pub(crate) const COOKIE: &str = "fa_session";

/// The session secret the request's cookie carries, if any.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}
