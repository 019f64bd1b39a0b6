//! The dashboard's pages and routes. Every page path serves the same small HTML page, whose
//! script draws what the path names; the server decides who may see it first: without a live
//! session a page redirects to the sign-in page (`303`, with `next` set), and a session opened
//! with a build token sees only that build's page.

use super::{assets, sign_in};
use crate::auth::{csrf, session};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use freeagent_shared::db::ui_sessions::SessionFor;

/// The dashboard's routes; `lib.rs` merges them into the gateway's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(page))
        .route("/ui/builds", get(page))
        .route("/ui/builds/{id}", get(page))
        .route("/ui/workers", get(page))
        // Any other page path: the page, as a 404, which says there is no such page.
        .route("/ui/{*rest}", get(not_found))
        .route("/ui/sign-in", get(sign_in_page))
        .route("/ui/assets/{name}", get(assets::asset))
        .route(csrf::SIGN_IN, post(sign_in::sign_in))
        .route("/ui/api/sign-out", post(sign_in::sign_out))
        .route("/ui/api/session", get(sign_in::current))
        .layer(axum::middleware::from_fn(assets::security_headers))
}

fn html() -> Response {
    let mut resp = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        assets::INDEX_HTML,
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The sign-in page needs no session.
async fn sign_in_page() -> Response {
    html()
}

/// Where a visitor without a session goes: the sign-in page, then back here. `ended`: the
/// browser held a session the farm no longer has (it expired); the sign-in page says so.
fn to_sign_in(uri: &Uri, ended: bool) -> Response {
    let next = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/ui/");
    let mut query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    if ended {
        query.push_str("&ended=1");
    }
    Redirect::to(&format!("/ui/sign-in?{query}")).into_response()
}

/// A path under `/ui/` that is no page: a 404 with the dashboard's page (signed in) or a JSON
/// 404 under the dashboard's API and assets, whose clients read JSON.
async fn not_found(st: State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if uri.path().starts_with("/ui/api/") || uri.path().starts_with("/ui/assets/") {
        return crate::error::GatewayError::not_found("no such route").into_response();
    }
    let mut resp = page(st, headers, uri).await;
    if resp.status().is_success() {
        *resp.status_mut() = axum::http::StatusCode::NOT_FOUND;
    }
    resp
}

async fn page(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let found = match session::find(&st, &headers).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    match found.map(|s| s.speaks_for) {
        None => to_sign_in(&uri, crate::http::cookie::cookie(&headers).is_some()),
        Some(SessionFor::Key(_)) => html(),
        Some(SessionFor::Build(id)) => {
            let own = format!("/ui/builds/{id}");
            if uri.path() == own {
                html()
            } else {
                Redirect::to(&own).into_response()
            }
        }
    }
}
