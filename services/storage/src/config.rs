//! Storage service configuration from `FREEAGENT_*` variables (and the cloud SDKs' own `AWS_*`,
//! `GOOGLE_*`, `AZURE_*`, read by the backend).

use crate::backend::BackendTuning;
use crate::crypt;
use crate::retention::RetentionConfig;
use freeagent_shared::capability::PreviousSecret;
use freeagent_shared::config::{self, ConfigError};
use std::time::Duration;

/// Part size of multipart uploads on cloud backends (S3 needs at least 5 MiB).
pub const DEFAULT_CLOUD_PART_SIZE: u64 = 8 << 20;
/// Part size on local disk, where parts have no minimum: less memory per upload.
pub const DEFAULT_LOCAL_PART_SIZE: u64 = 1 << 20;
/// The smallest part S3-compatible stores accept (but for the last).
pub const MIN_CLOUD_PART_SIZE: u64 = 5 << 20;
/// Parts in flight per upload: memory per upload is about part size × (this + 1).
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(3600);
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub bind: String,
    pub port: u16,
    /// `file:///abs/dir` (or a plain directory path), `s3://bucket[/prefix]`, `gs://…`, `az://…`.
    pub backend_url: String,
    pub signing_secret: String,
    /// Accepted after a rotation until its deadline; never used to sign.
    pub signing_previous: Option<PreviousSecret>,
    /// `None`: 1 MiB on local disk, 8 MiB on cloud backends.
    pub part_size: Option<u64>,
    pub parts_in_flight: usize,
    /// Encrypts signing credentials at rest.
    pub certs_key: [u8; 32],
    /// Decrypt only: what keys before a rotation wrote (`FREEAGENT_CERTS_KEY_PREVIOUS`, and the
    /// keys derived from the current and previous signing secrets; see `from_env`).
    pub certs_keys_previous: Vec<[u8; 32]>,
    pub backend: BackendTuning,
    /// The build records: retention reads them, and a worker's attempt-bound capability is
    /// served only while its attempt runs. `None` (embedded tests only): such capabilities are
    /// refused with 503.
    pub database_url: Option<String>,
    /// `None` turns retention and the orphan sweep off.
    pub retention: Option<RetentionConfig>,
}

impl StorageConfig {
    /// Defaults for everything but where objects go and the signing secret; retention off.
    pub fn new(backend_url: impl Into<String>, signing_secret: impl Into<String>) -> Self {
        let signing_secret = signing_secret.into();
        Self {
            bind: "127.0.0.1".into(),
            port: 0,
            backend_url: backend_url.into(),
            certs_key: crypt::derive_key(&signing_secret),
            signing_secret,
            signing_previous: None,
            part_size: None,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            certs_keys_previous: Vec::new(),
            backend: BackendTuning::default(),
            database_url: None,
            retention: None,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let bind = config::string("FREEAGENT_BIND", "127.0.0.1");
        let signing_secret = config::signing_secret()?;
        let signing_previous = config::previous_signing_secret()?;
        let derived = crypt::derive_key(&signing_secret);
        let own_key = key_var("FREEAGENT_CERTS_KEY")?;
        let certs_key = match own_key {
            Some(k) => k,
            None => {
                tracing::warn!(
                    "FREEAGENT_CERTS_KEY is not set: certs are encrypted with a key derived from the signing secret, accepted only while FREEAGENT_BIND is a loopback address; set a key of its own in production (`{}`)",
                    config::GENERATE_SECRET
                );
                derived
            }
        };
        config::refuse_development_secrets(&bind, &signing_secret, certs_key == derived)?;
        // Keys that only decrypt. Besides FREEAGENT_CERTS_KEY_PREVIOUS: the key derived from the
        // previous signing secret, so a rotation of the secret keeps the certs written under a
        // derived key readable; and, once the farm has a key of its own, the key derived from
        // the current signing secret, for the certs written before it had one. The key id in
        // each object picks the key, so the extra keys cost nothing.
        let mut certs_keys_previous: Vec<[u8; 32]> = key_var("FREEAGENT_CERTS_KEY_PREVIOUS")?
            .into_iter()
            .collect();
        certs_keys_previous.extend(
            signing_previous
                .as_ref()
                .map(|p| crypt::derive_key(&p.secret)),
        );
        if own_key.is_some() {
            certs_keys_previous.push(derived);
        }
        let retention = match config::var("FREEAGENT_RETENTION").as_deref() {
            Some("off") | Some("0") => None,
            _ => Some(RetentionConfig {
                max_age: config::duration("FREEAGENT_RETENTION", DEFAULT_RETENTION)?,
                orphan_grace: config::duration("FREEAGENT_ORPHAN_GRACE", DEFAULT_ORPHAN_GRACE)?,
                interval: config::duration(
                    "FREEAGENT_RETENTION_INTERVAL",
                    DEFAULT_RETENTION_INTERVAL,
                )?,
            }),
        };
        Ok(Self {
            bind,
            port: config::parse(
                "FREEAGENT_STORAGE_PORT",
                config::DEFAULT_STORAGE_PORT,
                "a TCP port",
            )?,
            backend_url: config::string("FREEAGENT_STORAGE_URL", config::DEFAULT_STORAGE_BACKEND),
            signing_previous,
            part_size: match config::var("FREEAGENT_STORAGE_PART_SIZE") {
                Some(_) => Some(config::bytes("FREEAGENT_STORAGE_PART_SIZE", 0)?),
                None => None,
            },
            parts_in_flight: config::parse(
                "FREEAGENT_STORAGE_PARTS_IN_FLIGHT",
                DEFAULT_PARTS_IN_FLIGHT,
                "a positive number",
            )?,
            certs_key,
            database_url: Some(config::string(
                "FREEAGENT_DATABASE_URL",
                config::DEFAULT_DATABASE_URL,
            )),
            certs_keys_previous,
            backend: BackendTuning {
                timeout: config::duration("FREEAGENT_STORAGE_TIMEOUT", Duration::from_secs(30))?,
                retry_timeout: config::duration(
                    "FREEAGENT_STORAGE_RETRY_TIMEOUT",
                    Duration::from_secs(60),
                )?,
                max_retries: config::parse(
                    "FREEAGENT_STORAGE_MAX_RETRIES",
                    5,
                    "a number of retries",
                )?,
                options: Vec::new(),
            },
            retention,
            signing_secret,
        })
    }

    /// The part size to use on a backend of `kind`.
    pub fn effective_part_size(&self, kind: &str) -> usize {
        let cloud = kind != "local";
        let size = match self.part_size {
            Some(n) if cloud => n.max(MIN_CLOUD_PART_SIZE),
            Some(n) => n.max(64 << 10),
            None if cloud => DEFAULT_CLOUD_PART_SIZE,
            None => DEFAULT_LOCAL_PART_SIZE,
        };
        usize::try_from(size).unwrap_or(usize::MAX)
    }
}

fn key_var(name: &str) -> Result<Option<[u8; 32]>, ConfigError> {
    match config::var(name) {
        None => Ok(None),
        Some(v) => crypt::parse_key(&v).map(Some).ok_or_else(|| {
            ConfigError::new(
                name,
                &"*".repeat(v.len()),
                "32 bytes as 64 hex characters or base64 (e.g. `openssl rand -hex 32`)",
            )
        }),
    }
}
