//! Holds each worker to `FREEAGENT_WORKER_MAX_CONNECTIONS` NATS connections. A NATS user JWT
//! carries no connection limit (2.9 to today), so one worker's login could open any number of
//! connections (the audit opened 1,000). The guard follows the servers' connect and disconnect
//! events for the account workers live in (through the system account), keeps a count per user
//! key, and revokes a worker at the connect that takes it over the limit: its registration ends
//! and the servers close every connection of its key (`crate::revocations`); an honest worker
//! holds one. A full count (`CONNZ`) at start and every `RECOUNT_TICKS` ticks corrects what
//! events missed. It used to be the only way, every 5 ticks: with 10,000 idle workers that was
//! most of the scheduler's idle CPU and half of NATS' (both encoding and parsing the list of
//! every connection; docs/benchmarks.md).

use crate::service_loop::Pass;
use freeagent_shared::db::{self, Pool};
use freeagent_shared::metrics as m;
use futures::StreamExt;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub const DEFAULT_MAX_CONNECTIONS: usize = 8;
/// How long the servers' answers are gathered (each server of a cluster answers once).
const GATHER: Duration = Duration::from_millis(500);
/// Scheduler ticks between full counts (a minute at the default tick of 1 s).
pub const RECOUNT_TICKS: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error("asking NATS for the workers' connections failed: {0}")]
    Nats(String),
}

/// Connections per user key: the last full count, kept current by connect and disconnect
/// events.
#[derive(Default)]
struct Tally {
    per_user: HashMap<String, usize>,
    /// Keys revoked by this guard: their late events revoke nothing twice.
    revoked: HashSet<String>,
    /// Events since a full count was asked for, applied again on top of its answer: the
    /// servers take their snapshot some time within the gathering, so a connect made meanwhile
    /// would otherwise be forgotten until the next count (counted twice instead, at worst).
    since_recount: Option<Vec<(String, bool)>>,
}

impl Tally {
    fn apply(&mut self, user: &str, connected: bool) -> usize {
        if connected {
            let n = self.per_user.entry(user.to_owned()).or_default();
            *n += 1;
            *n
        } else {
            let Some(n) = self.per_user.get_mut(user) else {
                return 0;
            };
            *n = n.saturating_sub(1);
            let left = *n;
            if left == 0 {
                self.per_user.remove(user);
            }
            left
        }
    }
}

#[derive(Clone)]
pub struct ConnectionGuard {
    pub pool: Pool,
    /// The scheduler's own connection (events, the revoker's wake).
    pub nats: async_nats::Client,
    /// A system-account connection.
    pub system: async_nats::Client,
    /// The account worker users live in.
    pub account: String,
    pub max: usize,
    tally: Arc<Mutex<Tally>>,
}

/// A `CONNZ` answer: only what the count needs, borrowed from the message.
#[derive(Deserialize)]
struct Connz<'a> {
    #[serde(borrow, default)]
    data: Option<ConnzData<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ConnzData<'a> {
    #[serde(borrow, default)]
    connections: Vec<Connection<'a>>,
}

#[derive(Deserialize)]
struct Connection<'a> {
    #[serde(borrow, default)]
    authorized_user: Option<Cow<'a, str>>,
}

/// A connect or disconnect event (`$SYS.ACCOUNT.<account>.CONNECT`): the client's user key.
#[derive(Deserialize)]
struct ClientEvent<'a> {
    #[serde(borrow)]
    client: EventClient<'a>,
}

#[derive(Deserialize)]
struct EventClient<'a> {
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
}

