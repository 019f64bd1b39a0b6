//! Test factories: rows as a test needs them, through the same queries the services use.

use crate::db::{self, Pool, builds::NewBuild, builds::NewObject, workers::NewWorker};
use crate::ids::{BuildId, WorkerId};
use crate::status::{Platform, QueueName};
use crate::token;

#[derive(Clone, Debug)]
pub struct BuildOpts {
    pub platform: Platform,
    pub max_attempts: i32,
    pub priority: i32,
    pub timeout_secs: i32,
    pub retry_on_failure: bool,
}

impl Default for BuildOpts {
    fn default() -> Self {
        Self {
            platform: Platform::Android,
            max_attempts: 3,
            priority: 0,
            timeout_secs: 7200,
            retry_on_failure: false,
        }
    }
}

/// A pending build with a (fake) stored source.
pub async fn build(pool: &Pool, opts: BuildOpts) -> BuildId {
    let id = BuildId::new();
    let new = NewBuild {
        id,
        platform: opts.platform,
        queue: QueueName::for_platform(opts.platform),
        priority: opts.priority,
        max_attempts: opts.max_attempts,
        metadata: serde_json::json!({}),
        source: NewObject {
            key: format!("builds/{id}/source"),
            size: 1,
            sha256: "00".repeat(32),
        },
        certs: None,
        token_hash: token::hash(&token::generate(token::TokenKind::Build)),
        original_build_id: None,
        timeout_secs: opts.timeout_secs,
        retry_on_failure: opts.retry_on_failure,
        team: crate::team::TeamName::default_team(),
        submitted_by: None,
    };
    db::builds::build_insert(pool, &new)
        .await
        .expect("insert build");
    id
}

/// A registered worker: its id and its (HTTP) worker token.
#[derive(Clone, Debug)]
pub struct TestWorker {
    pub worker_id: WorkerId,
    pub worker_token: String,
}

/// A registered worker and its credential.
pub async fn worker(pool: &Pool, platforms: &[Platform]) -> TestWorker {
    let id = WorkerId::new();
    let t = token::generate(token::TokenKind::Worker);
    let new = NewWorker {
        id,
        name: format!("test-{id}"),
        platforms: platforms.iter().map(|p| p.as_str().to_owned()).collect(),
        capabilities: serde_json::json!({}),
        token_hash: token::hash(&t),
        token_expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        registered_by: None,
        queues: platforms.iter().map(|p| p.as_str().to_owned()).collect(),
        // Simulated workers hold as many builds as a test gives them; capacity tests set less.
        max_concurrent: 1024,
        nats_public_key: None,
        nats_jwt_expires_at: None,
        polls_over_http: false,
        approved: true,
    };
    db::workers::worker_insert(pool, &new)
        .await
        .expect("insert worker");
    TestWorker {
        worker_id: id,
        worker_token: t,
    }
}

/// A line of `build`'s log as the farm writes it (`subjects::farm_logs`), stamped now: tests
/// and the follow benchmark publish these to drive live logs without a worker.
pub fn farm_line(build: BuildId, seq: u64, message: String) -> crate::wire::LogLine {
    crate::wire::LogLine {
        build_id: build,
        attempt: crate::ids::Attempt::NONE,
        seq,
        timestamp: chrono::Utc::now(),
        level: crate::wire::LogLevel::Info,
        message,
        stream: None,
    }
}
