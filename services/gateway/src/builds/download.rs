//! `GET /api/builds/:id/download[/:type]`: streams the result, the source or the log archive
//! from storage, passing `Range` through, with the checksum storage computed at upload.

use crate::auth::extract::{BuildAccess, ReadableBuild};
use crate::error::{GatewayError, Result};
use crate::logs::serve as logs;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::object_key::ObjectKey;

pub async fn download_result(
    st: State<AppState>,
    build: ReadableBuild,
    method: Method,
    headers: HeaderMap,
) -> Result<Response> {
    serve(st, method, headers, build, "result").await
}

pub async fn download(
    st: State<AppState>,
    build: ReadableBuild,
    method: Method,
    headers: HeaderMap,
    Path((_, kind)): Path<(String, String)>,
) -> Result<Response> {
    serve(st, method, headers, build, &kind).await
}

async fn serve(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    BuildAccess(b, ..): ReadableBuild,
    kind: &str,
) -> Result<Response> {
    if let Some(when) = b.purged_at
        && kind != "logs"
    {
        return Err(GatewayError::new(
            ErrorCode::Gone,
            format!("the build's files were deleted by retention at {when}"),
        )
        .hint("retention keeps files for FREEAGENT_RETENTION (30 days by default)"));
    }
    let (key, sha, filename) = match kind {
        "result" => {
            let (Some(key), Some(sha)) = (&b.result_key, &b.result_sha256) else {
                return Err(
                    GatewayError::new(ErrorCode::BuildNotCompleted, "Build not completed").hint(
                        format!("the build is {}; wait for it to complete", b.status),
                    ),
                );
            };
            let key = ObjectKey::parse(key).map_err(GatewayError::unavailable)?;
            (
                key,
                sha.clone(),
                format!("{}.{}", b.id, b.platform.artifact_extension()),
            )
        }
        "source" => (
            ObjectKey::parse(&b.source_key).unwrap_or(ObjectKey::Source(b.id)),
            b.source_sha256.clone(),
            format!("{}-source", b.id),
        ),
        "logs" => return logs::download_text(&st, &b).await,
        other => {
            return Err(GatewayError::bad_request(format!(
                "unknown download type {other:?}; use result, source or logs"
            )));
        }
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // HEAD asks storage for headers only: clients size their parallel range requests with it.
    let upstream = if method == Method::HEAD {
        st.storage.head(&key).await
    } else {
        st.storage.get(&key, range).await
    }
    .map_err(GatewayError::unavailable)?;
    let status = upstream.status();
    match status.as_u16() {
        200 | 206 => {}
        416 => {
            return Err(GatewayError::new(
                ErrorCode::RangeNotSatisfiable,
                "the requested range is not satisfiable",
            ));
        }
        404 => {
            return Err(GatewayError::unavailable(format!(
                "object {key} is recorded but missing from storage"
            )));
        }
        s => {
            return Err(GatewayError::unavailable(format!(
                "storage answered {s} for {key}"
            )));
        }
    }
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        )
        .header("x-checksum-sha256", sha)
        .header(header::ACCEPT_RANGES, "bytes");
    for h in [header::CONTENT_LENGTH, header::CONTENT_RANGE] {
        if let Some(v) = upstream.headers().get(&h) {
            resp = resp.header(h, v.clone());
        }
    }
    let body = Body::from_stream(upstream.bytes_stream());
    Ok(resp
        .body(body)
        .map_err(GatewayError::unavailable)?
        .into_response())
}
