//! Abandon: the holder hands an attempt back (it is shutting down, or cannot run the build).
//! The build returns to `pending` under a new attempt after a backoff, or ends `failed` when its
//! attempts are used up (`db::builds::build_abandon` decides). Rare, so one-row only; a replay
//! finds the attempt already handed back and changes nothing.

use super::context::refusal;
use super::{Handlers, Unavailable};
use crate::events;
use freeagent_shared::db::{self, Transition};
use freeagent_shared::wire::{AbandonRequest, FinishReply, NotYours};

/// Longest hand-back reason recorded, in characters.
const MAX_REASON_CHARS: usize = 1024;

impl Handlers {
    #[tracing::instrument(skip_all, fields(build_id = %req.build_id, attempt = %req.attempt, worker_id = %req.worker_id))]
    pub async fn abandon(&self, req: AbandonRequest) -> Result<FinishReply, Unavailable> {
        if self.authenticate(req.worker_id).await?.is_none() {
            return Ok(FinishReply::NotYours {
                reason: NotYours::Unauthorized,
                status: None,
            });
        }
        // Whatever the worker sent, no secret is stored (a worker may be compromised).
        let reason: String = freeagent_shared::redact::redact(&req.reason)
            .chars()
            // Postgres stores no NUL; a worker's text is cleaned, never refused.
            .filter(|c| *c != '\0')
            .take(MAX_REASON_CHARS)
            .collect();
        let t = db::builds::build_abandon(
            &self.pool,
            req.build_id,
            req.attempt,
            req.worker_id,
            &reason,
            self.backoff,
        )
        .await?;
        Ok(match t {
            Transition::Applied(b) => {
                metrics::counter!(freeagent_shared::metrics::RETRIES, "cause" => "abandoned")
                    .increment(1);
                events::announce_outcome(&self.nats, &b).await;
                tracing::info!(to = %b.status, "build handed back");
                FinishReply::Recorded { status: b.status }
            }
            // Already handed back (or moved on): nothing more to do.
            Transition::Stale(c) => FinishReply::NotYours {
                reason: refusal(&c),
                status: Some(c.status),
            },
            Transition::NotFound => FinishReply::NotYours {
                reason: NotYours::NotFound,
                status: None,
            },
        })
    }
}
