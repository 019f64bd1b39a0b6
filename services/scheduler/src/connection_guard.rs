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
    /// Keys revoked by this guard while they still hold connections: the connects queued
    /// behind the one that went over revoke nothing twice. A key leaves once its last
    /// connection is gone, so a worker that registers again with the same key (a kept
    /// identity) is held to the limit again.
    revoked: HashSet<String>,
    /// Events since a full count was asked for, applied again on top of its answer: the
    /// servers take their snapshot some time within the gathering, so a connect made meanwhile
    /// would otherwise be forgotten until the next count (counted twice instead, at worst).
    since_recount: Option<Vec<(String, bool)>>,
}

impl Tally {
    /// Counts a connect or disconnect of `user`; returns the key if this connect took it past
    /// `max` and it is not revoked already.
    fn event(&mut self, user: &str, connected: bool, max: usize) -> Option<String> {
        if let Some(since) = self.since_recount.as_mut() {
            since.push((user.to_owned(), connected));
        }
        let n = self.apply(user, connected);
        (connected && n > max && !self.revoked.contains(user)).then(|| user.to_owned())
    }

    /// Replaces the counts with a full count's, then applies again the events `since` it was
    /// asked for; a revoked key that no longer holds a connection is forgotten.
    fn recounted(&mut self, counted: HashMap<String, usize>, since: Vec<(String, bool)>) {
        self.per_user = counted;
        for (user, connected) in since {
            self.apply(&user, connected);
        }
        let Tally {
            per_user, revoked, ..
        } = self;
        revoked.retain(|k| per_user.contains_key(k));
    }

    /// Keys over `max` not revoked yet.
    fn over(&self, max: usize) -> Vec<String> {
        self.per_user
            .iter()
            .filter(|&(k, &n)| n > max && !self.revoked.contains(k))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn apply(&mut self, user: &str, connected: bool) -> usize {
        if connected {
            let n = self.per_user.entry(user.to_owned()).or_default();
            *n += 1;
            *n
        } else {
            let Some(n) = self.per_user.get_mut(user) else {
                self.revoked.remove(user);
                return 0;
            };
            *n = n.saturating_sub(1);
            let left = *n;
            if left == 0 {
                self.per_user.remove(user);
                self.revoked.remove(user);
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
        let over = {
            let mut t = lock(&self.tally);
            let since = t.since_recount.take().unwrap_or_default();
            t.recounted(counted?, since);
            t.over(self.max)
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
        lock(&self.tally).event(user, connected, self.max)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_revoked_once_per_offence_and_again_when_it_comes_back() {
        let mut t = Tally::default();
        let max = 2;
        assert_eq!(t.event("U1", true, max), None);
        assert_eq!(t.event("U1", true, max), None);
        assert_eq!(
            t.event("U1", true, max),
            Some("U1".into()),
            "the third is over"
        );
        t.revoked.insert("U1".into());
        assert_eq!(
            t.event("U1", true, max),
            None,
            "queued connects revoke nothing twice"
        );
        for _ in 0..4 {
            t.event("U1", false, max);
        }
        assert!(t.revoked.is_empty(), "its last connection is gone");
        // Registered again with its kept key: held to the limit again.
        for _ in 0..2 {
            assert_eq!(t.event("U1", true, max), None);
        }
        assert_eq!(t.event("U1", true, max), Some("U1".into()));
    }

    #[test]
    fn events_during_a_full_count_are_applied_on_top_of_it() {
        let mut t = Tally {
            since_recount: Some(Vec::new()),
            ..Default::default()
        };
        t.event("U1", true, 8);
        t.event("U2", true, 8);
        t.event("U2", false, 8);
        t.revoked.insert("U4".into());
        // The count's answer, taken before those events, replaces the tally.
        let since = t.since_recount.take().unwrap_or_default();
        t.recounted(HashMap::from([("U3".to_owned(), 9)]), since);
        assert_eq!(t.per_user.get("U1"), Some(&1));
        assert_eq!(t.per_user.get("U2"), None);
        assert_eq!(t.over(8), vec!["U3".to_owned()]);
        assert!(t.revoked.is_empty(), "U4 holds no connection any more");
    }
}
