//! The batchers that feed the operations' batch paths: requests that arrive together are
//! handled together (`shared::batcher`), so under load many claims, heartbeats, completions or
//! presence reports share one statement and one commit. This module only queues and runs; what a
//! batch does and how each request is answered lives with its operation in `ops`.

use crate::ops::{Handlers, Unavailable};
use freeagent_shared::batcher::BatchError;
use freeagent_shared::wire::{
    ClaimReply, ClaimRequest, CompleteRequest, FinishReply, HeartbeatReply, HeartbeatRequest,
    PresenceReply, PresenceRequest,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most claims (or completions) one statement applies.
const BATCH_MAX: usize = 256;
/// Batch statements of one kind in flight at once.
const BATCH_PARALLEL: usize = 4;
/// Most heartbeats one statement renews; one heartbeat batch at a time keeps leases renewed in
/// order.
const HEARTBEAT_BATCH_MAX: usize = 512;
/// Presence reports wait this long for company: an idle fleet of 10,000 then costs a statement
/// every 100 ms rather than a thousand a second.
const PRESENCE_LINGER: Duration = Duration::from_millis(100);
const PRESENCE_BATCH_MAX: usize = 2048;

/// A batcher with the operations' outage error.
pub type Batcher<Req, Rep> = freeagent_shared::batcher::Batcher<Req, Rep, Unavailable>;

/// The batch queue of every operation that has a batch path.
#[derive(Clone)]
pub struct Batches {
    pub claims: Batcher<ClaimRequest, ClaimReply>,
    pub heartbeats: Batcher<HeartbeatRequest, HeartbeatReply>,
    pub completions: Batcher<CompleteRequest, FinishReply>,
    pub presence: Batcher<PresenceRequest, PresenceReply>,
}

impl Batches {
    /// Starts one batch task per operation; they stop with `stop`.
    pub fn start(ops: &Handlers, stop: &CancellationToken) -> Self {
        let (h1, h2, h3, h4) = (ops.clone(), ops.clone(), ops.clone(), ops.clone());
        Self {
            claims: Batcher::start(BATCH_MAX, BATCH_PARALLEL, stop.clone(), move |reqs| {
                let h = h1.clone();
                async move { h.claim_many(reqs).await }
            }),
            heartbeats: Batcher::start(HEARTBEAT_BATCH_MAX, 1, stop.clone(), move |reqs| {
                let h = h2.clone();
                async move { h.heartbeat_many(reqs).await }
            }),
            completions: Batcher::start(BATCH_MAX, BATCH_PARALLEL, stop.clone(), move |reqs| {
                let h = h3.clone();
                async move { h.complete_many(reqs).await }
            }),
            presence: Batcher::start_lingering(
                PRESENCE_BATCH_MAX,
                1,
                PRESENCE_LINGER,
                stop.clone(),
                move |reqs| {
                    let h = h4.clone();
                    async move { h.presence_many(reqs).await }
                },
            ),
        }
    }
}

/// A batched call's outcome in the operations' terms.
pub async fn call<Req, Rep>(b: &Batcher<Req, Rep>, req: Req) -> Result<Rep, Unavailable>
where
    Req: Send + 'static,
    Rep: Send + 'static,
{
    b.call(req).await.map_err(|e| match e {
        BatchError::Failed(e) => e,
        BatchError::Closed => Unavailable("the scheduler is shutting down; retry".into()),
    })
}
