//! The farm's own files a build must not see, beyond the other workspaces (which the cover
//! hides): the directories and files in `FREEAGENT_SANDBOX_HIDE` (a data directory, a NATS
//! store, credentials), the files of the worker's own NATS settings, and its identity file (the
//! seed of its NATS key). The set-up script covers
//! each directory with an empty tmpfs and each file with `/dev/null`, before it puts the
//! workspace back, so a hidden directory may hold the work directory.

use freeagent_shared::config::ConfigError;
use std::path::PathBuf;

/// The variable operators list extra paths in, separated by `:` as in `PATH`.
pub(super) const VAR: &str = "FREEAGENT_SANDBOX_HIDE";

/// The worker's own secret files: its NATS TLS key and certificates (and service credentials,
/// if set), and its identity file (wherever it lies: a `userns` build runs as the worker's own
/// uid and could read it).
const WORKER_FILES: [&str; 5] = [
    "FREEAGENT_NATS_TLS_KEY",
    "FREEAGENT_NATS_TLS_CERT",
    "FREEAGENT_NATS_TLS_CA",
    "FREEAGENT_NATS_CREDS",
    "FREEAGENT_WORKER_IDENTITY_FILE",
];

/// Every path to hide from builds, from the environment (a relative file path is taken from
/// the worker's working directory, as the worker opens it).
pub(super) fn from_env() -> Result<Vec<PathBuf>, ConfigError> {
    from_vars(|v| std::env::var(v).ok())
}

fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Vec<PathBuf>, ConfigError> {
    let listed = var(VAR).unwrap_or_default();
    let files = WORKER_FILES
        .iter()
        .filter_map(|v| var(v))
        .filter_map(|p| std::path::absolute(p).ok())
        .map(|p| p.to_string_lossy().into_owned());
    parse(&listed, files)
}

fn parse(
    listed: &str,
    worker_files: impl Iterator<Item = String>,
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
        worker_files
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
    fn the_workers_identity_file_is_hidden_wherever_it_lies() {
        let vars = |v: &str| match v {
            "FREEAGENT_WORKER_IDENTITY_FILE" => Some("/etc/freeagent/identity".to_owned()),
            "FREEAGENT_NATS_TLS_KEY" => Some("/etc/freeagent/nats.key".to_owned()),
            _ => None,
        };
        let hidden = from_vars(vars).unwrap();
        assert!(
            hidden.contains(&PathBuf::from("/etc/freeagent/identity")),
            "{hidden:?}"
        );
        assert!(
            hidden.contains(&PathBuf::from("/etc/freeagent/nats.key")),
            "{hidden:?}"
        );
        // A relative path is the worker's, from its working directory.
        let relative = from_vars(|v| {
            (v == "FREEAGENT_WORKER_IDENTITY_FILE").then(|| "identity.json".to_owned())
        })
        .unwrap();
        assert!(
            relative
                .iter()
                .all(|p| p.is_absolute() && p.ends_with("identity.json")),
            "{relative:?}"
        );
    }

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
