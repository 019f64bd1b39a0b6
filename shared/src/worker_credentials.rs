//! A worker's NATS credentials, minted in one place from its row: the gateway at registration and
//! the scheduler at renewal both call `mint`, so the permissions a worker gets (its own
//! subjects, and its queues only once it is approved: `Worker::nats_queues`) are spelled once.

use crate::db::workers::Worker;
use crate::nats_auth::{AuthError, Minter, Role};
use chrono::{DateTime, Utc};

/// A user JWT for `w`'s NATS key `key`, valid until `expires`.
pub fn mint(
    minter: &Minter,
    w: &Worker,
    key: &str,
    expires: DateTime<Utc>,
) -> Result<String, AuthError> {
    let role = Role::Worker {
        id: w.id,
        queues: w.nats_queues(),
    };
    minter.user_jwt(&role, key, Some(expires.timestamp()))
}
