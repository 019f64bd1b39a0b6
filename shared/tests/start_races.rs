//! What replicas of a service do at the same moment when they start, against real Postgres:
//! two gateways started together both store the bootstrap and registration keys.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_shared::db::api_keys::api_key_ensure;
use freeagent_shared::ids::ApiKeyId;
use freeagent_shared::testing::TestDb;

/// Before: the gateway that waited on the other's insert got no row back and exited ("storing
/// the bootstrap API key: no rows returned"), found by `tests/tests/replicas.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_starting_together_each_get_the_one_bootstrap_key() {
    for _ in 0..20 {
        let db = TestDb::new().await;
        let hash = freeagent_shared::token::hash("fak_start-race-start-race-start-race-01");
        let ensures = (0..8).map(|_| {
            let (pool, hash) = (db.pool.clone(), hash.clone());
            tokio::spawn(async move {
                api_key_ensure(&pool, ApiKeyId::new(), "bootstrap", &hash, &["admin"]).await
            })
        });
        let keys: Vec<_> = futures::future::join_all(ensures)
            .await
            .into_iter()
            .map(|r| r.unwrap().expect("every replica gets the key"))
            .collect();
        assert!(
            keys.iter().all(|k| k.id == keys[0].id),
            "one key, stored once"
        );
    }
}
