//! Worker authentication, the first step of every operation. NATS vouched for who the sender is:
//! its identity is the worker id of the subject (`scheduler.<op>.<worker_id>`), which only that
//! worker (and the gateway, for HTTP workers it authenticated) may publish on, and `rpc` refuses a
//! body naming anyone else. What remains is the farm's word: the worker must be registered and
//! its registration not revoked. A worker that fails this is answered `Unauthorized`.

use super::{Handlers, Unavailable};
use freeagent_shared::db;
use freeagent_shared::db::workers::Worker;
use freeagent_shared::ids::WorkerId;
use std::collections::HashMap;

/// May this registered worker act? Its registration must not have been revoked.
pub(super) fn may_act(w: &Worker) -> bool {
    w.revoked_at.is_none()
}

impl Handlers {
    /// The sender, if it is a registered worker that may act.
    pub(super) async fn authenticate(
        &self,
        worker: WorkerId,
    ) -> Result<Option<Worker>, Unavailable> {
        let w = db::workers::worker_get(&self.pool, worker).await?;
        Ok(w.filter(may_act))
    }

    /// The senders of a batch that are registered workers that may act, by id, in one query.
    /// A sender missing from the map is refused.
    pub(super) async fn authenticate_many(
        &self,
        senders: impl Iterator<Item = WorkerId>,
    ) -> Result<HashMap<WorkerId, Worker>, Unavailable> {
        let mut ids: Vec<WorkerId> = senders.collect();
        ids.sort();
        ids.dedup();
        Ok(db::workers::worker_get_many(&self.pool, &ids)
            .await?
            .into_iter()
            .filter(may_act)
            .map(|w| (w.id, w))
            .collect())
    }
}
