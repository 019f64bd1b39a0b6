//! Signing in and out of the dashboard, and what the page learns about its session.
//!
//! `POST /ui/api/sign-in` takes JSON only (`{api_key}` or `{build_id, build_token}`), so no
//! other site can sign a browser in with a plain form post. The credential is checked by the
//! same code as an API request's (`auth`): an API key needs the `read` scope; a build token
//! opens its build only. The reply sets the session cookie and carries the CSRF token.

use crate::auth::session;
use crate::auth::{self, SCOPE_READ, SCOPE_SUBMIT};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use freeagent_shared::db::ui_sessions::{SessionFor, UiSession};
use freeagent_shared::ids::BuildId;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct SignIn {
    pub api_key: Option<String>,
    pub build_id: Option<String>,
    pub build_token: Option<String>,
}

/// What the page knows of its session (`GET /ui/api/session`, and the sign-in reply).
#[derive(Serialize)]
pub struct SessionView {
    /// `key` or `build`.
    pub kind: &'static str,
    /// The key's name (key sessions).
    pub name: Option<String>,
    pub scopes: Vec<String>,
    /// May cancel and retry (a `submit` key, or the build's own token).
    pub can_submit: bool,
    /// May drain and undrain workers.
    pub is_admin: bool,
    /// The one build a build session opens.
    pub build_id: Option<BuildId>,
    /// Send as `X-CSRF-Token` with every state-changing request.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

fn view(speaks_for: &SessionFor, csrf_token: String, expires_at: DateTime<Utc>) -> SessionView {
    match speaks_for {
        SessionFor::Key(k) => SessionView {
            kind: "key",
            name: Some(k.name.clone()),
            scopes: k.scopes.clone(),
            can_submit: auth::has_scope(k, SCOPE_SUBMIT),
            is_admin: auth::has_scope(k, auth::SCOPE_ADMIN),
            build_id: None,
            csrf_token,
            expires_at,
        },
        SessionFor::Build(b) => SessionView {
            kind: "build",
            name: None,
            scopes: vec![],
            can_submit: true,
            is_admin: false,
            build_id: Some(*b),
            csrf_token,
            expires_at,
        },
    }
}

fn header_map(name: &'static str, value: &str) -> Result<HeaderMap> {
    let mut h = HeaderMap::new();
    let v = HeaderValue::from_str(value.trim()).map_err(|_| {
        GatewayError::bad_request(format!("{name} has characters a credential cannot have"))
    })?;
    h.insert(name, v);
    Ok(h)
}

/// `POST /ui/api/sign-in`.
pub async fn sign_in(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: std::result::Result<Json<SignIn>, JsonRejection>,
) -> Result<Response> {
    let Json(req) = body.map_err(crate::http::body::bad_json)?;
    let speaks_for = match (&req.api_key, &req.build_id, &req.build_token) {
        (Some(key), None, None) => {
            let h = header_map("x-api-key", key)?;
            let key = auth::require_api_key(&st, &h, SCOPE_READ)
                .await
                .map_err(|e| e.hint("the dashboard needs a key with the 'read' scope"))?;
            SessionFor::Key(key)
        }
        (None, Some(id), Some(t)) => {
            let id: BuildId = id.trim().parse().map_err(|_| {
                GatewayError::forbidden("this build token does not grant access to this build")
            })?;
            let h = header_map("x-build-token", t)?;
            let b = auth::build_reader(&st, &h, id).await?;
            SessionFor::Build(b.id)
        }
        _ => {
            return Err(GatewayError::bad_request(
                "send {\"api_key\"} or {\"build_id\", \"build_token\"}",
            ));
        }
    };
    // A browser that was signed in before gives up its old session.
    session::end(&st, &headers).await?;
    let (secret, csrf) = session::create(&st, &speaks_for).await?;
    let secure = session::over_tls(&headers);
    let expires_at = Utc::now()
        + chrono::Duration::from_std(session::DEFAULT_SESSION_TTL)
            .unwrap_or(chrono::Duration::hours(12));
    let mut resp = Json(view(&speaks_for, csrf, expires_at)).into_response();
    if let Some(c) = session::set_cookie(&secret, session::DEFAULT_SESSION_TTL, secure) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    let kind = match speaks_for {
        SessionFor::Key(_) => "key",
        SessionFor::Build(_) => "build",
    };
    tracing::info!(kind, "dashboard sign-in");
    Ok(resp)
}

/// `POST /ui/api/sign-out` (the CSRF middleware has checked the token).
pub async fn sign_out(State(st): State<AppState>, headers: HeaderMap) -> Result<Response> {
    session::end(&st, &headers).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session::clear_cookie(session::over_tls(&headers)),
    );
    Ok(resp)
}

/// `GET /ui/api/session`: 401 without a live session.
/// The hint of a session the farm signed out (the dashboard shows it on the sign-in page).
pub const SESSION_ENDED: &str = "your session ended: it expired, or its key was revoked or lost the read scope; sign in again at /ui/sign-in";

pub async fn current(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<SessionView>> {
    // A session cookie the farm no longer honours: the page tells its reader why it signs out.
    let ended = || GatewayError::unauthorized().hint(SESSION_ENDED);
    let presented = crate::http::cookie::cookie(&headers).is_some();
    let Some(UiSession {
        speaks_for,
        csrf_token,
        expires_at,
    }) = session::find(&st, &headers).await?
    else {
        return Err(if presented {
            ended()
        } else {
            GatewayError::unauthorized().hint("sign in at /ui/sign-in")
        });
    };
    // A key revoked or expired since sign-in ends the session's use too.
    if let SessionFor::Key(_) = speaks_for {
        auth::require_api_key(&st, &headers, SCOPE_READ)
            .await
            .map_err(|_| ended())?;
    }
    Ok(Json(view(&speaks_for, csrf_token, expires_at)))
}
