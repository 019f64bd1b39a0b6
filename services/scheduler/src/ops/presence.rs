//! Presence: a worker reports that it is alive and how many builds it runs. Its status becomes
//! `idle` or `building` (a `draining` worker stays draining), and the reply tells it whether to
//! drain; NATS credentials past half their life are renewed in the reply.
//!
//! Batch path only: the reports of an idle fleet linger to share one query for the workers and
//! one statement that marks every worker seen (`db::workers::workers_presence_batch`). Credentials
//! are renewed one by one (each worker about twice a TTL).

use super::{Handlers, Unavailable};
use chrono::Utc;
use freeagent_shared::db;
use freeagent_shared::db::workers::Worker;
use freeagent_shared::events::{FarmEvent, WorkerChange};
use freeagent_shared::ids::WorkerId;
use freeagent_shared::status::WorkerStatus;
use freeagent_shared::wire::{NotYours, PresenceReply, PresenceRequest};
use std::collections::HashMap;

impl Handlers {
    /// The batch path; a batch of one is a batch too.
    pub async fn presence_many(
        &self,
        reqs: Vec<PresenceRequest>,
    ) -> Result<Vec<PresenceReply>, Unavailable> {
        let workers = self
            .authenticate_many(reqs.iter().map(|r| r.worker_id))
            .await?;
        let (ids, running): (Vec<WorkerId>, Vec<i32>) = reqs
            .iter()
            .filter(|r| workers.contains_key(&r.worker_id))
            .map(|r| (r.worker_id, i32::try_from(r.running).unwrap_or(i32::MAX)))
            .unzip();
        let status: HashMap<WorkerId, WorkerStatus> = if ids.is_empty() {
            HashMap::new()
        } else {
            db::workers::workers_presence_batch(&self.pool, &ids, &running)
                .await?
                .into_iter()
                .collect()
        };
        let mut out = Vec::with_capacity(reqs.len());
        for r in &reqs {
            let (Some(w), Some(st)) = (workers.get(&r.worker_id), status.get(&r.worker_id)) else {
                out.push(PresenceReply::NotYours {
                    reason: NotYours::Unauthorized,
                });
                continue;
            };
            if w.status != *st {
                let event = FarmEvent::worker(
                    w.id,
                    WorkerChange::into_status(*st),
                    *st,
                    Some(w.name.clone()),
                );
                freeagent_shared::events::publish(&self.nats, &event).await;
            }
            let nats_jwt = self.renew_nats_jwt(w).await?;
            // A worker awaiting approval is told to drain: workers of every version then stop
            // pulling, and newer ones say why.
            let awaiting_approval = w.approved_at.is_none();
            out.push(PresenceReply::Seen {
                drain: *st == WorkerStatus::Draining || awaiting_approval,
                nats_jwt,
                awaiting_approval,
            });
        }
        Ok(out)
    }

    /// New NATS credentials for `w` when its current ones are past half their life, or were
    /// minted while it awaited approval and it has been approved since (they could not pull).
    async fn renew_nats_jwt(&self, w: &Worker) -> Result<Option<String>, Unavailable> {
        let (Some(minter), Some(key), Some(exp)) =
            (&self.minter, &w.nats_public_key, w.nats_jwt_expires_at)
        else {
            return Ok(None);
        };
        let ttl =
            chrono::Duration::from_std(self.worker_nats_ttl).unwrap_or(chrono::Duration::hours(24));
        let approved_since = w.approved_at.is_some() && !w.nats_jwt_pulls;
        if exp - Utc::now() > ttl / 2 && !approved_since {
            return Ok(None);
        }
        let new_exp = Utc::now() + ttl;
        let pulls = w.approved_at.is_some();
        let jwt = match freeagent_shared::worker_credentials::mint(minter, w, key, new_exp) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(worker_id = %w.id, error = %e, "cannot renew a worker's NATS credentials");
                return Ok(None);
            }
        };
        Ok(
            db::workers::worker_nats_renewed(&self.pool, w.id, key, new_exp, pulls)
                .await?
                .then_some(jwt),
        )
    }
}
