//! Holds each worker to `FREEAGENT_WORKER_MAX_CONNECTIONS` NATS connections. A NATS user JWT
//! carries no connection limit (2.9 to today), so one worker's login could open any number of
//! connections (the audit opened 1,000). Every pass asks the servers, through the system
//! account, for the connections of the account workers live in, counts them per user key, and
//! revokes a worker over the limit: its registration ends and the servers close every
//! connection of its key (`crate::revocations`); an honest worker holds one.

use crate::service_loop::Pass;
use freeagent_shared::db::{self, Pool};
use freeagent_shared::metrics as m;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

pub const DEFAULT_MAX_CONNECTIONS: usize = 8;
/// How long the servers' answers are gathered (each server of a cluster answers once).
const GATHER: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error("asking NATS for the workers' connections failed: {0}")]
    Nats(String),
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
}

impl ConnectionGuard {
    pub async fn run_once(&self) -> Result<Pass, GuardError> {
        let per_user = self.connections().await?;
        let over: Vec<String> = per_user
            .iter()
            .filter(|&(_, &n)| n > self.max)
            .map(|(k, _)| k.clone())
            .collect();
        if over.is_empty() {
            return Ok(Pass::default());
        }
        let workers = db::workers::workers_by_nats_key(&self.pool, &over).await?;
        for w in &workers {
            let n = w
                .nats_public_key
                .as_ref()
                .and_then(|k| per_user.get(k))
                .copied()
                .unwrap_or(0);
            tracing::warn!(worker_id = %w.id, name = %w.name, connections = n, max = self.max, "a worker held more NATS connections than FREEAGENT_WORKER_MAX_CONNECTIONS; its registration is revoked and its connections closed");
            freeagent_shared::worker_revocation::revoke(&self.pool, &self.nats, w.id).await?;
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
            let Ok(body) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else {
                continue;
            };
            if let Some(e) = body.get("error") {
                return Err(nats_err(e.to_string()));
            }
            servers += 1;
            let conns = body["data"]["connections"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in conns {
                if let Some(user) = c["authorized_user"].as_str() {
                    *per_user.entry(user.to_owned()).or_default() += 1;
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
