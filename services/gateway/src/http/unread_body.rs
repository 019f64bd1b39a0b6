//! A refused request's unread body is drained (up to a bound) before the answer goes out, and
//! the connection is closed after it unless the body was read to its end. Closing a socket with unread bytes makes the kernel reset
//! it, so a client still sending an upload refused early (a 429 from the rate limits, a 413, a
//! 403) saw "connection reset" mid-body instead of the answer, and a client reusing the
//! connection saw its next request fail.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Read at most this much of a refused body: past it the connection is closed anyway (a reset
/// is then the cheaper answer than receiving gigabytes for nothing).
const DRAIN_MAX: u64 = 64 << 20;
/// And for at most this long.
const DRAIN_TIME: Duration = Duration::from_secs(10);

type Slot = Arc<Mutex<Option<Body>>>;

/// The request body, handed back to `slot` if it is dropped before its end.
struct Tracked {
    inner: Option<Body>,
    ended: bool,
    slot: Slot,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.ended
            && let Some(b) = self.inner.take()
            && !b.is_end_stream()
            && let Ok(mut slot) = self.slot.lock()
        {
            *slot = Some(b);
        }
    }
}

/// The middleware (outermost: it sees every refusal, the rate limits' included).
pub async fn middleware(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        return next.run(req).await;
    }
    let slot: Slot = Arc::default();
    let (parts, body) = req.into_parts();
    let tracked = Tracked {
        inner: Some(body),
        ended: false,
        slot: slot.clone(),
    };
    let mut resp = next
        .run(Request::from_parts(parts, Body::new(tracked)))
        .await;
    let unread = slot.lock().ok().and_then(|mut s| s.take());
    if let Some(body) = unread {
        // Read to its end (often nothing is left: a parser stopped at the last boundary), the
        // connection stays open; else it is closed after the answer.
        let read_out = declared.is_none_or(|n| n <= DRAIN_MAX)
            && tokio::time::timeout(DRAIN_TIME, drain(body))
                .await
                .unwrap_or(false);
        if !read_out {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    resp
}

/// Reads and discards `body` up to `DRAIN_MAX`; whether it reached the end.
async fn drain(mut body: Body) -> bool {
    let mut read = 0u64;
    while read <= DRAIN_MAX {
        match body.frame().await {
            Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len() as u64),
            Some(Err(_)) => return false,
            None => return true,
        }
    }
    false
}
