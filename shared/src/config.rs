//! Helpers for typed configuration from `FREEAGENT_*` environment variables: named defaults that
//! work on one machine, and errors that name the variable, the value and what is expected.

use std::str::FromStr;
use std::time::Duration;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/freeagent";
/// Postgres connections one gateway or scheduler process may hold (`FREEAGENT_DATABASE_POOL`).
pub const DEFAULT_DATABASE_POOL: u32 = 20;
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Where the storage service keeps objects by default (a local directory).
pub const DEFAULT_STORAGE_BACKEND: &str = "./data/objects";
/// Where other services reach the storage service.
pub const DEFAULT_STORAGE_ENDPOINT: &str = "http://127.0.0.1:8081";
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:8080";
pub const DEFAULT_GATEWAY_PORT: u16 = 8080;
pub const DEFAULT_STORAGE_PORT: u16 = 8081;
pub const DEFAULT_SCHEDULER_PORT: u16 = 8082;
/// Used only when `FREEAGENT_SIGNING_SECRET` is unset, with a warning: fine on one machine,
/// never in production, where anyone knowing it could forge storage URLs.
pub const DEV_SIGNING_SECRET: &str = "freeagent-dev-signing-secret-change-me";
/// Shortest API key or signing secret accepted.
pub const MIN_SECRET_LEN: usize = 32;
/// How operators are told to make a secret or a key.
pub const GENERATE_SECRET: &str = "openssl rand -hex 32";

#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} is not valid: {expected}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub expected: String,
}

impl ConfigError {
    pub fn new(var: &str, value: &str, expected: impl Into<String>) -> Self {
        Self {
            var: var.to_owned(),
            value: value.to_owned(),
            expected: expected.into(),
        }
    }
}

/// The variable's value, if set and not empty.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn string(name: &str, default: &str) -> String {
    var(name).unwrap_or_else(|| default.to_owned())
}

/// Parses a variable with `FromStr`, falling back to `default` when unset.
pub fn parse<T: FromStr>(name: &str, default: T, expected: &str) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(name, &v, expected)),
    }
}

/// `FREEAGENT_DATABASE_POOL`: at least one connection. Postgres refuses clients past its own
/// `max_connections` (100 by default), so every replica's pool counts against that.
pub fn database_pool() -> Result<u32, ConfigError> {
    Ok(parse(
        "FREEAGENT_DATABASE_POOL",
        DEFAULT_DATABASE_POOL,
        "a positive number",
    )?
    .max(1))
}

/// A duration in humantime form (`30s`, `2h`, `500ms`).
pub fn duration(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v.trim())
            .map_err(|_| ConfigError::new(name, &v, "a duration such as 30s, 5m or 2h")),
    }
}

/// A byte size: a plain number of bytes, or with a KiB/MiB/GiB/TiB suffix (`K`, `M`, `G`, `T`
/// alone mean the same binary units, as `truncate`, `dd` and Docker read them).
pub fn bytes(name: &str, default: u64) -> Result<u64, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => parse_bytes(&v)
            .ok_or_else(|| ConfigError::new(name, &v, "a size such as 1048576, 500MiB or 2GiB")),
    }
}

pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
        ("B", 1),
    ]
    .into_iter()
    .find_map(|(suf, m)| v.strip_suffix(suf).map(|n| (n.trim(), m)))
    .unwrap_or((v, 1));
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// The HMAC secret shared by the services that sign and check storage capabilities.
pub fn signing_secret() -> Result<String, ConfigError> {
    match var("FREEAGENT_SIGNING_SECRET") {
        Some(s) if s.len() >= MIN_SECRET_LEN => Ok(s),
        Some(s) => Err(ConfigError::new(
            "FREEAGENT_SIGNING_SECRET",
            &"*".repeat(s.len()),
            format!("at least {MIN_SECRET_LEN} characters"),
        )),
        None => {
            tracing::warn!(
                "FREEAGENT_SIGNING_SECRET is not set: using the development secret, accepted only while FREEAGENT_BIND is a loopback address; set it on every service in production (`{GENERATE_SECRET}`)"
            );
            Ok(DEV_SIGNING_SECRET.to_owned())
        }
    }
}

/// The secret in use before the current one, accepted until `FREEAGENT_SIGNING_SECRET_PREVIOUS_UNTIL`
/// (RFC 3339 or epoch seconds; forever when unset) so a rotation needs no downtime.
pub fn previous_signing_secret() -> Result<Option<crate::capability::PreviousSecret>, ConfigError> {
    let Some(secret) = var("FREEAGENT_SIGNING_SECRET_PREVIOUS") else {
        return Ok(None);
    };
    if secret.len() < MIN_SECRET_LEN {
        return Err(ConfigError::new(
            "FREEAGENT_SIGNING_SECRET_PREVIOUS",
            &"*".repeat(secret.len()),
            format!("at least {MIN_SECRET_LEN} characters"),
        ));
    }
    let until = match var("FREEAGENT_SIGNING_SECRET_PREVIOUS_UNTIL") {
        None => None,
        Some(v) => Some(parse_instant(&v).ok_or_else(|| {
            ConfigError::new(
                "FREEAGENT_SIGNING_SECRET_PREVIOUS_UNTIL",
                &v,
                "an RFC 3339 time or seconds since the epoch",
            )
        })?),
    };
    Ok(Some(crate::capability::PreviousSecret { secret, until }))
}

