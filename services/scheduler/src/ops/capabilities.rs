//! The storage capabilities a worker gets with a grant (source, certs, result) and with each
//! renewed lease (result): minutes long, never past the lease they were granted with, and bound
//! to the attempt (a result URL names its attempt's key; source and certs URLs name the attempt,
//! and storage serves them only while it runs).

use chrono::{DateTime, Utc};
use freeagent_shared::capability::{Bound, Method, Signer};
use freeagent_shared::ids::{Attempt, BuildId};
use freeagent_shared::object_key::ObjectKey;
use std::time::Duration;

/// Signs the storage capabilities a worker gets.
#[derive(Clone)]
pub struct Capabilities {
    pub signer: Signer,
    pub storage_endpoint: String,
    pub ttl: Duration,
    pub result_limit: u64,
}

impl Capabilities {
    fn exp(&self, lease_end: DateTime<Utc>) -> i64 {
        let by_ttl = Utc::now().timestamp() + self.ttl.as_secs() as i64;
        by_ttl.min(lease_end.timestamp())
    }

    /// A download of the build's source or certs, served only while `attempt` of `build` runs
    /// (storage checks): it dies with the attempt, not only at its expiry.
    pub fn get_url(
        &self,
        key: &ObjectKey,
        build: BuildId,
        attempt: Attempt,
        lease_end: DateTime<Utc>,
    ) -> String {
        let exp = self.exp(lease_end);
        self.signer.url_bound(
            &self.storage_endpoint,
            Method::Get,
            key,
            exp,
            0,
            Some(Bound { build, attempt }),
        )
    }

    pub fn result_url(&self, build: BuildId, attempt: Attempt, lease_end: DateTime<Utc>) -> String {
        let exp = self.exp(lease_end);
        self.signer.url(
            &self.storage_endpoint,
            Method::Put,
            &ObjectKey::Result(build, attempt),
            exp,
            self.result_limit,
        )
    }
}
