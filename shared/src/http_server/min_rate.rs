//! A request body must keep a minimum rate. The idle timeout alone lets a client with
//! credentials hold a request open for ever by sending a few bytes just before each timeout
//! (10 bytes every 20 s kept a submit open past 95 s). Only the time the server spends waiting
//! for the client counts: an upload the server itself reads slowly (a slow storage backend
//! pushing back) is never blamed for it.

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What a body must keep up: after `grace` of waiting, at least `bytes_per_sec` on average
/// over the time spent waiting for it.
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    pub bytes_per_sec: u64,
    pub grace: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the request body arrived slower than {0} bytes/s; the request was stopped (FREEAGENT_BODY_MIN_RATE)"
)]
pub struct TooSlow(u64);

pub struct MinRateBody<B> {
    inner: B,
    rate: MinRate,
    received: u64,
    waited: Duration,
    waiting_since: Option<Instant>,
}

impl<B> MinRateBody<B> {
    pub fn new(inner: B, rate: MinRate) -> Self {
        MinRateBody {
            inner,
            rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
        }
    }

    /// Whether the body has fallen behind after `waited` of waiting in all.
    fn behind(&self) -> bool {
        let Some(counted) = self.waited.checked_sub(self.rate.grace) else {
            return false;
        };
        (self.received as f64) < self.rate.bytes_per_sec as f64 * counted.as_secs_f64()
    }
}

impl<B> Body for MinRateBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                this.waiting_since.get_or_insert_with(Instant::now);
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
            }
            Poll::Ready(_) => {}
        }
        if let Some(since) = this.waiting_since.take() {
            this.waited += since.elapsed();
        }
        if this.behind() {
            return Poll::Ready(Some(Err(Box::new(TooSlow(this.rate.bytes_per_sec)))));
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(received: u64, waited: u64) -> MinRateBody<axum::body::Body> {
        let mut b = MinRateBody::new(
            axum::body::Body::empty(),
            MinRate {
                bytes_per_sec: 1024,
                grace: Duration::from_secs(30),
            },
        );
        b.received = received;
        b.waited = Duration::from_secs(waited);
        b
    }

    #[test]
    fn a_drip_falls_behind_once_the_grace_is_spent() {
        // 10 bytes every 20 s: fine within the grace, behind after it.
        assert!(!body(10, 20).behind());
        assert!(body(20, 40).behind());
        // A slow but honest upload (64 KiB/s) never is.
        assert!(!body(64 * 1024 * 600, 600).behind());
    }
}
