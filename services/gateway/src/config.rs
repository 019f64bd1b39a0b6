//! Gateway configuration from `FREEAGENT_*` variables, checked at start with actionable errors.

use freeagent_shared::config::{self, ConfigError, MIN_SECRET_LEN};
use std::time::Duration;

pub const DEFAULT_SOURCE_LIMIT: u64 = 500 << 20;
pub const DEFAULT_CERTS_LIMIT: u64 = 10 << 20;
pub const DEFAULT_JSON_LIMIT: u64 = 1 << 20;
/// A build's metadata travels in its job message: capped well below NATS' 1 MiB message limit.
pub const DEFAULT_METADATA_LIMIT: u64 = 64 << 10;
pub const DEFAULT_RESULT_LIMIT: u64 = 2 << 30;
/// Worker tokens live this long; every reply to a worker renews one with a third or less left.
pub const DEFAULT_WORKER_TOKEN_TTL: Duration = Duration::from_secs(90);
/// After a renewal the previous token stays valid this long, for requests already in flight.
pub const DEFAULT_WORKER_TOKEN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_URL_TTL: Duration = Duration::from_secs(600);
/// Worker NATS credentials live this long; presence replies renew them (scheduler).
pub const DEFAULT_WORKER_NATS_TTL: Duration = Duration::from_secs(24 * 3600);

/// Live log streams a gateway keeps open at once: each reads the LOGS stream while idle.
pub const DEFAULT_LOG_ARCHIVE_SETTLE: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_LOG_FOLLOWERS: usize = 10_000;

/// Non-streaming requests (everything but uploads, downloads, long polls) end within this.
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// The shortest bootstrap key accepted: the seed's own minimum, so its operators keep their
/// keys (and every CLI and Mac configured with them) when they move. New keys take 32.
pub const SEED_MIN_API_KEY_LEN: usize = 16;

