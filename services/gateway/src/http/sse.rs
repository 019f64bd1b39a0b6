//! Server-sent events as bytes: an event is rendered once and the same bytes go to every client
//! that gets it (a log line to all its followers), so a delivery is a reference count and a
//! write. A stream's producer runs inside its response body; the body adds a keep-alive event
//! when a stream is idle, so proxies do not cut it and a browser can tell a quiet stream from a
//! stalled one (a comment never reaches a page's script).

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// An idle stream gets a keep-alive this often.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The keep-alive: a named event with no id (resuming is unaffected), which clients that do
/// not listen for it pass over.
const KEEP_ALIVE_EVENT: &[u8] = b"event: keepalive\ndata: {}\n\n";

/// `event: <kind>`, `id: <id>` and one `data:` line. `data` must be one line (JSON is).
pub fn event(kind: &str, id: Option<u64>, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + kind.len() + 32);
    s.push_str("event: ");
    s.push_str(kind);
    s.push('\n');
    if let Some(id) = id {
        let _ = writeln!(s, "id: {id}");
    }
    for line in data.lines() {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}

/// An `error` event: why the stream ends, and what to do.
pub fn error(why: &str) -> Bytes {
    event(
        "error",
        None,
        &serde_json::json!({ "error": why }).to_string(),
    )
}

/// Events a stream may have rendered and not yet written before its producer waits.
const OUTBOX: usize = 64;

/// Where a stream's producer puts its events. The producer runs inside the response body (on
/// the connection's task, see `response`): an event costs no task switch and no channel, and
/// when the client goes away the producer is dropped with the body.
#[derive(Clone, Default)]
pub struct Out {
    queue: Arc<Mutex<VecDeque<Bytes>>>,
}

impl Out {
    fn len(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    fn pop(&self) -> Option<Bytes> {
        self.queue.lock().ok()?.pop_front()
    }

    /// Queues `event`; waits while `OUTBOX` events are waiting to be written.
    pub async fn send(&self, event: Bytes) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(event);
        }
        // Pending only while the queue is full, and the body always writes a queued event
        // before it polls the producer again: no waker is needed.
        std::future::poll_fn(|_| {
            if self.len() >= OUTBOX {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }
}

/// The body: the producer's queued events, then the producer run until it queues more.
struct Produced {
    out: Out,
    producer: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    keep_alive: tokio::time::Interval,
    wrote: bool,
}

impl Stream for Produced {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(e) = this.out.pop() {
            this.wrote = true;
            return Poll::Ready(Some(Ok(e)));
        }
        if let Some(p) = this.producer.as_mut()
            && p.as_mut().poll(cx).is_ready()
        {
            this.producer = None;
        }
        if let Some(e) = this.out.pop() {
            this.wrote = true;
            return Poll::Ready(Some(Ok(e)));
        }
        if this.producer.is_none() {
            return Poll::Ready(None);
        }
        // A keep-alive when nothing was written for a whole interval.
        if this.keep_alive.poll_tick(cx).is_ready() && !std::mem::take(&mut this.wrote) {
            return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE_EVENT))));
        }
        Poll::Pending
    }
}

/// The response of an event stream whose events `produce` sends to its `Out`; the stream ends
/// when `produce` returns.
pub fn response<F, Fut>(produce: F) -> Response
where
    F: FnOnce(Out) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let out = Out::default();
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = Produced {
        producer: Some(Box::pin(produce(out.clone()))),
        out,
        keep_alive,
        // The first tick is immediate: not a reason for a comment.
        wrote: true,
    };
    let mut r = Body::from_stream(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Where a follower resumes: `Last-Event-ID`, else `after`.
pub fn resume_point(headers: &axum::http::HeaderMap, after: u64) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_its_kind_id_and_data_then_a_blank_line() {
        assert_eq!(
            event("log", Some(7), r#"{"a":1}"#),
            Bytes::from_static(b"event: log\nid: 7\ndata: {\"a\":1}\n\n")
        );
        assert_eq!(
            event("end", None, "x\ny"),
            Bytes::from_static(b"event: end\ndata: x\ndata: y\n\n")
        );
    }
}