/// Whether a listen address (`FREEAGENT_BIND`) accepts connections from this machine only:
/// `localhost`, `127.0.0.0/8` or `::1`. Any other address or host name counts as reachable.
pub fn is_loopback(bind: &str) -> bool {
    let host = bind.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Production-safe defaults, one rule for every service: a service that listens beyond this
/// machine (`bind` is not loopback) refuses to start with the development signing secret, or
/// (storage) with a certs key derived from the signing secret — anyone who knows the former can
/// forge storage URLs, and the latter ties the certs at rest to a secret that rotates. On a
/// loopback bind (`freeagent dev`, the tests) both stay allowed, with the warnings given where
/// they are read. The error names every variable to set and how to make a value.
pub fn refuse_development_secrets(
    bind: &str,
    signing_secret: &str,
    certs_key_derived: bool,
) -> Result<(), ConfigError> {
    let dev_secret = signing_secret == DEV_SIGNING_SECRET;
    if is_loopback(bind) || !(dev_secret || certs_key_derived) {
        return Ok(());
    }
    let mut fixes = Vec::new();
    if dev_secret {
        fixes.push(format!(
            "set FREEAGENT_SIGNING_SECRET to a secret of your own, the same on gateway, scheduler and storage (at least {MIN_SECRET_LEN} characters, e.g. `{GENERATE_SECRET}`): the development secret is public, and anyone who knows it can forge storage URLs"
        ));
    }
    if certs_key_derived {
        fixes.push(format!(
            "set FREEAGENT_CERTS_KEY on storage to a key of its own (32 bytes as 64 hex characters: `{GENERATE_SECRET}`), not derived from the signing secret"
        ));
    }
    let var_name = if dev_secret {
        "FREEAGENT_SIGNING_SECRET"
    } else {
        "FREEAGENT_CERTS_KEY"
    };
    // The value is never printed: unset shows as empty, set as its length in stars.
    let shown = var(var_name)
        .map(|v| "*".repeat(v.len()))
        .unwrap_or_default();
    Err(ConfigError::new(
        var_name,
        &shown,
        format!(
            "FREEAGENT_BIND={bind} is not a loopback address, so development secrets are refused: {}; or bind to 127.0.0.1 for a farm on one machine",
            fixes.join("; ")
        ),
    ))
}

fn parse_instant(v: &str) -> Option<i64> {
    v.trim().parse::<i64>().ok().or_else(|| {
        chrono::DateTime::parse_from_rfc3339(v.trim())
            .ok()
            .map(|t| t.timestamp())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("10"), Some(10));
        assert_eq!(parse_bytes("10KiB"), Some(10 * 1024));
        assert_eq!(parse_bytes("500 MiB"), Some(500 << 20));
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("20G"), Some(20 << 30));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("1T"), Some(1 << 40));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("2GB"), None);
        assert_eq!(parse_bytes("99999999999999999999GiB"), None);
    }

    #[test]
    fn loopback_binds_are_told_apart() {
        for bind in [
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "[::1]",
            "localhost",
            " LOCALHOST ",
        ] {
            assert!(is_loopback(bind), "{bind}");
        }
        for bind in ["0.0.0.0", "::", "[::]", "10.0.0.5", "example.com", ""] {
            assert!(!is_loopback(bind), "{bind}");
        }
    }

    #[test]
    fn development_secrets_are_refused_off_loopback_only() {
        let own = "x".repeat(MIN_SECRET_LEN);
        for bind in ["127.0.0.1", "::1", "localhost"] {
            assert!(refuse_development_secrets(bind, DEV_SIGNING_SECRET, true).is_ok());
        }
        assert!(refuse_development_secrets("0.0.0.0", &own, false).is_ok());
        let e = refuse_development_secrets("0.0.0.0", DEV_SIGNING_SECRET, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FREEAGENT_SIGNING_SECRET") && e.contains(GENERATE_SECRET),
            "{e}"
        );
        assert!(!e.contains("FREEAGENT_CERTS_KEY"), "{e}");
        let e = refuse_development_secrets("10.0.0.5", &own, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FREEAGENT_CERTS_KEY") && e.contains(GENERATE_SECRET),
            "{e}"
        );
        let e = refuse_development_secrets("::", DEV_SIGNING_SECRET, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FREEAGENT_SIGNING_SECRET") && e.contains("FREEAGENT_CERTS_KEY"),
            "{e}"
        );
        assert!(!e.contains(DEV_SIGNING_SECRET), "{e}");
    }
}