#[derive(Clone)]
pub struct GatewayConfig {
    pub bind: String,
    pub port: u16,
    pub database_url: String,
    /// Most Postgres connections this process holds (`FREEAGENT_DATABASE_POOL`).
    pub database_pool: u32,
    pub nats: freeagent_shared::nats::NatsSettings,
    pub storage_endpoint: String,
    /// The backend URL storage uses, only to name its kind in `/health`.
    pub storage_backend: String,
    pub signing_secret: String,
    /// Accepted after a rotation until its deadline; never used to sign.
    pub signing_previous: Option<freeagent_shared::capability::PreviousSecret>,
    pub bootstrap_api_key: String,
    /// A key with only the `register_workers` scope, for worker machines
    /// (`FREEAGENT_WORKER_REGISTRATION_KEY`).
    pub worker_registration_key: Option<String>,
    /// What that key may register: the queues (`FREEAGENT_WORKER_REGISTRATION_QUEUES`, none:
    /// any) and the most live workers (`FREEAGENT_WORKER_REGISTRATION_MAX`, none: any number).
    pub worker_registration_queues: Option<Vec<String>>,
    pub worker_registration_max: Option<i32>,
    /// New workers take no build until an operator approves them
    /// (`FREEAGENT_WORKER_APPROVAL=required`; default `off`).
    pub worker_approval_required: bool,
    pub source_limit: u64,
    pub certs_limit: u64,
    pub json_limit: u64,
    pub metadata_limit: u64,
    pub result_limit: u64,
    pub worker_token_ttl: Duration,
    pub worker_token_grace: Duration,
    /// What one HTTP worker may write to the LOGS stream (as the scheduler's log gate counts
    /// a NATS worker's).
    pub log_budget: freeagent_shared::log_budget::LogBudget,
    pub url_ttl: Duration,
    /// Lifetime of the NATS credentials minted for a worker at registration.
    pub worker_nats_ttl: Duration,
    /// Header and body timeouts, the connection cap.
    pub server: freeagent_shared::http_server::ServerLimits,
    /// Requests per second per credential and per address.
    pub rate: RateLimits,
    /// How long a non-streaming request may take (`FREEAGENT_REQUEST_DEADLINE`).
    pub request_deadline: Duration,
    /// How old /health and the stats routes' figures may be (`FREEAGENT_FIGURES_TTL`; 0: none).
    pub figures_ttl: Duration,
    /// A worker not heard from this long shows as offline (`FREEAGENT_WORKER_OFFLINE_AFTER`, as
    /// the scheduler reads it).
    pub worker_offline_after: Duration,
    /// Live log streams (server-sent events) open at once (`FREEAGENT_MAX_LOG_FOLLOWERS`).
    pub max_log_followers: usize,
    /// How long after its end a build's log is archived (`FREEAGENT_LOG_ARCHIVE_SETTLE`): lines
    /// still in flight when it ended are in the stream by then.
    pub log_archive_settle: Duration,
    /// Recent log lines held for followers joining a running build
    /// (`FREEAGENT_LIVE_RECENT_BYTES`, per build `FREEAGENT_LIVE_RECENT_BUILD_BYTES`).
    pub live_recent: RecentLimits,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("bind", &self.bind)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let key = config::var("FREEAGENT_API_KEY").ok_or_else(|| {
            ConfigError::new("FREEAGENT_API_KEY", "", format!("set a bootstrap API key of at least {MIN_SECRET_LEN} characters (for example `openssl rand -hex 32`)"))
        })?;
        // The seed accepted 16: a key carried over from it still starts the farm (with a
        // warning to rotate it, `crate::start`); anything shorter never did.
        if key.len() < SEED_MIN_API_KEY_LEN {
            return Err(ConfigError::new(
                "FREEAGENT_API_KEY",
                &"*".repeat(key.len()),
                format!(
                    "at least {MIN_SECRET_LEN} characters ({SEED_MIN_API_KEY_LEN} for a key carried over from the seed)"
                ),
            ));
        }
        let bind = config::string("FREEAGENT_BIND", "127.0.0.1");
        let signing_secret = config::signing_secret()?;
        // The gateway holds no certs key: only the signing secret is checked here.
        config::refuse_development_secrets(&bind, &signing_secret, false)?;
        Ok(Self {
            server: freeagent_shared::http_server::ServerLimits::from_env()?,
            rate: RateLimits::from_env()?,
            request_deadline: config::duration(
                "FREEAGENT_REQUEST_DEADLINE",
                DEFAULT_REQUEST_DEADLINE,
            )?,
            max_log_followers: config::parse(
                "FREEAGENT_MAX_LOG_FOLLOWERS",
                DEFAULT_MAX_LOG_FOLLOWERS,
                "a number of streams",
            )?,
            log_archive_settle: config::duration(
                "FREEAGENT_LOG_ARCHIVE_SETTLE",
                DEFAULT_LOG_ARCHIVE_SETTLE,
            )?,
            live_recent: {
                let d = RecentLimits::default();
                RecentLimits {
                    total_bytes: config::bytes("FREEAGENT_LIVE_RECENT_BYTES", d.total_bytes as u64)?
                        as usize,
                    build_bytes: config::bytes(
                        "FREEAGENT_LIVE_RECENT_BUILD_BYTES",
                        d.build_bytes as u64,
                    )? as usize,
                }
            },
            figures_ttl: config::duration("FREEAGENT_FIGURES_TTL", DEFAULT_FIGURES_TTL)?,
            worker_offline_after: config::duration(
                "FREEAGENT_WORKER_OFFLINE_AFTER",
                DEFAULT_WORKER_OFFLINE_AFTER,
            )?,
            bind,
            port: config::parse(
                "FREEAGENT_GATEWAY_PORT",
                config::DEFAULT_GATEWAY_PORT,
                "a TCP port",
            )?,
            database_url: config::string("FREEAGENT_DATABASE_URL", config::DEFAULT_DATABASE_URL),
            database_pool: config::database_pool()?,
            nats: freeagent_shared::nats::NatsSettings::from_env()?,
            storage_endpoint: config::string(
                "FREEAGENT_STORAGE_ENDPOINT",
                config::DEFAULT_STORAGE_ENDPOINT,
            ),
            storage_backend: config::string(
                "FREEAGENT_STORAGE_URL",
                config::DEFAULT_STORAGE_BACKEND,
            ),
            signing_secret,
            signing_previous: config::previous_signing_secret()?,
            bootstrap_api_key: key,
            worker_registration_key: match config::var("FREEAGENT_WORKER_REGISTRATION_KEY") {
                Some(k) if k.len() < MIN_SECRET_LEN => {
                    return Err(ConfigError::new(
                        "FREEAGENT_WORKER_REGISTRATION_KEY",
                        &"*".repeat(k.len()),
                        format!("at least {MIN_SECRET_LEN} characters"),
                    ));
                }
                other => other,
            },
            worker_registration_queues: match config::var("FREEAGENT_WORKER_REGISTRATION_QUEUES") {
                None => None,
                Some(raw) => Some(
                    raw.split(',')
                        .map(|q| {
                            freeagent_shared::status::QueueName::parse(q.trim())
                                .map(|q| q.as_str().to_owned())
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| {
                            ConfigError::new(
                                "FREEAGENT_WORKER_REGISTRATION_QUEUES",
                                &raw,
                                e.to_string(),
                            )
                        })?,
                ),
            },
            worker_registration_max: match config::var("FREEAGENT_WORKER_REGISTRATION_MAX") {
                None => None,
                Some(raw) => Some(
                    raw.trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| {
                            ConfigError::new(
                                "FREEAGENT_WORKER_REGISTRATION_MAX",
                                &raw,
                                "a number of workers, at least 1",
                            )
                        })?,
                ),
            },
            worker_approval_required: match config::var("FREEAGENT_WORKER_APPROVAL").as_deref() {
                None | Some("off") => false,
                Some("required") => true,
                Some(other) => {
                    return Err(ConfigError::new(
                        "FREEAGENT_WORKER_APPROVAL",
                        other,
                        "`required` (new workers wait for `freeagent workers approve`) or `off`",
                    ));
                }
            },
            source_limit: config::bytes("FREEAGENT_SOURCE_LIMIT", DEFAULT_SOURCE_LIMIT)?,
            certs_limit: config::bytes("FREEAGENT_CERTS_LIMIT", DEFAULT_CERTS_LIMIT)?,
            json_limit: config::bytes("FREEAGENT_JSON_LIMIT", DEFAULT_JSON_LIMIT)?,
            metadata_limit: config::bytes("FREEAGENT_METADATA_LIMIT", DEFAULT_METADATA_LIMIT)?
                .min(512 << 10),
            result_limit: config::bytes("FREEAGENT_RESULT_LIMIT", DEFAULT_RESULT_LIMIT)?,
            worker_token_ttl: config::duration(
                "FREEAGENT_WORKER_TOKEN_TTL",
                DEFAULT_WORKER_TOKEN_TTL,
            )?,
            log_budget: freeagent_shared::log_budget::LogBudget::from_env()?,
            worker_token_grace: config::duration(
                "FREEAGENT_WORKER_TOKEN_GRACE",
                DEFAULT_WORKER_TOKEN_GRACE,
            )?,
            url_ttl: config::duration("FREEAGENT_GATEWAY_URL_TTL", DEFAULT_URL_TTL)?,
            worker_nats_ttl: config::duration(
                "FREEAGENT_WORKER_NATS_TTL",
                DEFAULT_WORKER_NATS_TTL,
            )?,
        })
    }
}

