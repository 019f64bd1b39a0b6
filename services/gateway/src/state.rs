//! What every handler shares.

use crate::config::GatewayConfig;
use crate::storage_client::StorageClient;
use freeagent_shared::db::Pool;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub nats: async_nats::Client,
    pub storage: StorageClient,
    pub config: std::sync::Arc<GatewayConfig>,
    /// Worker operations for HTTP workers go to the scheduler, as NATS workers' do.
    pub scheduler: freeagent_shared::scheduler_client::SchedulerClient,
    pub signer: freeagent_shared::capability::Signer,
    pub api_keys: crate::auth::api_key_cache::ApiKeyCache,
    /// Records API keys' `last_used_at`, off the request path.
    pub key_usage: crate::auth::key_usage::KeyUsage,
    /// Submissions that arrive together are inserted by one statement (one commit).
    pub inserts: crate::builds::inserts::Inserts,
    /// Mints each registering worker's NATS credentials (None: NATS without auth).
    pub minter: Option<freeagent_shared::nats_auth::Minter>,
    /// Each queue's JetStream consumer, for HTTP workers' polls.
    pub consumers: crate::workers::queue_consumers::QueueConsumers,
    /// Farm figures for /health and the stats routes, a few seconds old at most.
    pub figures: crate::figures::FiguresCache,
    /// One permit per open live log stream (`FREEAGENT_MAX_LOG_FOLLOWERS`).
    pub log_followers: std::sync::Arc<tokio::sync::Semaphore>,
    /// The live feed of log lines and farm events, shared by every open stream.
    pub live: crate::logs::live::Live,
    /// When each held build's lease was last renewed by a report.
    pub lease_renewals: crate::workers::lease_renewals::LeaseRenewals,
    /// Builds' teams, for event streams that show one team's builds.
    pub build_teams: crate::logs::build_teams::BuildTeams,
    /// HTTP workers' log budget: lines and bytes per second per worker, bytes per attempt.
    pub log_budget: std::sync::Arc<(
        freeagent_shared::log_budget::WorkerBuckets,
        freeagent_shared::log_budget::AttemptBytes,
    )>,
}
