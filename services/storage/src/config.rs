//! Storage service configuration from `FREEAGENT_*` variables.

use freeagent_shared::config::{self, ConfigError};

/// Part size of multipart uploads (S3 needs at least 5 MiB).
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
/// Parts in flight per upload: memory per upload is about part size × (this + 1).
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub bind: String,
    pub port: u16,
    /// `file:///abs/dir`, or a plain directory path.
    pub backend_url: String,
    pub signing_secret: String,
    pub part_size: u64,
    pub parts_in_flight: usize,
}

impl StorageConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            bind: config::string("FREEAGENT_BIND", "127.0.0.1"),
            port: config::parse(
                "FREEAGENT_STORAGE_PORT",
                config::DEFAULT_STORAGE_PORT,
                "a TCP port",
            )?,
            backend_url: config::string("FREEAGENT_STORAGE_URL", config::DEFAULT_STORAGE_BACKEND),
            signing_secret: config::signing_secret()?,
            part_size: config::bytes("FREEAGENT_STORAGE_PART_SIZE", DEFAULT_PART_SIZE)?,
            parts_in_flight: config::parse(
                "FREEAGENT_STORAGE_PARTS_IN_FLIGHT",
                DEFAULT_PARTS_IN_FLIGHT,
                "a positive number",
            )?,
        })
    }
}
