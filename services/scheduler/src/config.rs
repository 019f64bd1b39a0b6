//! Scheduler configuration from `FREEAGENT_*` variables; every default is a named constant.

use freeagent_shared::config::{self, ConfigError};
use std::time::Duration;

pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Workers that poll over HTTP (the seed's macOS app) boot a VM for minutes after a claim and
/// then report every 30 s; the seed gave them two minutes.
pub const DEFAULT_HTTP_LEASE: Duration = Duration::from_secs(120);
pub const DEFAULT_DISPATCH_BATCH: i64 = 256;
/// Dispatched-but-unclaimed builds allowed per queue: about the queue's fleet capacity.
pub const DEFAULT_DISPATCH_WINDOW: i64 = 64;
pub const DEFAULT_REDISPATCH_AFTER: Duration = Duration::from_secs(60);
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(2);
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A worker not heard from for this long counts as offline.
pub const DEFAULT_WORKER_OFFLINE_AFTER: Duration = Duration::from_secs(30);
/// Storage capabilities handed to workers live minutes; heartbeats renew the upload one, and
/// none outlives the lease it was granted with.
pub const DEFAULT_URL_TTL: Duration = Duration::from_secs(10 * 60);
/// Worker NATS credentials live this long; presence replies renew them at half-life.
pub const DEFAULT_WORKER_NATS_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_RESULT_LIMIT: u64 = 2 << 30;
pub const DEFAULT_RPC_CONCURRENCY: usize = 256;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub bind: String,
    pub port: u16,
    pub database_url: String,
    /// Most Postgres connections this process holds (`FREEAGENT_DATABASE_POOL`).
    pub database_pool: u32,
    pub nats: freeagent_shared::nats::NatsSettings,
    pub storage_endpoint: String,
    pub signing_secret: String,
    /// Accepted after a rotation until its deadline; never used to sign.
    pub signing_previous: Option<freeagent_shared::capability::PreviousSecret>,
    /// A claim or heartbeat keeps a build for this long.
    pub lease: Duration,
    /// The same for workers that poll over HTTP (`FREEAGENT_HTTP_LEASE`); any report of theirs
    /// about the build renews it.
    pub http_lease: Duration,
    pub dispatch_batch: i64,
    /// Builds of one queue that may wait in JetStream unclaimed; the rest wait in Postgres.
    pub dispatch_window: i64,
    /// A dispatch nobody claimed within this is published again (same attempt).
    pub redispatch_after: Duration,
    /// How often the dispatcher and rescuer run without a wake-up.
    pub tick: Duration,
    /// First delay before a requeued build (lost worker, abandon) is dispatched again; it
    /// doubles with each attempt, with jitter, up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub worker_offline_after: Duration,
    /// Lifetime of signed storage URLs handed to workers.
    pub url_ttl: Duration,
    pub result_limit: u64,
    /// Lifetime of a worker's NATS user JWT (renewed by presence replies at half-life).
    pub worker_nats_ttl: Duration,
    pub rpc_concurrency: usize,
    pub shutdown_grace: Duration,
    /// What one worker may write to the LOGS stream through the log gate.
    pub log_budget: crate::ops::LogBudget,
    /// NATS connections one worker may hold (0: unchecked).
    pub worker_max_connections: usize,
}