/// A worker not heard from for this long shows as `offline`, by default.
pub const DEFAULT_WORKER_OFFLINE_AFTER: Duration = Duration::from_secs(30);

/// Figures are at most this old, by default.
pub const DEFAULT_FIGURES_TTL: Duration = Duration::from_secs(2);

/// Requests per second and burst of one bucket; a rate of 0 turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// `FREEAGENT_RATE_LIMIT_{KEY,IP,ANONYMOUS}` (requests per second) and `..._BURST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Per credential (API key, build token, worker token, dashboard session; a key acting for a
    /// worker: per worker).
    pub key: Rate,
    /// Per address, for every request.
    pub ip: Rate,
    /// Per address, for requests without a credential.
    pub anonymous: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            key: Rate {
                per_second: 100,
                burst: 500,
            },
            ip: Rate {
                per_second: 1000,
                burst: 2000,
            },
            anonymous: Rate {
                per_second: 20,
                burst: 100,
            },
        }
    }
}

impl RateLimits {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = RateLimits::default();
        let rate = |name: &str, d: Rate| -> Result<Rate, ConfigError> {
            Ok(Rate {
                per_second: config::parse(
                    &format!("FREEAGENT_RATE_LIMIT_{name}"),
                    d.per_second,
                    "requests per second (0: no limit)",
                )?,
                burst: config::parse(
                    &format!("FREEAGENT_RATE_LIMIT_{name}_BURST"),
                    d.burst,
                    "a number of requests",
                )?,
            })
        };
        Ok(RateLimits {
            key: rate("KEY", d.key)?,
            ip: rate("IP", d.ip)?,
            anonymous: rate("ANONYMOUS", d.anonymous)?,
        })
    }
}

/// How much is kept (`FREEAGENT_LIVE_RECENT_BYTES`, `FREEAGENT_LIVE_RECENT_BUILD_BYTES`).
#[derive(Clone, Copy, Debug)]
pub struct RecentLimits {
    pub total_bytes: usize,
    pub build_bytes: usize,
}

impl Default for RecentLimits {
    fn default() -> Self {
        RecentLimits {
            total_bytes: 64 << 20,
            build_bytes: 1 << 20,
        }
    }
}
