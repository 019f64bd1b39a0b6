//! `GET /api/events` (API key): one server-sent-event stream of the farm's events — builds
//! submitted, assigned, building, finished, cancelled, requeued; workers registered, idle,
//! building, draining, offline — for dashboards and scripts. Filters by queue, build or worker;
//! each event's id is its `EVENTS` stream sequence, so `Last-Event-ID` (or `after`) resumes
//! with nothing missed or repeated. Live events come from the gateway's feed (`crate::logs::live`);
//! a resumed stream first reads what it missed from the stream.

use crate::auth::extract::{Key, Read};
use crate::error::{GatewayError, Result};
use crate::http::sse::resume_point;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use freeagent_shared::api::EventsQuery;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::events::FarmEvent;
use freeagent_shared::ids::{BuildId, WorkerId};
use freeagent_shared::status::QueueName;
use freeagent_shared::team::TeamName;
use freeagent_shared::{subjects, wire};
use std::sync::atomic::Ordering;

/// Events read from the stream per request while catching up.
const PAGE: usize = 1000;

/// Which events a client asked for, and may see.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    queue: Option<QueueName>,
    build: Option<BuildId>,
    worker: Option<WorkerId>,
    /// Builds of this team only (a key that is not an admin's). Workers serve every team: their
    /// events are shown to all.
    team: Option<TeamName>,
}

impl Filter {
    fn parse(q: &EventsQuery, team: Option<TeamName>) -> Result<Self> {
        let some = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(Filter {
            queue: some(&q.queue)
                .map(|v| QueueName::parse(&v))
                .transpose()
                .map_err(|e| GatewayError::bad_request(format!("invalid queue: {e}")))?,
            build: some(&q.build_id)
                .map(|v| v.parse())
                .transpose()
                .map_err(|_| GatewayError::bad_request("build_id must be a build's id (UUID)"))?,
            worker: some(&q.worker_id)
                .map(|v| v.parse())
                .transpose()
                .map_err(|_| GatewayError::bad_request("worker_id must be a worker's id (UUID)"))?,
            team,
        })
    }

    /// `matches`, and the event's build is of the client's team.
    async fn shows(&self, st: &AppState, e: &FarmEvent) -> bool {
        if !self.matches(e) {
            return false;
        }
        match (&self.team, e.build_id()) {
            (Some(team), Some(build)) => {
                st.build_teams.team_of(&st.pool, build).await.as_ref() == Some(team)
            }
            _ => true,
        }
    }

    pub fn matches(&self, e: &FarmEvent) -> bool {
        match e {
            FarmEvent::Build(b) => {
                self.queue.as_ref().is_none_or(|q| *q == b.queue)
                    && self.build.is_none_or(|id| id == b.build_id)
                    && self.worker.is_none_or(|w| b.worker_id == Some(w))
            }
            FarmEvent::Worker(w) => {
                self.queue.is_none()
                    && self.build.is_none()
                    && self.worker.is_none_or(|id| id == w.worker_id)
            }
        }
    }
}

pub async fn get(
    State(st): State<AppState>,
    Key { key, .. }: Key<Read>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response> {
    let filter = Filter::parse(&q, crate::auth::team_scope(&key).cloned())?;
    let after: Option<u64> = match q.after.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| {
            GatewayError::bad_request(format!("invalid after {v:?}: expected an event id"))
        })?),
    };
    let after = match (after, headers.contains_key("last-event-id")) {
        (_, true) => Some(resume_point(&headers, after.unwrap_or(0))),
        (a, false) => a,
    };
    let Ok(permit) = st.log_followers.clone().try_acquire_owned() else {
        return Err(GatewayError::new(
            ErrorCode::Unavailable,
            "this gateway serves as many live streams as it may",
        )
        .hint("retry later (FREEAGENT_MAX_LOG_FOLLOWERS)"));
    };
    Ok(crate::http::sse::response(move |out| async move {
        let _permit = permit;
        if let Err(why) = serve(&st, &filter, after, &out).await {
            out.send(crate::http::sse::error(&why)).await;
        }
    }))
}

fn event(seq: u64, e: &FarmEvent) -> Bytes {
    crate::http::sse::event(
        e.kind(),
        Some(seq),
        &serde_json::to_string(e).unwrap_or_default(),
    )
}

/// Sends the missed events (if resuming), then live ones, until the client leaves (the body,
/// and this with it, is dropped). `Err` is said to the client before the stream ends.
async fn serve(
    st: &AppState,
    filter: &Filter,
    after: Option<u64>,
    out: &crate::http::sse::Out,
) -> Result<(), String> {
    if !st.live.started(crate::logs::live::START_WAIT).await {
        return Err(
            "this gateway's live feed has not started; reconnect with Last-Event-ID".into(),
        );
    }
    // Subscribed before reading the past: nothing falls between the two.
    let mut sub = st.live.events();
    let mut last = after.unwrap_or(0);
    if let Some(mut from) = after {
        loop {
            let page = read(&st.nats, from, PAGE).await.map_err(|e| {
                tracing::warn!(error = %e.detail(), "events: cannot read the stream");
                "the farm's events are unavailable; reconnect with Last-Event-ID".to_owned()
            })?;
            let Some(&(end, _)) = page.last() else { break };
            let wanted = page
                .iter()
                .filter_map(|(seq, e)| e.as_ref().map(|e| (seq, e)));
            for (seq, e) in wanted {
                if filter.shows(st, e).await {
                    out.send(event(*seq, e)).await;
                }
            }
            from = end;
            last = end;
        }
    }
    loop {
        match sub.rx.recv().await {
            Some(e) if e.0 > last => {
                last = e.0;
                if filter.shows(st, &e.1).await {
                    out.send(event(e.0, &e.1)).await;
                }
            }
            Some(_) => {}
            None if sub.too_slow.load(Ordering::Acquire) => {
                metrics::counter!("freeagent_live_clients_dropped_total").increment(1);
                return Err(
                    "this client reads too slowly; reconnect with Last-Event-ID to resume".into(),
                );
            }
            None => return Err("the gateway is shutting down; reconnect".into()),
        }
    }
}

/// Up to `limit` events after `after`, oldest first.
async fn read(
    nats: &async_nats::Client,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Option<FarmEvent>)>> {
    let stored =
        crate::logs::stream_page::read(nats, subjects::EVENTS_STREAM, None, after, None, limit)
            .await?;
    // One that does not decode (another version's) is passed over, but still counts as the
    // page's last position.
    Ok(stored
        .into_iter()
        .map(|m| (m.seq, wire::decode::<FarmEvent>(&m.payload).ok()))
        .collect())
}
