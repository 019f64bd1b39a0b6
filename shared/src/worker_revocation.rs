//! Ending a worker's registration, in one place for every way it ends (the worker unregisters,
//! an admin revokes it, the scheduler's connection guard throws it out): the row is revoked and
//! offline, the change is announced, and its NATS key joins the revocation list the scheduler
//! pushes to the servers (which then close its connections).

use crate::db::{self, Pool};
use crate::events::{self, FarmEvent, WorkerChange};
use crate::ids::WorkerId;
use crate::status::WorkerStatus;
use crate::subjects;

/// Revokes `worker`; the row as it was revoked (None: no such worker).
pub async fn revoke(
    pool: &Pool,
    nats: &async_nats::Client,
    worker: WorkerId,
) -> Result<Option<db::workers::Worker>, db::Error> {
    let Some(w) = db::workers::worker_revoke(pool, worker).await? else {
        return Ok(None);
    };
    let event = FarmEvent::worker(
        w.id,
        WorkerChange::Offline,
        WorkerStatus::Offline,
        Some(w.name.clone()),
    );
    events::publish(nats, &event).await;
    if let Some(key) = &w.nats_public_key {
        db::nats_revocations::revoke(pool, key, w.id, w.nats_jwt_expires_at).await?;
        if let Err(e) = nats.publish(subjects::REVOKED, Default::default()).await {
            tracing::warn!(worker_id = %w.id, error = %e, "could not wake the scheduler; the revocation reaches NATS at its next tick");
        }
    }
    Ok(Some(w))
}
