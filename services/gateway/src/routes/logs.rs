//! Build logs, read back from the `LOGS` stream (`logs.<build_id>.<worker_id>`). A line's `seq`
//! is its JetStream sequence, so `after` resumes exactly where the last page ended. A worker's
//! lines are stored by the scheduler's log gate (or, for HTTP workers, the gateway) on
//! `logs.*.<its id>` only while it holds the attempt, so the subject names the writer; a line is
//! still shown only if its writer held the attempt it claims (`build_attempts`). Lines on `logs.<build_id>.farm` are the farm's own (only services may publish
//! there).

use crate::error::{GatewayError, Result};
use crate::extract::ReadableBuild;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use freeagent_shared::api::{LogPage, LogQuery};
use freeagent_shared::db;
use freeagent_shared::db::builds::Build;
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::subjects;
use freeagent_shared::wire::{self, LogLine};
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;

pub const DEFAULT_LOG_LIMIT: usize = 1000;
pub const MAX_LOG_LIMIT: usize = 10_000;

pub use freeagent_shared::api::LogEntry as Entry;

/// One page: the lines, and the stream sequence to resume after (past lines that were skipped).
pub struct Page {
    pub lines: Vec<Entry>,
    pub next_after: u64,
}

/// Who held each attempt of a build: the only writer whose lines count for it.
pub async fn holders(
    pool: &freeagent_shared::db::Pool,
    id: BuildId,
) -> Result<HashMap<Attempt, WorkerId>> {
    Ok(db::builds::build_attempts(pool, id)
        .await?
        .into_iter()
        .map(|a| (a.attempt, a.worker_id))
        .collect())
}

/// Up to `limit` lines after stream sequence `after`, oldest first, written by their attempt's
/// holder.
pub async fn read(
    nats: &async_nats::Client,
    holders: &HashMap<Attempt, WorkerId>,
    id: BuildId,
    after: u64,
    limit: usize,
) -> Result<Page> {
    let stored = crate::stream_page::read(
        nats,
        subjects::LOGS_STREAM,
        Some(subjects::logs_of(id)),
        after,
        limit,
    )
    .await?;
    let mut out = Vec::new();
    let mut next_after = after;
    for m in stored {
        let seq = m.seq;
        next_after = seq;
        let writer = subjects::log_writer(&m.subject);
        let allowed = |l: &LogLine| match writer {
            Some(subjects::LogWriter::Farm) => true,
            Some(subjects::LogWriter::Worker(w)) => holders.get(&l.attempt) == Some(&w),
            None => false,
        };
        match wire::decode::<LogLine>(&m.payload) {
            Ok(l) if !allowed(&l) => {
                tracing::warn!(build_id = %id, seq, writer = ?writer, attempt = %l.attempt, "skipping a log line from a worker that did not hold its attempt");
            }
            Ok(l) => out.push(Entry {
                seq,
                timestamp: l.timestamp,
                level: l.level,
                message: l.message,
                attempt: l.attempt,
            }),
            Err(e) => {
                tracing::warn!(build_id = %id, seq, error = %e, "skipping a malformed log line")
            }
        }
    }
    Ok(Page {
        lines: out,
        next_after,
    })
}

/// The build's whole log from the stream, page by page (for the archive and for downloads of
/// logs not yet archived).
pub fn pages(
    nats: async_nats::Client,
    holders: HashMap<Attempt, WorkerId>,
    id: BuildId,
) -> impl futures::Stream<Item = std::io::Result<Vec<Entry>>> + Send + 'static {
    let holders = std::sync::Arc::new(holders);
    futures::stream::unfold(Some(0u64), move |after| {
        let (nats, holders) = (nats.clone(), holders.clone());
        async move {
            let after = after?;
            match read(&nats, &holders, id, after, MAX_LOG_LIMIT).await {
                Ok(page) if page.next_after == after => None,
                Ok(Page { lines, next_after }) => Some((Ok(lines), Some(next_after))),
                Err(_) => Some((Err(std::io::Error::other("log stream unavailable")), None)),
            }
        }
    })
}

/// A page of lines (JSON), or the live event stream (`super::log_follow`). A finished build's
/// lines come from its archive once it is written (`crate::log_archive`).
pub async fn get(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    ReadableBuild(b): ReadableBuild,
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
    if super::log_follow::wanted(&headers, q.follow.as_deref()) {
        let from = super::log_follow::resume_point(&headers, after);
        return super::log_follow::stream(st, b, from);
    }
    // The seed's reading: its CLI prints the reply as the whole log and follows by slicing it
    // by count, so without `after` or `limit` the whole log is the answer (streamed).
    if !after_given && !limit_given {
        return whole(&st, &b).await;
    }
    let limit = limit.min(MAX_LOG_LIMIT);
    let page = if b.logs_archived_at.is_some() {
        let lines: Vec<Entry> = crate::log_archive::read(&st, &b, after)
            .await?
            .take(limit)
            .try_collect()
            .await?;
        let next_after = lines.last().map_or(after, |l| l.seq);
        Page { lines, next_after }
    } else {
        let holders = holders(&st.pool, b.id).await?;
        read(&st.nats, &holders, b.id, after, limit).await?
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
        crate::log_archive::read(st, b, 0)
            .await?
            .map_err(|e| std::io::Error::other(e.detail()))
            .boxed()
    } else {
        let holders = holders(&st.pool, b.id).await?;
        pages(st.nats.clone(), holders, b.id)
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
        let lines = crate::log_archive::read(st, b, 0).await?;
        Body::from_stream(lines.map(move |l| match l {
            Ok(l) => Ok(bytes::Bytes::from(l.text_line())),
            Err(e) => Err(std::io::Error::other(e.detail())),
        }))
    } else {
        let holders = holders(&st.pool, b.id).await?;
        Body::from_stream(pages(st.nats.clone(), holders, b.id).map_ok(move |p| text(&p)))
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
