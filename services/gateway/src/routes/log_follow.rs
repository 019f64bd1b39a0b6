//! `GET /api/builds/:id/logs` as server-sent events, with `Accept: text/event-stream` or
//! `?follow=true`: the past lines, then new ones as they come (`event: log`, `id: <seq>`), an
//! `event: status` at each status change, and `event: end` once the build is terminal and every
//! line was sent. `Last-Event-ID` (or `after`) resumes exactly after the last line a client saw.
//! Keep-alive comments every 15 s so proxies do not cut an idle stream.
//!
//! Each follower reads the LOGS stream page by page (the same reader as the paged route) every
//! quarter second while nothing new came; one shared subscription per gateway is issue 15's
//! next step.

use super::logs::{MAX_LOG_LIMIT, holders, read};
use crate::error::GatewayError;
use crate::state::AppState;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::db;
use freeagent_shared::db::builds::Build;
use freeagent_shared::status::BuildStatus;
use futures::stream::{self, StreamExt};
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;

/// How long a follower waits before looking again when nothing new came.
const IDLE: Duration = Duration::from_millis(250);

/// Whether the request asks for the event stream.
pub fn wanted(headers: &HeaderMap, follow: Option<&str>) -> bool {
    matches!(follow, Some("true" | "1"))
        || headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"))
}

/// Where a follower resumes: `Last-Event-ID`, else `after`.
pub fn resume_point(headers: &HeaderMap, after: u64) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(after)
}

struct Follow {
    /// Held for the stream's life: the gateway's cap on open streams.
    _permit: tokio::sync::OwnedSemaphorePermit,
    st: AppState,
    build: Build,
    after: u64,
    /// The last status sent; the first event names the status at the start.
    sent: Option<BuildStatus>,
    /// A terminal status was seen: one more empty read and the stream ends.
    terminal: bool,
    done: bool,
}

/// The event stream of `build`'s log from after `after`; 503 when the gateway already holds
/// `FREEAGENT_MAX_LOG_FOLLOWERS` streams open.
pub fn stream(st: AppState, build: Build, after: u64) -> Result<Response, GatewayError> {
    let Ok(permit) = st.log_followers.clone().try_acquire_owned() else {
        return Err(GatewayError::new(
            ErrorCode::Unavailable,
            "this gateway follows as many live logs as it may",
        )
        .hint("retry later, or read the log page by page (FREEAGENT_MAX_LOG_FOLLOWERS)"));
    };
    let start = Follow {
        _permit: permit,
        st,
        build,
        after,
        sent: None,
        terminal: false,
        done: false,
    };
    let events = stream::unfold(start, |mut f| async move {
        if f.done {
            return None;
        }
        let batch = f.next_batch().await;
        Some((stream::iter(batch.into_iter().map(Ok::<_, Infallible>)), f))
    })
    .flatten();
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

impl Follow {
    /// The next events to send (possibly none, after an idle wait).
    async fn next_batch(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        let status = match db::builds::build_get(&self.st.pool, self.build.id).await {
            Ok(Some(b)) => b.status,
            Ok(None) => return self.finish(out, "the build is gone"),
            Err(e) => {
                tracing::warn!(build_id = %self.build.id, error = %e, "log follower cannot read the build");
                return self.finish(out, "the farm's database is unavailable; reconnect");
            }
        };
        if self.sent != Some(status) {
            self.sent = Some(status);
            out.push(
                Event::default()
                    .event("status")
                    .data(json!({"status": status}).to_string()),
            );
        }
        // A terminal status first, then one more read: the lines written before it (and the
        // farm's closing line) are all in the stream by then.
        let was_terminal = self.terminal;
        self.terminal = status.is_terminal();
        let page = match holders(&self.st.pool, self.build.id).await {
            Ok(h) => read(&self.st.nats, &h, self.build.id, self.after, MAX_LOG_LIMIT).await,
            Err(e) => Err(e),
        };
        let page = match page {
            Ok(p) => p,
            Err(_) => return self.finish(out, "the log stream is unavailable; reconnect"),
        };
        let got_lines = !page.lines.is_empty();
        for line in &page.lines {
            out.push(
                Event::default()
                    .event("log")
                    .id(line.seq.to_string())
                    .data(serde_json::to_string(line).unwrap_or_default()),
            );
        }
        self.after = page.next_after.max(self.after);
        if was_terminal && self.terminal && !got_lines {
            out.push(
                Event::default()
                    .event("end")
                    .data(json!({"status": status}).to_string()),
            );
            self.done = true;
        } else if out.is_empty() {
            tokio::time::sleep(IDLE).await;
        }
        out
    }

    fn finish(&mut self, mut out: Vec<Event>, why: &str) -> Vec<Event> {
        out.push(
            Event::default()
                .event("error")
                .data(json!({"error": why}).to_string()),
        );
        self.done = true;
        out
    }
}
