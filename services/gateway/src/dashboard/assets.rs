//! The dashboard's static files, compiled into the gateway (`services/gateway/ui/`): no build
//! step, nothing fetched at run time, no other host. Every dashboard response carries the same
//! security headers: a Content-Security-Policy that allows only this origin's own files (no
//! inline script or style, no frames), `nosniff`, and no referrer.

use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Scripts, styles, images and connections from this origin only; nothing may frame the pages.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The page every dashboard path serves; its script draws the page the path names.
pub const INDEX_HTML: &str = include_str!("../../ui/index.html");

/// (name under `/ui/assets/`, content type, bytes).
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../ui/favicon.svg"),
    ),
    (
        "boot.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/boot.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/dom.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/live.js"),
    ),
    (
        "sign_in.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/sign_in.js"),
    ),
    (
        "builds.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/builds.js"),
    ),
    (
        "build.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/build.js"),
    ),
    (
        "ansi.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/ansi.js"),
    ),
    (
        "log.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/log.js"),
    ),
    (
        "workers.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/workers.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/overview.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/charts.js"),
    ),
];

/// An ETag from the file's bytes (FNV-1a: cheap, stable across builds of the same file).
fn etag(body: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in body.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("\"{h:016x}\"")
}

/// `GET /ui/assets/{name}`: revalidated on each load (`no-cache`), 304 when unchanged.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let tag = etag(body);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, *content_type)], *body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// Adds the security headers to every dashboard response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_allows_no_inline_code_and_no_framing() {
        assert!(!super::CSP.contains("unsafe"));
        assert!(super::CSP.contains("frame-ancestors 'none'"));
        assert!(super::CSP.contains("default-src 'self'"));
    }

    #[test]
    fn the_page_loads_no_other_host() {
        for (name, _, body) in super::FILES
            .iter()
            .chain([&("index.html", "", super::INDEX_HTML)])
        {
            // The SVG namespace is a name, not a place anything is loaded from.
            let body = body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{name} names a host"
            );
            assert!(
                !body.contains("innerHTML"),
                "{name} writes HTML from strings"
            );
        }
    }
}
