//! Typed requests to the scheduler over NATS, each on its operation's subject for the sending
//! worker (`scheduler.<op>.<worker_id>`) and carrying the attempt; and the gateway's one service
//! request, a submitter's cancel (`scheduler.cancel`). Transport failures (no scheduler answering, a timeout) are retried with
//! exponential backoff and jitter; a refusal is an answer, not an error.

use crate::ids::WorkerId;
use crate::subjects::Op;
use crate::wire::{
    self, ClaimReply, ClaimRequest, CompleteRequest, FailRequest, FinishReply, HeartbeatReply,
    HeartbeatRequest,
};
use crate::wire::{
    AbandonRequest, CancelReply, CancelRequest, LogBatch, LogReply, PresenceReply, PresenceRequest,
    RetryLater,
};
use backon::{ExponentialBuilder, Retryable};
use serde::{Serialize, de::DeserializeOwned};
use std::time::Duration;

/// Longest wait for one reply. Every operation is idempotent (fenced by attempt), so a try
/// that timed out is simply sent again.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(3);

/// Backoff for about `patience` in all. backon's builder stops after 3 retries unless told
/// otherwise; the retries must last the patience (a NATS restart, a scheduler's failover), or
/// a finished build's outcome is dropped after one second and the build runs again.
pub fn retry_policy(patience: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_total_delay(Some(patience))
        .without_max_times()
        .with_jitter()
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no scheduler answered {subject}: {reason}")]
    Transport {
        subject: &'static str,
        reason: String,
    },
    #[error("the scheduler's reply to {subject} was unreadable: {reason}")]
    Reply {
        subject: &'static str,
        reason: String,
    },
}

#[derive(Clone)]
pub struct SchedulerClient {
    nats: async_nats::Client,
}

impl SchedulerClient {
    pub fn new(nats: async_nats::Client) -> Self {
        Self { nats }
    }

    /// One try, bounded by `TRY_TIMEOUT`: a request that went to a scheduler that just died is
    /// retried on another rather than waiting out the connection's request timeout.
    async fn once<Req: Serialize, Rep: DeserializeOwned + RetryLater>(
        &self,
        op: Op,
        worker: WorkerId,
        req: &Req,
    ) -> Result<Rep, RequestError> {
        self.once_on(op.as_str(), op.subject(worker), req).await
    }

    /// One try on `to` (`name` says which operation in errors).
    async fn once_on<Req: Serialize, Rep: DeserializeOwned + RetryLater>(
        &self,
        name: &'static str,
        to: String,
        req: &Req,
    ) -> Result<Rep, RequestError> {
        let subject = name;
        let request = self.nats.request(to, wire::encode(req).into());
        let msg = match tokio::time::timeout(TRY_TIMEOUT, request).await {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => {
                return Err(RequestError::Transport {
                    subject,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(RequestError::Transport {
                    subject,
                    reason: format!("no reply within {TRY_TIMEOUT:?}"),
                });
            }
        };
        let reply: Rep = wire::decode(&msg.payload).map_err(|e| RequestError::Reply {
            subject,
            reason: e.to_string(),
        })?;
        if reply.is_unavailable() {
            return Err(RequestError::Transport {
                subject,
                reason: "the scheduler is unavailable (its database is down)".into(),
            });
        }
        Ok(reply)
    }

    /// Retries transport failures for up to about `patience`.
    async fn request<Req: Serialize + Sync, Rep: DeserializeOwned + RetryLater>(
        &self,
        op: Op,
        worker: WorkerId,
        req: &Req,
        patience: Duration,
    ) -> Result<Rep, RequestError> {
        (|| self.once(op, worker, req))
            .retry(retry_policy(patience))
            .when(|e| matches!(e, RequestError::Transport { .. }))
            .notify(|e, d| tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "scheduler request failed; retrying"))
            .await
    }

    pub async fn claim(&self, req: &ClaimRequest) -> Result<ClaimReply, RequestError> {
        self.request(Op::Claim, req.worker_id, req, Duration::from_secs(10))
            .await
    }

    /// One try, bounded by `within`: a heartbeat that went to a scheduler that just died must
    /// not hold up the next one (the lease would run out meanwhile).
    pub async fn heartbeat(
        &self,
        req: &HeartbeatRequest,
        within: Duration,
    ) -> Result<HeartbeatReply, RequestError> {
        match tokio::time::timeout(within, self.once(Op::Heartbeat, req.worker_id, req)).await {
            Ok(r) => r,
            Err(_) => Err(RequestError::Transport {
                subject: Op::Heartbeat.as_str(),
                reason: format!("no reply within {within:?}"),
            }),
        }
    }

    /// Outcomes are worth waiting for: the build's work is done.
    pub async fn complete(&self, req: &CompleteRequest) -> Result<FinishReply, RequestError> {
        self.request(Op::Complete, req.worker_id, req, Duration::from_secs(60))
            .await
    }

    pub async fn fail(&self, req: &FailRequest) -> Result<FinishReply, RequestError> {
        self.request(Op::Fail, req.worker_id, req, Duration::from_secs(60))
            .await
    }

    pub async fn abandon(&self, req: &AbandonRequest) -> Result<FinishReply, RequestError> {
        self.request(Op::Abandon, req.worker_id, req, Duration::from_secs(10))
            .await
    }

    pub async fn presence(&self, req: &PresenceRequest) -> Result<PresenceReply, RequestError> {
        self.once(Op::Presence, req.worker_id, req).await
    }

    /// Log lines: sent again through a NATS restart or a scheduler's failover for `patience`.
    pub async fn log(&self, req: &LogBatch, patience: Duration) -> Result<LogReply, RequestError> {
        self.request(Op::Log, req.worker_id, req, patience).await
    }

    /// A submitter's cancel, forwarded by the gateway (a service's request on
    /// `subjects::CANCEL`, which no worker may publish). Idempotent: a second cancel finds the
    /// build cancelled.
    pub async fn cancel(&self, req: &CancelRequest) -> Result<CancelReply, RequestError> {
        (|| self.once_on("cancel", crate::subjects::CANCEL.to_owned(), req))
            .retry(retry_policy(Duration::from_secs(10)))
            .when(|e| matches!(e, RequestError::Transport { .. }))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    #[test]
    fn retries_last_the_patience_not_three_tries() {
        for patience in [Duration::from_secs(10), Duration::from_secs(60)] {
            let delays: Vec<Duration> = retry_policy(patience).build().collect();
            let total: Duration = delays.iter().sum();
            assert!(delays.len() > 3, "{patience:?}: {delays:?}");
            // The last delay may be cut short or left out; the rest fill the patience.
            assert!(
                total + Duration::from_secs(10) >= patience && total <= patience,
                "{patience:?}: {total:?} over {} tries",
                delays.len()
            );
        }
    }
}
