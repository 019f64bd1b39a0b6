//! `GET /api/builds/:id/logs` as server-sent events, with `Accept: text/event-stream` or
//! `?follow=true`: the past lines, then new ones as they come (`event: log`, `id: <seq>`), an
//! `event: status` at each status change, and `event: end` once the build is terminal and every
//! line was sent. `Last-Event-ID` (or `after`) resumes exactly after the last line a client saw.
//! A keep-alive event after 15 s idle so proxies do not cut the stream (`http::sse`).
//!
//! A follower subscribes to the gateway's live feed (`crate::logs::live`) first, then reads the past
//! (from the archive, or from the LOGS stream page by page), then sends what the feed brings,
//! skipping what it already sent. Once the build is terminal it waits for the archive (the
//! whole log, by definition) and sends what it still lacks from there, so `end` means complete.

use super::read::{MAX_LOG_LIMIT, holders, read};
use crate::error::GatewayError;
use crate::http::sse;
use crate::logs::live::{BuildNews, LiveLine};
use crate::logs::stream_page;
use crate::state::AppState;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use freeagent_shared::api::LogEntry;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::db;
use freeagent_shared::db::builds::Build;
use freeagent_shared::events::FarmEvent;
use freeagent_shared::ids::{Attempt, WorkerId};
use freeagent_shared::status::BuildStatus;
use freeagent_shared::subjects::{self, LogWriter};
use futures::StreamExt;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often a follower of an ended build looks for its archive.
const ARCHIVE_CHECK: Duration = Duration::from_millis(200);
/// How long it waits for the archive before it ends from the stream alone.
const ARCHIVE_WAIT: Duration = Duration::from_secs(30);

/// Whether the request asks for the event stream.
pub fn wanted(headers: &HeaderMap, follow: Option<&str>) -> bool {
    matches!(follow, Some("true" | "1"))
        || headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"))
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
    // The follower runs inside the response body: dropped with it when the client leaves.
    Ok(sse::response(move |out| async move {
        let _permit = permit;
        let mut f = Follower {
            holders: HashMap::new(),
            holders_read: None,
            backlog: VecDeque::new(),
            st,
            build,
            after,
            sent: None,
            status_known: None,
            out,
        };
        if let Err(Stop(why)) = f.run().await {
            f.send(sse::error(&why)).await;
        }
    }))
}

/// Why a follower stopped early, said to the client in an `error` event.
struct Stop(String);

impl From<GatewayError> for Stop {
    fn from(e: GatewayError) -> Self {
        tracing::warn!(error = %e.detail(), "log follower stopped");
        Stop("the farm cannot read this log right now; reconnect with Last-Event-ID".into())
    }
}

struct Follower {
    st: AppState,
    build: Build,
    /// The last line sent.
    after: u64,
    /// The last status sent.
    sent: Option<BuildStatus>,
    /// When the follower last learned the build's status (a read began, an event came).
    status_known: Option<Instant>,
    holders: HashMap<Attempt, WorkerId>,
    holders_read: Option<Instant>,
    /// Live lines not sent yet, in order: the first waits for the holders to be read again.
    backlog: VecDeque<Arc<LiveLine>>,
    out: sse::Out,
}

impl Follower {
    async fn run(&mut self) -> Result<(), Stop> {
        if !self.st.live.started(crate::logs::live::START_WAIT).await {
            return Err(Stop(
                "this gateway's live feed has not started; reconnect with Last-Event-ID".into(),
            ));
        }
        // Subscribed before reading the past: nothing falls between the two.
        let (mut sub, held) = self.st.live.build(self.build.id);
        self.status_known = Some(Instant::now());
        let b = self.current().await?;
        self.status(b.status).await?;
        if b.logs_archived_at.is_some() {
            return self.finish_from_archive(&b).await;
        }
        self.refresh_holders().await?;
        self.catch_up_with(held).await?;
        let mut terminal = b.status.is_terminal();
        while !terminal {
            tokio::select! {
                news = sub.rx.recv() => match news {
                    Some(BuildNews::Line(l)) => {
                        self.backlog.push_back(l);
                        self.drain().await?;
                    }
                    Some(BuildNews::Event(e)) => {
                        if let FarmEvent::Build(ev) = &e.1 {
                            self.status_known = Some(Instant::now());
                            self.status(ev.status).await?;
                            terminal = ev.status.is_terminal();
                        }
                    }
                    // Read by the gateway's status check, should an event be lost; a read that
                    // began before the follower last learned the status may be older than it.
                    Some(BuildNews::Checked { status: Some(status), read_at }) => {
                        if self.status_known.is_none_or(|t| read_at >= t) {
                            self.status(status).await?;
                            terminal = status.is_terminal();
                        }
                    }
                    Some(BuildNews::Checked { status: None, .. }) => {
                        return Err(Stop("the build is gone".into()));
                    }
                    None if sub.too_slow.load(Ordering::Acquire) => {
                        metrics::counter!("freeagent_live_clients_dropped_total").increment(1);
                        return Err(Stop(
                            "this client reads too slowly; reconnect with Last-Event-ID to resume".into(),
                        ));
                    }
                    None => return Err(Stop("the gateway is shutting down; reconnect".into())),
                },
                _ = tokio::time::sleep_until(self.recheck_at()), if !self.backlog.is_empty() => {
                    self.refresh_holders().await?;
                    self.drain().await?;
                }
            }
        }
        // Ended: the archive is the whole log. Until it is written, keep sending live lines.
        let deadline = Instant::now() + ARCHIVE_WAIT;
        let mut look = tokio::time::interval(ARCHIVE_CHECK);
        loop {
            tokio::select! {
                news = sub.rx.recv() => match news {
                    Some(BuildNews::Line(l)) => {
                        self.backlog.push_back(l);
                        self.drain().await?;
                    }
                    Some(BuildNews::Event(_) | BuildNews::Checked { .. }) => {}
                    // Too slow or shutting down: the stream and the archive still have it all.
                    None => {
                        self.catch_up().await?;
                        return self.end().await;
                    }
                },
                _ = tokio::time::sleep_until(self.recheck_at()), if !self.backlog.is_empty() => {
                    self.refresh_holders().await?;
                    self.drain().await?;
                }
                _ = look.tick() => {
                    let b = self.current().await?;
                    if b.logs_archived_at.is_some() {
                        return self.finish_from_archive(&b).await;
                    }
                    if Instant::now() > deadline {
                        tracing::warn!(build_id = %b.id, "no log archive yet; ending the follower from the stream");
                        self.catch_up().await?;
                        return self.end().await;
                    }
                }
            }
        }
    }

