//! Requests that arrive together are handled together: callers queue a request and await its
//! reply; one task takes whatever has arrived (up to `max`) and hands the lot to a batch
//! function. Under light load a batch is one request and costs nothing extra; under heavy load
//! many requests share one round trip to Postgres instead of queueing for connections.

use crate::handlers::Unavailable;
use std::future::Future;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

const QUEUE: usize = 8192;

type Pending<Req, Rep> = (Req, oneshot::Sender<Result<Rep, Unavailable>>);

pub struct Batcher<Req, Rep> {
    tx: mpsc::Sender<Pending<Req, Rep>>,
}

impl<Req, Rep> Clone for Batcher<Req, Rep> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Req: Send + 'static, Rep: Send + 'static> Batcher<Req, Rep> {
    /// Starts the batch task; `run` gets the requests of one batch and returns one reply each,
    /// in order (or one error for all). Up to `parallel` batches run at once, so a slow batch
    /// does not hold back the next.
    pub fn start<F, Fut>(max: usize, parallel: usize, stop: CancellationToken, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Rep>, Unavailable>> + Send + 'static,
    {
        Self::start_lingering(max, parallel, std::time::Duration::ZERO, stop, run)
    }

    /// As `start`, but a batch waits `linger` after its first request for others to join: for
    /// requests where a little latency is free and a statement per request is not (presence).
    pub fn start_lingering<F, Fut>(
        max: usize,
        parallel: usize,
        linger: std::time::Duration,
        stop: CancellationToken,
        run: F,
    ) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Rep>, Unavailable>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Pending<Req, Rep>>(QUEUE);
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let first = tokio::select! {
                    _ = stop.cancelled() => return,
                    p = rx.recv() => match p { Some(p) => p, None => return },
                };
                if !linger.is_zero() {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(linger) => {}
                    }
                }
                let mut batch = vec![first];
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let (reqs, txs): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
                let fut = run(reqs);
                tokio::spawn(async move {
                    let _permit = permit;
                    match fut.await {
                        Ok(replies) => {
                            for (tx, reply) in txs.into_iter().zip(replies) {
                                let _ = tx.send(Ok(reply));
                            }
                        }
                        Err(e) => {
                            for tx in txs {
                                let _ = tx.send(Err(Unavailable(e.0.clone())));
                            }
                        }
                    }
                });
            }
        });
        Self { tx }
    }

    pub async fn call(&self, req: Req) -> Result<Rep, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((req, tx))
            .await
            .map_err(|_| Unavailable("the scheduler is shutting down; retry".into()))?;
        rx.await
            .map_err(|_| Unavailable("the scheduler is shutting down; retry".into()))?
    }
}
