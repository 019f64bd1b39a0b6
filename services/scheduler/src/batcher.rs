//! The scheduler's batchers: `shared::batcher` with the scheduler's outage error.

use crate::handlers::Unavailable;
use freeagent_shared::batcher::BatchError;

pub type Batcher<Req, Rep> = freeagent_shared::batcher::Batcher<Req, Rep, Unavailable>;

/// A batched call's outcome in the handlers' terms.
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
