//! The logs feature's routes: a build's log (pages, the whole text, the live stream) and the
//! farm's event stream.

use crate::http::route::{self, Limits, Route};
use crate::http::schema::{Body, json, query};
use freeagent_shared::api::*;

pub(crate) fn routes(_l: &Limits) -> Vec<Route> {
    vec![
        route::get("/api/builds/{id}/logs", "Log lines (after, limit); with follow=true or Accept: text/event-stream, a live event stream (log, status, end; Last-Event-ID resumes)", super::serve::get)
            .query(query::<LogQuery>())
            .gives(json::<LogPage>())
            .streaming(),
        route::get("/api/events", "The farm's events as server-sent events (event: build | worker; data: a FarmEvent); filters queue, build_id, worker_id; Last-Event-ID or after resumes", super::events::get)
            .query(query::<EventsQuery>())
            .gives(Body::Bytes("text/event-stream"))
            .streaming(),
    ]
}
