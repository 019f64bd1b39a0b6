//! Worker configuration from `FREEAGENT_*` variables.

use freeagent_shared::config::{self, ConfigError};
use freeagent_shared::status::{Platform, QueueName};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_BUILD_COMMAND: &str = "sh build.sh";
pub const DEFAULT_MAX_CONCURRENT: usize = 1;
/// After SIGTERM to a build's process group, wait this long before SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// On shutdown, running builds get this long to finish before they are stopped.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// How often a worker reports its presence (and learns whether to drain).
pub const DEFAULT_PRESENCE_INTERVAL: Duration = Duration::from_secs(10);
/// Longest log line kept; longer ones are cut.
pub const MAX_LOG_LINE: usize = 16 * 1024;

#[derive(Clone)]
pub struct WorkerConfig {
    pub gateway_url: String,
    pub api_key: String,
    /// URL and TLS; a worker's identity comes from registration, never from a file.
    pub nats: freeagent_shared::nats::NatsSettings,
    pub name: String,
    pub platforms: Vec<Platform>,
    pub queues: Vec<QueueName>,
    pub build_command: String,
    pub work_dir: Option<PathBuf>,
    /// Where the worker keeps its id and NATS key across restarts
    /// (`FREEAGENT_WORKER_IDENTITY_FILE`; none: a new identity at every start).
    pub identity_file: Option<PathBuf>,
    pub max_concurrent: usize,
    pub kill_grace: Duration,
    /// What a source archive may unpack to (`FREEAGENT_UNPACK_LIMIT`, `_UNPACK_ENTRIES`).
    pub unpack: crate::workspace::UnpackLimits,
    /// Per-build log caps (`FREEAGENT_LOG_MAX_BYTES`, `_LOG_LINES_PER_SEC`, `_LOG_SPOOL_SECS`).
    pub log_caps: crate::log_stream::LogCaps,
    pub shutdown_grace: Duration,
    pub presence_every: Duration,
    /// How builds are isolated (`FREEAGENT_SANDBOX`, `FREEAGENT_SANDBOX_UID`) and what each may
    /// use (`FREEAGENT_BUILD_MEMORY`, `FREEAGENT_BUILD_CPUS`), checked at start.
    pub sandbox: crate::sandbox::Sandbox,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("name", &self.name)
            .field("queues", &self.queues)
            .field("sandbox", &self.sandbox.level())
            .finish_non_exhaustive()
    }
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let api_key = config::var("FREEAGENT_API_KEY").ok_or_else(|| {
            ConfigError::new(
                "FREEAGENT_API_KEY",
                "",
                "the API key (with the worker scope) used to register this worker",
            )
        })?;
        let platforms_raw = config::string("FREEAGENT_WORKER_PLATFORMS", "android");
        let platforms = platforms_raw
            .split(',')
            .map(|p| p.trim().parse::<Platform>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                ConfigError::new("FREEAGENT_WORKER_PLATFORMS", &platforms_raw, e.to_string())
            })?;
        let queues = match config::var("FREEAGENT_WORKER_QUEUES") {
            None => platforms
                .iter()
                .map(|p| QueueName::for_platform(*p))
                .collect(),
            Some(raw) => raw
                .split(',')
                .map(|q| QueueName::parse(q.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::new("FREEAGENT_WORKER_QUEUES", &raw, e.to_string()))?,
        };
        let work_dir = config::var("FREEAGENT_WORK_DIR").map(PathBuf::from);
        let max_concurrent = config::parse(
            "FREEAGENT_WORKER_MAX_CONCURRENT",
            DEFAULT_MAX_CONCURRENT,
            "a positive number",
        )?
        .max(1);
        let sandbox = crate::sandbox::Sandbox::from_env(work_dir.as_deref(), max_concurrent)?;
        Ok(Self {
            gateway_url: config::string("FREEAGENT_GATEWAY_URL", config::DEFAULT_GATEWAY_URL),
            api_key,
            nats: freeagent_shared::nats::NatsSettings {
                creds: None,
                signing_key: None,
                workers_signing_key: None,
                operator_key: None,
                system_creds: None,
                ..freeagent_shared::nats::NatsSettings::from_env()?
            },
            name: config::var("FREEAGENT_WORKER_NAME").unwrap_or_else(default_name),
            platforms,
            queues,
            build_command: config::string("FREEAGENT_BUILD_COMMAND", DEFAULT_BUILD_COMMAND),
            work_dir,
            identity_file: config::var("FREEAGENT_WORKER_IDENTITY_FILE").map(PathBuf::from),
            max_concurrent,
            kill_grace: config::duration("FREEAGENT_KILL_GRACE", DEFAULT_KILL_GRACE)?,
            unpack: crate::workspace::UnpackLimits {
                max_bytes: config::bytes(
                    "FREEAGENT_UNPACK_LIMIT",
                    crate::workspace::DEFAULT_UNPACK_LIMITS.max_bytes,
                )?,
                max_ratio: config::parse(
                    "FREEAGENT_UNPACK_RATIO",
                    crate::workspace::DEFAULT_UNPACK_LIMITS.max_ratio,
                    "how many times its own size an archive may unpack to (0: no ratio)",
                )?,
                ratio_floor: crate::workspace::DEFAULT_UNPACK_LIMITS.ratio_floor,
                max_entries: config::parse(
                    "FREEAGENT_UNPACK_ENTRIES",
                    crate::workspace::DEFAULT_UNPACK_LIMITS.max_entries,
                    "a number of archive entries",
                )?,
            },
            log_caps: crate::log_stream::LogCaps {
                max_bytes: config::bytes(
                    "FREEAGENT_LOG_MAX_BYTES",
                    crate::log_stream::DEFAULT_LOG_CAPS.max_bytes,
                )?,
                lines_per_sec: config::parse(
                    "FREEAGENT_LOG_LINES_PER_SEC",
                    crate::log_stream::DEFAULT_LOG_CAPS.lines_per_sec,
                    "a number of lines per second",
                )?,
                spool_secs: config::parse(
                    "FREEAGENT_LOG_SPOOL_SECS",
                    crate::log_stream::DEFAULT_LOG_CAPS.spool_secs,
                    "a number of seconds",
                )?,
            },
            shutdown_grace: config::duration("FREEAGENT_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE)?,
            presence_every: config::duration(
                "FREEAGENT_PRESENCE_INTERVAL",
                DEFAULT_PRESENCE_INTERVAL,
            )?,
            sandbox,
        })
    }
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}
