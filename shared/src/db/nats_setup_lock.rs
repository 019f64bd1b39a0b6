//! The farm-wide lock a service holds while it first connects to NATS and sets up the
//! JetStream streams. A NATS 2.9 server configures an account's JetStream for each connection
//! that finds the account not yet loaded; when the gateway and the schedulers of a fresh farm
//! connect at the same moment, those set-ups race and one deletes the store files of streams
//! the other just made. The streams then acknowledge publishes they can never deliver: a
//! dispatch sat in its queue, never handed to a pulling worker, until the scheduler
//! re-dispatched it (and that publish failed too). Taken in turn, the first service loads the
//! account and the others find it loaded.

use super::{Error, Pool, Postgres, Transaction};
use std::time::{Duration, Instant};

/// An arbitrary constant naming this lock: "FA" "natsup".
const NATS_SETUP_LOCK: i64 = 0x4641_6e61_7473_7570;

/// How often a waiting service asks again; set-up takes a few milliseconds.
const POLL: Duration = Duration::from_millis(25);

/// Held until [`NatsSetupLock::release`]; dropped early (an error), the transaction rolls back
/// and Postgres frees the lock, as it does when the holder's process dies.
pub struct NatsSetupLock {
    tx: Option<Transaction<'static, Postgres>>,
}

impl NatsSetupLock {
    /// Waits up to `wait` for the lock. Past that (a holder stuck on an unreachable NATS), the
    /// caller goes on without it: a set-up race is rare, a farm that never starts is not.
    pub async fn acquire(pool: &Pool, wait: Duration) -> Result<Self, Error> {
        let deadline = Instant::now() + wait;
        loop {
            let mut tx = pool.begin().await?;
            let (got,): (bool,) =
                sqlx::query_as(crate::db::sql!("sql/nats_setup_lock/try_lock.sql"))
                    .bind(NATS_SETUP_LOCK)
                    .fetch_one(&mut *tx)
                    .await?;
            if got {
                return Ok(NatsSetupLock { tx: Some(tx) });
            }
            drop(tx);
            if Instant::now() >= deadline {
                tracing::warn!(
                    waited_secs = wait.as_secs(),
                    "another service has held the NATS set-up lock too long; setting up without it"
                );
                return Ok(NatsSetupLock { tx: None });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Lets the next service set up.
    pub async fn release(mut self) -> Result<(), Error> {
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
        }
        Ok(())
    }
}
