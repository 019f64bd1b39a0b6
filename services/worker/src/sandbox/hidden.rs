//! The farm's own files a build must not see, beyond the other workspaces (which the cover
//! hides): the directories and files in `FREEAGENT_SANDBOX_HIDE` (a data directory, a NATS
//! store, credentials) and the files of the worker's own NATS settings. The set-up script covers
//! each directory with an empty tmpfs and each file with `/dev/null`, before it puts the
//! workspace back, so a hidden directory may hold the work directory.

use freeagent_shared::config::ConfigError;
use std::path::PathBuf;

/// The variable operators list extra paths in, separated by `:` as in `PATH`.
pub(super) const VAR: &str = "FREEAGENT_SANDBOX_HIDE";

/// The worker's NATS files: its TLS key and certificates (and service credentials, if set).
const NATS_FILES: [&str; 4] = [
    "FREEAGENT_NATS_TLS_KEY",
    "FREEAGENT_NATS_TLS_CERT",
    "FREEAGENT_NATS_TLS_CA",
    "FREEAGENT_NATS_CREDS",
];

/// Every path to hide from builds, from the environment.
pub(super) fn from_env() -> Result<Vec<PathBuf>, ConfigError> {
    let listed = std::env::var(VAR).unwrap_or_default();
    let nats = NATS_FILES.iter().filter_map(|v| std::env::var(v).ok());
    parse(&listed, nats)
}

fn parse(
    listed: &str,
    nats_files: impl Iterator<Item = String>,
) -> Result<Vec<PathBuf>, ConfigError> {
    let mut out = Vec::new();
    for p in listed.split(':').filter(|p| !p.is_empty()) {
        let path = PathBuf::from(p);
        if !path.is_absolute() || path.parent().is_none() || p.contains('\n') {
            return Err(ConfigError::new(
                VAR,
                listed,
                "absolute paths other than / separated by ':' (directories or files builds must not see)",
            ));
        }
        out.push(path);
    }
    out.extend(
        nats_files
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && !p.to_string_lossy().contains([':', '\n'])),
    );
    out.sort();
    out.dedup();
    Ok(out)
}

/// How the set-up script receives them.
pub(super) fn joined(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_paths_must_be_absolute_and_never_the_root() {
        let none = std::iter::empty;
        assert_eq!(
            parse("/srv/farm:/etc/freeagent/key:", none()).unwrap(),
            [PathBuf::from("/etc/freeagent/key"), "/srv/farm".into()]
        );
        for bad in ["relative/dir", "/", "/srv:data"] {
            assert!(parse(bad, none()).is_err(), "{bad}");
        }
        let nats = parse(
            "",
            ["/etc/nats/key.pem".to_owned(), "rel.pem".to_owned()].into_iter(),
        );
        assert_eq!(nats.unwrap(), [PathBuf::from("/etc/nats/key.pem")]);
    }
}