impl SchedulerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let bind = config::string("FREEAGENT_BIND", "127.0.0.1");
        let signing_secret = config::signing_secret()?;
        // The scheduler holds no certs key: only the signing secret is checked here.
        config::refuse_development_secrets(&bind, &signing_secret, false)?;
        Ok(Self {
            bind,
            port: config::parse(
                "FREEAGENT_SCHEDULER_PORT",
                config::DEFAULT_SCHEDULER_PORT,
                "a TCP port",
            )?,
            database_url: config::string("FREEAGENT_DATABASE_URL", config::DEFAULT_DATABASE_URL),
            database_pool: config::database_pool()?,
            nats: freeagent_shared::nats::NatsSettings::from_env()?,
            storage_endpoint: config::string(
                "FREEAGENT_STORAGE_ENDPOINT",
                config::DEFAULT_STORAGE_ENDPOINT,
            ),
            signing_secret,
            signing_previous: config::previous_signing_secret()?,
            lease: config::duration("FREEAGENT_LEASE", DEFAULT_LEASE)?,
            http_lease: config::duration("FREEAGENT_HTTP_LEASE", DEFAULT_HTTP_LEASE)?,
            dispatch_batch: config::parse(
                "FREEAGENT_DISPATCH_BATCH",
                DEFAULT_DISPATCH_BATCH,
                "a positive number",
            )?
            .max(1),
            dispatch_window: config::parse(
                "FREEAGENT_DISPATCH_WINDOW",
                DEFAULT_DISPATCH_WINDOW,
                "a positive number",
            )?
            .max(1),
            redispatch_after: config::duration(
                "FREEAGENT_REDISPATCH_AFTER",
                DEFAULT_REDISPATCH_AFTER,
            )?,
            tick: config::duration("FREEAGENT_SCHEDULER_TICK", DEFAULT_TICK)?,
            retry_backoff: config::duration("FREEAGENT_RETRY_BACKOFF", DEFAULT_RETRY_BACKOFF)?,
            retry_backoff_max: config::duration(
                "FREEAGENT_RETRY_BACKOFF_MAX",
                DEFAULT_RETRY_BACKOFF_MAX,
            )?,
            worker_offline_after: config::duration(
                "FREEAGENT_WORKER_OFFLINE_AFTER",
                DEFAULT_WORKER_OFFLINE_AFTER,
            )?,
            url_ttl: config::duration("FREEAGENT_URL_TTL", DEFAULT_URL_TTL)?,
            result_limit: config::bytes("FREEAGENT_RESULT_LIMIT", DEFAULT_RESULT_LIMIT)?,
            worker_nats_ttl: config::duration(
                "FREEAGENT_WORKER_NATS_TTL",
                DEFAULT_WORKER_NATS_TTL,
            )?,
            rpc_concurrency: config::parse(
                "FREEAGENT_RPC_CONCURRENCY",
                DEFAULT_RPC_CONCURRENCY,
                "a positive number",
            )?
            .max(1),
            shutdown_grace: config::duration("FREEAGENT_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE)?,
            log_budget: crate::ops::LogBudget::from_env()?,
            worker_max_connections: config::parse(
                "FREEAGENT_WORKER_MAX_CONNECTIONS",
                crate::connection_guard::DEFAULT_MAX_CONNECTIONS,
                "a number of connections (0: unchecked)",
            )?,
        })
    }

    /// Defaults everywhere but the connection strings; used by tests.
    pub fn for_urls(
        database_url: &str,
        nats: freeagent_shared::nats::NatsSettings,
        storage_endpoint: &str,
        secret: &str,
    ) -> Self {
        Self {
            bind: "127.0.0.1".into(),
            port: 0,
            database_url: database_url.into(),
            database_pool: config::DEFAULT_DATABASE_POOL,
            nats,
            storage_endpoint: storage_endpoint.into(),
            signing_secret: secret.into(),
            signing_previous: None,
            lease: DEFAULT_LEASE,
            http_lease: DEFAULT_HTTP_LEASE,
            dispatch_batch: DEFAULT_DISPATCH_BATCH,
            dispatch_window: DEFAULT_DISPATCH_WINDOW,
            redispatch_after: DEFAULT_REDISPATCH_AFTER,
            tick: DEFAULT_TICK,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            worker_offline_after: DEFAULT_WORKER_OFFLINE_AFTER,
            url_ttl: DEFAULT_URL_TTL,
            result_limit: DEFAULT_RESULT_LIMIT,
            worker_nats_ttl: DEFAULT_WORKER_NATS_TTL,
            rpc_concurrency: DEFAULT_RPC_CONCURRENCY,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            log_budget: crate::ops::LogBudget::default(),
            worker_max_connections: crate::connection_guard::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl SchedulerConfig {
    pub fn backoff(&self) -> freeagent_shared::db::builds::Backoff {
        freeagent_shared::db::builds::Backoff {
            base_secs: self.retry_backoff.as_secs_f64(),
            cap_secs: self.retry_backoff_max.as_secs_f64(),
        }
    }
}
