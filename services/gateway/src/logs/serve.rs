//! `GET /api/builds/{id}/logs`: a page of a build's lines as JSON, the whole log as text, or the
//! live event stream; a finished build's lines come from its archive once it is written.

use super::read::{DEFAULT_LOG_LIMIT, Entry, MAX_LOG_LIMIT, Page, holders, pages, read};
use crate::auth::extract::{BuildAccess, ReadableBuild};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use freeagent_shared::api::{LogPage, LogQuery};
use freeagent_shared::db::builds::Build;
use futures::{StreamExt, TryStreamExt};

/// A page of lines (JSON), or the live event stream (`super::follow`). A finished build's
/// lines come from its archive once it is written (`crate::logs::archive`).
pub async fn get(
    State(st): State<AppState>,
    BuildAccess(b, ..): ReadableBuild,
    headers: axum::http::HeaderMap,
    Query(q): Query<LogQuery>,
) -> Result<Response> {
    let after: u64 = match q.after.as_deref().filter(|s| !s.is_empty()) {
        None => 0,
        Some(v) => v.parse().map_err(|_| {
            GatewayError::bad_request(format!("invalid after {v:?}: expected a sequence number"))
        })?,
    };
    let (after_given, limit_given) = (
        q.after.as_deref().is_some_and(|s| !s.is_empty()),
        q.limit.as_deref().is_some_and(|s| !s.is_empty()),
    );
    let limit: usize = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        None => DEFAULT_LOG_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| GatewayError::bad_request("limit must be a positive integer"))?,
    };
    if super::follow::wanted(&headers, q.follow.as_deref()) {
        let from = crate::http::sse::resume_point(&headers, after);
        return super::follow::stream(st, b, from);
    }
    // The seed's reading: its CLI prints the reply as the whole log and follows by slicing it
    // by count, so without `after` or `limit` the whole log is the answer (streamed).
    if !after_given && !limit_given {
        return whole(&st, &b).await;
    }
    let limit = limit.min(MAX_LOG_LIMIT);
    let page = if b.logs_archived_at.is_some() {
        let lines: Vec<Entry> = crate::logs::archive::read(&st, &b, after)
            .await?
            .take(limit)
            .try_collect()
            .await?;
        let next_after = lines.last().map_or(after, |l| l.seq);
        let last = lines.len() < limit;
        Page {
            lines,
            next_after,
            last,
        }
    } else {
        let holders = holders(&st.pool, b.id).await?;
        read(
            &st.nats,
            &holders,
            b.id,
            after,
            limit,
            b.status.is_terminal(),
        )
        .await?
    };
    Ok(Json(LogPage {
        build_id: b.id,
        logs: page.lines,
        next_after: page.next_after,
    })
    .into_response())
}

/// Every line of `b`, oldest first: from the archive once written, else from the stream.
async fn entries(
    st: &AppState,
    b: &Build,
) -> Result<futures::stream::BoxStream<'static, std::io::Result<Entry>>> {
    Ok(if b.logs_archived_at.is_some() {
        crate::logs::archive::read(st, b, 0)
            .await?
            .map_err(|e| std::io::Error::other(e.detail()))
            .boxed()
    } else {
        let holders = holders(&st.pool, b.id).await?;
        pages(st.nats.clone(), holders, b.id, b.status.is_terminal())
            .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    })
}

/// The whole log as one `LogPage`, written as it is read: memory stays at a page however long
/// the log. A read that fails midway cuts the body short, so the client sees an error, never a
/// shorter log.
async fn whole(st: &AppState, b: &Build) -> Result<Response> {
    let lines = entries(st, b).await?;
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let head = format!("{{\"build_id\":\"{}\",\"logs\":[", b.id);
    let mut first = true;
    let seen = last.clone();
    let body = lines.map_ok(move |l| {
        seen.store(l.seq, std::sync::atomic::Ordering::Relaxed);
        let mut out = if std::mem::take(&mut first) {
            Vec::new()
        } else {
            vec![b',']
        };
        // An entry is plain data: serializing it cannot fail.
        let _ = serde_json::to_writer(&mut out, &l);
        bytes::Bytes::from(out)
    });
    let tail = futures::stream::once(async move {
        let next_after = last.load(std::sync::atomic::Ordering::Relaxed);
        Ok(bytes::Bytes::from(format!(
            "],\"next_after\":{next_after}}}"
        )))
    });
    let body = futures::stream::once(async move { Ok(bytes::Bytes::from(head)) })
        .chain(body)
        .chain(tail);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// The whole log as text, streamed: from the archive once written, else from the stream.
pub async fn download_text(st: &AppState, b: &Build) -> Result<Response> {
    let text = |lines: &[Entry]| {
        let mut text = String::new();
        for l in lines {
            text.push_str(&l.text_line());
        }
        bytes::Bytes::from(text)
    };
    let body = if b.logs_archived_at.is_some() {
        let lines = crate::logs::archive::read(st, b, 0).await?;
        Body::from_stream(lines.map(move |l| match l {
            Ok(l) => Ok(bytes::Bytes::from(l.text_line())),
            Err(e) => Err(std::io::Error::other(e.detail())),
        }))
    } else {
        let holders = holders(&st.pool, b.id).await?;
        Body::from_stream(
            pages(st.nats.clone(), holders, b.id, b.status.is_terminal()).map_ok(move |p| text(&p)),
        )
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.log\"", b.id),
            ),
        ],
        body,
    )
        .into_response())
}
