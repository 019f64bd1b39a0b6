//! A submitter's cancel, forwarded by the gateway once it has checked the submitter's credential
//! (`scheduler.cancel`): the scheduler owns every transition after submission, this one too. One
//! guarded statement moves the build to `cancelled` from any status that has not ended; then the
//! holder is told to stop, the farm's line goes to the build's log and the event out (in the
//! order `events` documents). A second cancel finds the build ended and changes nothing.

use crate::events;
use freeagent_shared::announce::{self, Line};
use freeagent_shared::db::{self, Pool, Transition};
use freeagent_shared::farm_log;
use freeagent_shared::wire::{self, CancelReply, CancelRequest, LogLevel};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Applies one cancel.
pub async fn cancel(pool: &Pool, nats: &async_nats::Client, req: &CancelRequest) -> CancelReply {
    let id = req.build_id;
    match db::builds::build_cancel(pool, id).await {
        Ok(Transition::Applied(b)) => {
            metrics::counter!(freeagent_shared::metrics::CANCELS).increment(1);
            events::cancel(nats, b.worker_id, id, b.attempt).await;
            let line = Line::stored(LogLevel::Info, farm_log::CANCELLED);
            announce::moved(nats, &b, Some(line)).await;
            tracing::info!(build_id = %id, "build cancelled");
            CancelReply::Cancelled
        }
        Ok(Transition::Stale(c)) => CancelReply::Finished { status: c.status },
        Ok(Transition::NotFound) => CancelReply::NotFound,
        Err(e) => {
            tracing::warn!(build_id = %id, error = %e, "could not cancel a build");
            CancelReply::Unavailable {
                message: "the database is unavailable".into(),
            }
        }
    }
}

/// Answers cancels until `stop`. Cancels are rare and each is one statement, so they are taken
/// one at a time; the queue group spreads them over the schedulers.
pub async fn serve(
    mut requests: async_nats::Subscriber,
    pool: Pool,
    nats: async_nats::Client,
    stop: CancellationToken,
) {
    loop {
        let m = tokio::select! {
            _ = stop.cancelled() => return,
            m = requests.next() => match m { Some(m) => m, None => return },
        };
        let reply = match wire::decode::<CancelRequest>(&m.payload) {
            Ok(req) => cancel(&pool, &nats, &req).await,
            Err(e) => CancelReply::Error {
                message: format!("unreadable cancel: {e}"),
            },
        };
        if let Some(to) = m.reply
            && let Err(e) = nats.publish(to, wire::encode(&reply).into()).await
        {
            tracing::warn!(error = %e, "could not answer a cancel");
        }
    }
}