fn lock(t: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConnectionGuard {
    pub fn new(
        pool: Pool,
        nats: async_nats::Client,
        system: async_nats::Client,
        account: String,
        max: usize,
    ) -> Self {
        Self {
            pool,
            nats,
            system,
            account,
            max,
            tally: Default::default(),
        }
    }

    /// A full count: replaces the tally and revokes every worker over the limit.
    pub async fn run_once(&self) -> Result<Pass, GuardError> {
        lock(&self.tally).since_recount = Some(Vec::new());
        let counted = self.connections().await;
        let over: Vec<String> = {
            let mut t = lock(&self.tally);
            let since = t.since_recount.take().unwrap_or_default();
            t.per_user = counted?;
            for (user, connected) in since {
                t.apply(&user, connected);
            }
            let t = &*t;
            t.per_user
                .iter()
                .filter(|&(k, &n)| n > self.max && !t.revoked.contains(k))
                .map(|(k, _)| k.clone())
                .collect()
        };
        self.revoke(over).await
    }

    /// Follows the account's connect and disconnect events until `stop`, revoking a worker at
    /// the connect that takes it over the limit.
    pub async fn follow(self, stop: tokio_util::sync::CancellationToken) {
        let subscribe = |what: &str| {
            self.system
                .subscribe(format!("$SYS.ACCOUNT.{}.{what}", self.account))
        };
        let (connects, disconnects) = match (
            subscribe("CONNECT").await,
            subscribe("DISCONNECT").await,
        ) {
            (Ok(c), Ok(d)) => (c, d),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot follow the workers' connections; only the count every {RECOUNT_TICKS} ticks holds them to FREEAGENT_WORKER_MAX_CONNECTIONS");
                return;
            }
        };
        let mut events =
            futures::stream::select(connects.map(|m| (true, m)), disconnects.map(|m| (false, m)));
        loop {
            let (connected, msg) = tokio::select! {
                _ = stop.cancelled() => return,
                e = events.next() => match e { Some(e) => e, None => return },
            };
            let Some(user) = serde_json::from_slice::<ClientEvent>(&msg.payload)
                .ok()
                .and_then(|e| e.client.user)
            else {
                continue;
            };
            if let Some(over) = self.count(&user, connected)
                && let Err(e) = self.revoke(vec![over]).await
            {
                tracing::warn!(error = %e, "could not revoke a worker over its connection limit; the next count tries again");
            }
        }
    }

    /// Counts one event; returns the key if this connect took it over the limit.
    fn count(&self, user: &str, connected: bool) -> Option<String> {
        let mut t = lock(&self.tally);
        if let Some(since) = t.since_recount.as_mut() {
            since.push((user.to_owned(), connected));
        }
        let n = t.apply(user, connected);
        (connected && n > self.max && !t.revoked.contains(user)).then(|| user.to_owned())
    }

    async fn revoke(&self, over: Vec<String>) -> Result<Pass, GuardError> {
        if over.is_empty() {
            return Ok(Pass::default());
        }
        let workers = db::workers::workers_by_nats_key(&self.pool, &over).await?;
        for w in &workers {
            let Some(key) = w.nats_public_key.as_ref() else {
                continue;
            };
            let n = lock(&self.tally).per_user.get(key).copied().unwrap_or(0);
            tracing::warn!(worker_id = %w.id, name = %w.name, connections = n, max = self.max, "a worker held more NATS connections than FREEAGENT_WORKER_MAX_CONNECTIONS; its registration is revoked and its connections closed");
            freeagent_shared::worker_revocation::revoke(&self.pool, &self.nats, w.id).await?;
            lock(&self.tally).revoked.insert(key.clone());
            metrics::counter!(m::WORKERS_REVOKED, "reason" => "connections").increment(1);
        }
        Ok(Pass {
            done: workers.len(),
            more: false,
        })
    }

    /// Connections of the workers' account per user key, from every server that answers.
    async fn connections(&self) -> Result<HashMap<String, usize>, GuardError> {
        let nats_err = |e: String| GuardError::Nats(e);
        let inbox = self.system.new_inbox();
        let mut answers = self
            .system
            .subscribe(inbox.clone())
            .await
            .map_err(|e| nats_err(e.to_string()))?;
        let request = serde_json::json!({ "acc": self.account, "auth": true, "limit": 1_000_000 });
        self.system
            .publish_with_reply(
                "$SYS.REQ.SERVER.PING.CONNZ",
                inbox,
                serde_json::to_vec(&request).unwrap_or_default().into(),
            )
            .await
            .map_err(|e| nats_err(e.to_string()))?;
        let mut per_user: HashMap<String, usize> = HashMap::new();
        let mut servers = 0;
        let deadline = tokio::time::Instant::now() + GATHER;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
            let Ok(body) = serde_json::from_slice::<Connz>(&msg.payload) else {
                continue;
            };
            if let Some(e) = body.error {
                return Err(nats_err(e.to_string()));
            }
            servers += 1;
            for c in body.data.map(|d| d.connections).unwrap_or_default() {
                if let Some(user) = c.authorized_user {
                    *per_user.entry(user.into_owned()).or_default() += 1;
                }
            }
        }
        if servers == 0 {
            return Err(nats_err(
                "no server answered $SYS.REQ.SERVER.PING.CONNZ".into(),
            ));
        }
        Ok(per_user)
    }
}
