//! Server-sent events as bytes: an event is rendered once and the same bytes go to every client
//! that gets it (a log line to all its followers), so a delivery is a reference count and a
//! write. The response adds a keep-alive comment when a stream is idle so proxies do not cut it.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::convert::Infallible;
use std::fmt::Write;
use std::time::Duration;
use tokio::sync::mpsc;

/// An idle stream gets a comment this often.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
    event("error", None, &serde_json::json!({ "error": why }).to_string())
}

/// The response of a stream whose events come through `rx`; it ends when `rx` does.
pub fn response(rx: mpsc::Receiver<Bytes>) -> Response {
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(_) => Bytes::from_static(b":\n\n"),
        };
        Some((Ok::<_, Infallible>(chunk), rx))
    });
    let mut r = Body::from_stream(events).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
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
