//! Keeps the NATS servers' list of revoked worker keys in step with `nats_revocations`: the
//! JWT of the account workers live in (their own, ADR-0016; the farm's in older set-ups) is
//! re-signed by the operator with those keys in `revocations` and pushed
//! through the system account; the servers then refuse (and disconnect) those users. Runs on
//! start (a server restarted from its preload forgets nothing: the full resolver stores the
//! pushed JWT), on a `scheduler.revoked` wake, and on a tick.

use crate::service_loop::Pass;
use freeagent_shared::db::{self, Pool};
use freeagent_shared::nats_auth::{self, Minter};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Wakes the revoker (core NATS; payload ignored).
pub use freeagent_shared::subjects::REVOKED;

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error(transparent)]
    Auth(#[from] nats_auth::AuthError),
    #[error("pushing the account to NATS failed: {0}")]
    Push(String),
}

#[derive(Clone)]
pub struct Revoker {
    pub pool: Pool,
    pub minter: Minter,
    pub operator: Arc<nkeys::KeyPair>,
    /// A system-account connection.
    pub system: async_nats::Client,
    /// What the servers were last sent (None: nothing yet, so the first pass always pushes).
    pub pushed: Arc<Mutex<Option<BTreeMap<String, i64>>>>,
}

impl Revoker {
    pub async fn run_once(&self) -> Result<Pass, RevokeError> {
        let live: BTreeMap<String, i64> = db::nats_revocations::live(&self.pool)
            .await?
            .into_iter()
            .map(|(k, at)| (k, at.timestamp()))
            .collect();
        if self.pushed.lock().ok().and_then(|p| p.clone()).as_ref() == Some(&live) {
            return Ok(Pass::default());
        }
        // The account workers are minted in: the workers account, re-signed with the same
        // imports `freeagent nats-config` gave it, or (an older set-up) the farm's own.
        let account = self.minter.account().to_owned();
        let role = self.minter.account_role();
        let name = match role {
            nats_auth::accounts::AccountRole::Farm => "freeagent",
            nats_auth::accounts::AccountRole::Workers { .. } => "freeagent-workers",
        };
        let jwt = nats_auth::account_jwt(
            &self.operator,
            name,
            &account,
            vec![self.minter.signing_public()],
            live.clone(),
            &role,
        )?;
        let subject = format!("$SYS.REQ.ACCOUNT.{account}.CLAIMS.UPDATE");
        let reply = self
            .system
            .request(subject, jwt.into())
            .await
            .map_err(|e| RevokeError::Push(e.to_string()))?;
        let body: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| RevokeError::Push(format!("unreadable reply: {e}")))?;
        if let Some(err) = body.get("error") {
            return Err(RevokeError::Push(err.to_string()));
        }
        tracing::info!(
            revoked = live.len(),
            "NATS account updated with the revoked worker keys"
        );
        let n = live.len();
        if let Ok(mut p) = self.pushed.lock() {
            *p = Some(live);
        }
        Ok(Pass {
            done: n,
            more: false,
        })
    }
}
