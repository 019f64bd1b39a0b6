//! Requests that arrive together are handled together: callers queue a request and await its
//! reply; one task takes whatever has arrived (up to `max`) and hands the lot to a batch
//! function. Under light load a batch is one request and costs nothing extra; under heavy load
//! many requests share one round trip (and one commit) instead of queueing for connections.

use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

const QUEUE: usize = 8192;

type Pending<Req, Rep, E> = (Req, oneshot::Sender<Result<Rep, E>>);

/// Why a call got no reply from its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError<E> {
    /// The batcher stopped (shutdown).
    Closed,
    /// The batch function failed for the whole batch.
    Failed(E),
}

pub struct Batcher<Req, Rep, E> {
    tx: mpsc::Sender<Pending<Req, Rep, E>>,
}

impl<Req, Rep, E> Clone for Batcher<Req, Rep, E> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Req, Rep, E> Batcher<Req, Rep, E>
where
    Req: Send + 'static,
    Rep: Send + 'static,
    E: Clone + Send + 'static,
{
    /// Starts the batch task; `run` gets the requests of one batch and returns one reply each,
    /// in order (or one error for all). Up to `parallel` batches run at once, so a slow batch
    /// does not hold back the next.
    pub fn start<F, Fut>(max: usize, parallel: usize, stop: CancellationToken, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Rep>, E>> + Send + 'static,
    {
        Self::start_lingering(max, parallel, Duration::ZERO, stop, run)
    }

    /// As `start`, but a batch waits `linger` after its first request for others to join: for
    /// requests where a little latency is free and a statement per request is not.
    pub fn start_lingering<F, Fut>(
        max: usize,
        parallel: usize,
        linger: Duration,
        stop: CancellationToken,
        run: F,
    ) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Rep>, E>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Pending<Req, Rep, E>>(QUEUE);
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
                                let _ = tx.send(Err(e.clone()));
                            }
                        }
                    }
                });
            }
        });
        Self { tx }
    }

    pub async fn call(&self, req: Req) -> Result<Rep, BatchError<E>> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((req, tx))
            .await
            .map_err(|_| BatchError::Closed)?;
        match rx.await {
            Ok(Ok(rep)) => Ok(rep),
            Ok(Err(e)) => Err(BatchError::Failed(e)),
            Err(_) => Err(BatchError::Closed),
        }
    }
}
