//! Dashboard sessions (ADR-0011): the `fa_session` cookie holds a random secret whose SHA-256
//! names a row of `ui_sessions`. The secret's prefix says what the session claims to speak for
//! (`fsk_`: an API key, `fsb_`: one build), so the credential checks can tell which path to take
//! without a lookup; the row decides. A session is a credential equivalent to what it was made
//! from: the key's scopes, revocation and expiry are checked on every request, as for the key.

use crate::error::Result;
use crate::http::cookie::{COOKIE, cookie};
use crate::state::AppState;
use axum::http::{HeaderMap, HeaderValue};
use freeagent_shared::db::{
    self, api_keys::ApiKey, ui_sessions::SessionFor, ui_sessions::UiSession,
};
use freeagent_shared::ids::BuildId;
use freeagent_shared::token::{self, TokenKind};
use std::time::Duration;

/// How long a session lasts from sign-in (no sliding renewal: sign in again after it).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The request carries a session cookie that claims to speak for an API key.
pub fn claims_key(headers: &HeaderMap) -> bool {
    cookie(headers).is_some_and(|c| c.starts_with(TokenKind::SessionForKey.prefix()))
}

/// The request carries a session cookie that claims to open one build.
pub fn claims_build(headers: &HeaderMap) -> bool {
    cookie(headers).is_some_and(|c| c.starts_with(TokenKind::SessionForBuild.prefix()))
}

/// The live session of the request's cookie.
pub async fn find(st: &AppState, headers: &HeaderMap) -> Result<Option<UiSession>> {
    let Some(secret) = cookie(headers) else {
        return Ok(None);
    };
    Ok(db::ui_sessions::ui_session_find(&st.pool, &token::hash(secret)).await?)
}

/// The API key a key session speaks for (revoked or expired keys included: the caller refuses
/// them with the same words as the key itself).
pub async fn key(st: &AppState, headers: &HeaderMap) -> Result<Option<ApiKey>> {
    if !claims_key(headers) {
        return Ok(None);
    }
    Ok(match find(st, headers).await? {
        Some(UiSession {
            speaks_for: SessionFor::Key(k),
            ..
        }) => Some(k),
        _ => None,
    })
}

/// The build a build session opens.
pub async fn build(st: &AppState, headers: &HeaderMap) -> Result<Option<BuildId>> {
    if !claims_build(headers) {
        return Ok(None);
    }
    Ok(match find(st, headers).await? {
        Some(UiSession {
            speaks_for: SessionFor::Build(b),
            ..
        }) => Some(b),
        _ => None,
    })
}

/// Whether the request came over TLS to the proxy in front of the gateway (the gateway itself
/// speaks plain HTTP): then the cookie is `Secure`.
pub fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get("forwarded")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|f| f.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

/// The `Set-Cookie` value that stores `secret` for `ttl`.
pub fn set_cookie(secret: &str, ttl: Duration, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs()
    ))
    .ok()
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static(
            "fa_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure",
        )
    } else {
        HeaderValue::from_static("fa_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

/// A new session for an API key or a build; returns the cookie secret and the CSRF token.
pub async fn create(st: &AppState, speaks_for: &SessionFor) -> Result<(String, String)> {
    let (kind, api_key_id, build_id) = match speaks_for {
        SessionFor::Key(k) => (TokenKind::SessionForKey, Some(k.id), None),
        SessionFor::Build(b) => (TokenKind::SessionForBuild, None, Some(*b)),
    };
    let secret = token::generate(kind);
    let csrf = token::generate(TokenKind::Csrf);
    let ttl =
        chrono::Duration::from_std(DEFAULT_SESSION_TTL).unwrap_or(chrono::Duration::hours(12));
    // Sign-ins are rare: they sweep the expired rows, so the table holds live sessions only.
    db::ui_sessions::ui_session_delete_expired(&st.pool).await?;
    db::ui_sessions::ui_session_insert(
        &st.pool,
        &db::ui_sessions::NewUiSession {
            id_hash: &token::hash(&secret),
            api_key_id,
            build_id,
            csrf_token: &csrf,
            expires_at: chrono::Utc::now() + ttl,
        },
    )
    .await?;
    Ok((secret, csrf))
}

/// Ends the request's session, if it has one.
pub async fn end(st: &AppState, headers: &HeaderMap) -> Result<()> {
    if let Some(secret) = cookie(headers) {
        db::ui_sessions::ui_session_delete(&st.pool, &token::hash(secret)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
        );
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = with_cookie("a=1; fa_session=fsk_abc; b=2");
        assert_eq!(cookie(&h), Some("fsk_abc"));
        assert!(claims_key(&h) && !claims_build(&h));
        assert_eq!(cookie(&with_cookie("fa_sessionx=1")), None);
        assert_eq!(cookie(&with_cookie("fa_session=")), None);
        assert!(claims_build(&with_cookie("fa_session=fsb_x")));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let c = set_cookie("fsk_x", Duration::from_secs(60), true)
            .map(|v| v.to_str().map(str::to_owned));
        let c = c.and_then(|r| r.ok()).unwrap_or_default();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_tls(&h));
        assert!(!over_tls(&HeaderMap::new()));
    }
}