    async fn current(&self) -> Result<Build, Stop> {
        match db::builds::build_get(&self.st.pool, self.build.id).await {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(Stop("the build is gone".into())),
            Err(e) => Err(GatewayError::from(e).into()),
        }
    }

    async fn send(&self, e: Bytes) {
        self.out.send(e).await
    }

    async fn status(&mut self, status: BuildStatus) -> Result<(), Stop> {
        if self.sent == Some(status) || self.sent.is_some_and(|s| s.is_terminal()) {
            return Ok(());
        }
        self.sent = Some(status);
        let e = sse::event("status", None, &json!({ "status": status }).to_string());
        self.send(e).await;
        Ok(())
    }

    async fn entry(&mut self, l: LogEntry) -> Result<(), Stop> {
        if l.seq <= self.after {
            return Ok(());
        }
        self.after = l.seq;
        let e = sse::event(
            "log",
            Some(l.seq),
            &serde_json::to_string(&l).unwrap_or_default(),
        );
        self.send(e).await;
        Ok(())
    }

    /// When the holders may be read again for a waiting line: at most every 20 ms, so a worker
    /// writing lines for attempts it does not hold costs little.
    fn recheck_at(&self) -> tokio::time::Instant {
        let next = self
            .holders_read
            .map_or_else(Instant::now, |t| t + Duration::from_millis(20));
        tokio::time::Instant::from_std(next)
    }

    /// Sends the waiting live lines in order, each if its writer held the attempt it names. A
    /// claim is recorded before its worker can write, so a line is refused only once the holders
    /// were read after it arrived; until then it (and every line behind it) waits.
    async fn drain(&mut self) -> Result<(), Stop> {
        while let Some(l) = self.backlog.front().cloned() {
            let ok = match l.writer {
                LogWriter::Farm => true,
                LogWriter::Worker(w) => self.holders.get(&l.line.attempt) == Some(&w),
            };
            if !ok && self.holders_read.is_none_or(|t| t < l.received) {
                return Ok(());
            }
            self.backlog.pop_front();
            if ok {
                self.line(&l).await?;
            }
        }
        Ok(())
    }

    async fn line(&mut self, l: &LiveLine) -> Result<(), Stop> {
        if l.seq <= self.after {
            return Ok(());
        }
        self.after = l.seq;
        self.send(l.sse.clone()).await;
        Ok(())
    }

    async fn refresh_holders(&mut self) -> Result<(), Stop> {
        self.holders = holders(&self.st.pool, self.build.id).await?;
        self.holders_read = Some(Instant::now());
        Ok(())
    }

    /// Every line after the last one sent: from the lines this gateway holds if they reach
    /// back far enough (one lookup tells: the build's first stored line after the last one sent
    /// is held), else from the stream first.
    async fn catch_up_with(&mut self, held: Vec<Arc<LiveLine>>) -> Result<(), Stop> {
        let covered = match held.first() {
            None => false,
            Some(first) => stream_page::first_after(
                &self.st.nats,
                subjects::LOGS_STREAM,
                &super::read::writer_subjects(self.build.id, &self.holders),
                self.after,
            )
            .await?
            .is_none_or(|seq| seq >= first.seq),
        };
        if !covered {
            self.catch_up().await?;
        }
        self.backlog
            .extend(held.into_iter().filter(|l| l.seq > self.after));
        self.drain().await
    }

    /// Every stored line after the last one sent, from the stream.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        self.refresh_holders().await?;
        loop {
            let before = self.after;
            let page = read(
                &self.st.nats,
                &self.holders,
                self.build.id,
                self.after,
                MAX_LOG_LIMIT,
                // A follower goes on from its last line (and ends on the build's own end).
                false,
            )
            .await?;
            let next = page.next_after;
            for l in page.lines {
                self.entry(l).await?;
            }
            // Past lines no holder wrote are skipped for good.
            self.after = self.after.max(next);
            if next <= before {
                return Ok(());
            }
        }
    }

    async fn finish_from_archive(&mut self, b: &Build) -> Result<(), Stop> {
        let mut lines = Box::pin(crate::logs::archive::read(&self.st, b, self.after).await?);
        while let Some(l) = lines.next().await {
            self.entry(l?).await?;
        }
        self.status(b.status).await?;
        self.end().await
    }

    async fn end(&mut self) -> Result<(), Stop> {
        let status = self.sent.unwrap_or(self.build.status);
        let e = sse::event("end", None, &json!({ "status": status }).to_string());
        self.send(e).await;
        Ok(())
    }
}
