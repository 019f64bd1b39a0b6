//! The core NATS request/reply server (queue group `scheduler`, so replicas share the load):
//! decode, check the sender, route to an operation (`ops`), reply. A worker's identity is the
//! worker id of the subject (`scheduler.<op>.<worker_id>`), which only that worker (and the
//! gateway, for HTTP workers it authenticated) may publish on; a body naming another worker is
//! refused. Operations with a batch path are queued on their batcher (`batches`). Each request
//! runs in its own task, bounded by a semaphore; on shutdown the subscriptions close first, then
//! in-flight requests finish.
//!
//! The requester chooses the reply subject, so a reply is a publish on its behalf: replies go
//! only to the sender's own inbox (or a service's, `subjects::reply_allowed`), and through a
//! connection of their own that may publish nothing but inbox replies.

use crate::batches::{self, Batches};
use crate::ops::{Handlers, Unavailable};
use freeagent_shared::ids::WorkerId;
use freeagent_shared::subjects::{self, Op};
use freeagent_shared::wire::{
    self, ClaimReply, FinishReply, FromWorker, HeartbeatReply, LogReply, PresenceReply, WireError,
};
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The connection that answers worker requests: a NATS user of its own, minted with the
/// farm's signing key, that may only take requests and publish into inboxes
/// (`Role::SchedulerReplies`). Without a signing key (a farm without NATS auth, where anyone
/// may publish anything anyway) it is the scheduler's own connection.
pub async fn replies_connection(
    settings: &freeagent_shared::nats::NatsSettings,
    minter: Option<&freeagent_shared::nats_auth::Minter>,
    own: &async_nats::Client,
) -> anyhow::Result<async_nats::Client> {
    use anyhow::Context;
    let Some(minter) = minter else {
        if settings.creds.is_some() {
            tracing::warn!(
                "FREEAGENT_NATS_SIGNING_KEY is not set: the scheduler answers workers on its own connection, which may publish anywhere; set it (freeagent nats-config writes it) so replies go out on a connection that may publish only replies"
            );
        }
        return Ok(own.clone());
    };
    let key = nkeys::KeyPair::new_user();
    let jwt = minter
        .user_jwt(
            &freeagent_shared::nats_auth::Role::SchedulerReplies,
            &key.public_key(),
            None,
        )
        .context("minting the scheduler's reply credentials")?;
    freeagent_shared::nats::connect(
        settings,
        "freeagent-scheduler-replies",
        freeagent_shared::nats::Identity::Minted {
            jwt,
            key: Arc::new(key),
        },
        None,
    )
    .await
    .context("connecting the scheduler's reply connection")
}

/// The request subscriptions, made before the app reports itself started.
pub struct Subscriptions(Vec<async_nats::Subscriber>);

pub async fn subscribe(
    nats: &async_nats::Client,
) -> Result<Subscriptions, async_nats::SubscribeError> {
    let mut subs = Vec::new();
    for op in Op::ALL {
        subs.push(
            nats.queue_subscribe(op.wildcard(), subjects::SCHEDULER_QUEUE_GROUP.into())
                .await?,
        );
    }
    Ok(Subscriptions(subs))
}

pub async fn serve(
    nats: async_nats::Client,
    subs: Subscriptions,
    handlers: Handlers,
    batches: Batches,
    concurrency: usize,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut subs = futures::stream::select_all(subs.0);
    let permits = Arc::new(Semaphore::new(concurrency));
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = subs.next() => match m { Some(m) => m, None => break },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (nats, handlers, batches) = (nats.clone(), handlers.clone(), batches.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let Some(reply_to) = msg.reply.clone() else {
                return;
            };
            if let Some((_, sender)) = Op::parse_subject(&msg.subject)
                && !subjects::reply_allowed(&reply_to, sender)
            {
                metrics::counter!(freeagent_shared::metrics::REPLIES_REFUSED).increment(1);
                tracing::warn!(
                    subject = %msg.subject,
                    reply = %reply_to,
                    "a worker request asked for its reply outside its own inbox; dropped unanswered"
                );
                return;
            }
            let body = route(&handlers, &batches, msg.subject.as_str(), &msg.payload).await;
            if let Err(e) = nats.publish(reply_to, body.into()).await {
                tracing::warn!(error = %e, "could not send a reply");
            }
        });
    }
    // Dropping the subscriptions unsubscribes: the other replicas take new requests from now on.
    drop(subs);
}

async fn route(h: &Handlers, b: &Batches, subject: &str, payload: &[u8]) -> Vec<u8> {
    let Some((op, sender)) = Op::parse_subject(subject) else {
        return wire::encode(&FinishReply::Error {
            message: format!("unknown subject {subject}"),
        });
    };
    match op {
        Op::Claim => reply(
            decode_then(sender, payload, |r| batches::call(&b.claims, r)).await,
            |message| ClaimReply::Error { message },
            |message| ClaimReply::Unavailable { message },
        ),
        Op::Heartbeat => reply(
            decode_then(sender, payload, |r| batches::call(&b.heartbeats, r)).await,
            |message| HeartbeatReply::Error { message },
            |message| HeartbeatReply::Unavailable { message },
        ),
        Op::Complete => reply(
            decode_then(sender, payload, |r| batches::call(&b.completions, r)).await,
            |message| FinishReply::Error { message },
            |message| FinishReply::Unavailable { message },
        ),
        Op::Fail => reply(
            decode_then(sender, payload, |r| h.fail(r)).await,
            |message| FinishReply::Error { message },
            |message| FinishReply::Unavailable { message },
        ),
        Op::Abandon => reply(
            decode_then(sender, payload, |r| h.abandon(r)).await,
            |message| FinishReply::Error { message },
            |message| FinishReply::Unavailable { message },
        ),
        Op::Presence => reply(
            decode_then(sender, payload, |r| batches::call(&b.presence, r)).await,
            |message| PresenceReply::Error { message },
            |message| PresenceReply::Unavailable { message },
        ),
        Op::Log => reply(
            decode_then(sender, payload, |r| h.log(r)).await,
            |message| LogReply::Error { message },
            |message| LogReply::Unavailable { message },
        ),
    }
}

enum Failed {
    Wire(WireError),
    /// The body names a worker other than the subject's.
    Impostor,
    Down(Unavailable),
}

async fn decode_then<Req, Rep, F, Fut>(
    sender: WorkerId,
    payload: &[u8],
    f: F,
) -> Result<Rep, Failed>
where
    Req: serde::de::DeserializeOwned + FromWorker,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Rep, Unavailable>>,
{
    let req = wire::decode::<Req>(payload).map_err(Failed::Wire)?;
    if req.worker_id() != sender {
        tracing::warn!(subject_worker = %sender, body_worker = %req.worker_id(), "a request named another worker than its subject; refused");
        return Err(Failed::Impostor);
    }
    f(req).await.map_err(Failed::Down)
}

fn reply<Rep: serde::Serialize>(
    r: Result<Rep, Failed>,
    err: impl FnOnce(String) -> Rep,
    unavailable: impl FnOnce(String) -> Rep,
) -> Vec<u8> {
    match r {
        Ok(rep) => wire::encode(&rep),
        Err(Failed::Wire(e)) => wire::encode(&err(e.to_string())),
        Err(Failed::Impostor) => wire::encode(&err(
            "worker_id does not match the worker this connection is (scheduler.<op>.<worker_id>)"
                .into(),
        )),
        Err(Failed::Down(e)) => wire::encode(&unavailable(e.to_string())),
    }
}
