//! The object store behind the service, chosen by URL: `file:///dir` (or a plain path), `s3://`,
//! `gs://` or `az://` with an optional key prefix. Cloud settings come from the usual `AWS_*`,
//! `GOOGLE_*` and `AZURE_*` variables, so MinIO, R2, Ceph and AWS all work. Only typed
//! `ObjectKey`s become paths.

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "cannot use {path} for objects: {reason}. Create it or point FREEAGENT_STORAGE_URL elsewhere"
    )]
    LocalDir { path: String, reason: String },
    #[error(
        "storage backend {0:?} is not supported; use file:///path, s3://bucket[/prefix], gs://bucket[/prefix] or az://container[/prefix]"
    )]
    Unsupported(String),
    #[error(
        "cannot configure the {scheme} backend: {source}. Check FREEAGENT_STORAGE_URL and the {scheme} settings (AWS_*, GOOGLE_*, AZURE_*)"
    )]
    Cloud {
        scheme: &'static str,
        #[source]
        source: object_store::Error,
    },
}

/// The default way to copy create-only on S3: see `from_url`.
const S3_COPY_IF_NOT_EXISTS: (&str, &str) = ("aws_copy_if_not_exists", "multipart");

/// How patient the service is with a cloud backend. Retries use exponential backoff and only
/// cover requests that are safe to repeat (object_store never replays a streamed body).
#[derive(Debug, Clone)]
pub struct BackendTuning {
    /// Per-request timeout.
    pub timeout: Duration,
    /// Gives up retrying a request after this long.
    pub retry_timeout: Duration,
    pub max_retries: usize,
    /// Extra `key=value` settings (e.g. `aws_endpoint`, `aws_allow_http`), on top of the
    /// environment; tests use them to aim at their own S3 server.
    pub options: Vec<(String, String)>,
}

impl Default for BackendTuning {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            retry_timeout: Duration::from_secs(60),
            max_retries: 5,
            options: Vec::new(),
        }
    }
}

/// A backend and a short description of it for `/health` (never credentials).
pub struct Backend {
    pub store: Arc<dyn ObjectStore>,
    pub kind: &'static str,
}

pub fn from_url(url: &str, tuning: &BackendTuning) -> Result<Backend, BackendError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return local(url);
    };
    if scheme == "file" {
        return local(rest);
    }
    // TLS for cloud backends is rustls with the ring provider; installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let root = format!("{scheme}://{container}");
    let mut options = cloud_options(tuning);
    if matches!(scheme, "s3" | "s3a") {
        // Results are published create-only (`upload.rs`): a large one with a conditional copy.
        // S3 has no copy-if-absent header; a multipart copy completed with `If-None-Match: *`
        // is one (AWS, MinIO). AWS_COPY_IF_NOT_EXISTS comes later and wins, for other stores
        // (R2: `header: cf-copy-destination-if-none-match: *`).
        options.insert(
            0,
            (
                S3_COPY_IF_NOT_EXISTS.0.into(),
                S3_COPY_IF_NOT_EXISTS.1.into(),
            ),
        );
    }
    let client = ClientOptions::new()
        .with_timeout(tuning.timeout)
        .with_connect_timeout(Duration::from_secs(5));
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: tuning.max_retries,
        retry_timeout: tuning.retry_timeout,
    };
    // The three builders share no trait; each takes the same client, retry and key=value options.
    macro_rules! cloud {
        ($builder:ty, $scheme:literal, $kind:literal) => {{
            let mut b = <$builder>::new()
                .with_client_options(client)
                .with_retry(retry);
            for (k, v) in &options {
                if let Ok(key) = k.parse() {
                    b = b.with_config(key, v);
                }
            }
            let store = b
                .with_url(root)
                .build()
                .map_err(|source| BackendError::Cloud {
                    scheme: $scheme,
                    source,
                })?;
            (Arc::new(store) as Arc<dyn ObjectStore>, $kind)
        }};
    }
    let (store, kind) = match scheme {
        "s3" | "s3a" => cloud!(AmazonS3Builder, "s3", "s3"),
        "gs" => cloud!(GoogleCloudStorageBuilder, "gs", "gcs"),
        "az" | "azure" | "abfs" => cloud!(MicrosoftAzureBuilder, "az", "azure"),
        _ => return Err(BackendError::Unsupported(url.to_owned())),
    };
    let prefix = prefix.trim_matches('/');
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    Ok(Backend { store, kind })
}

/// `AWS_*`, `GOOGLE_*` and `AZURE_*` variables as lower-case keys, then the explicit options
/// (which win because the builders apply them last).
fn cloud_options(tuning: &BackendTuning) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            ["AWS_", "GOOGLE_", "AZURE_"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    out.extend(tuning.options.iter().cloned());
    out
}

fn local(path: &str) -> Result<Backend, BackendError> {
    let dir_err = |e: std::io::Error| BackendError::LocalDir {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(path).map_err(dir_err)?;
    make_private(Path::new(path)).map_err(dir_err)?;
    let fs = LocalFileSystem::new_with_prefix(path)
        .map_err(|e| BackendError::LocalDir {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .with_automatic_cleanup(true);
    Ok(Backend {
        store: Arc::new(fs),
        kind: "local",
    })
}

/// Only the storage service may read the store: the root becomes 0700, which alone keeps every
/// other uid out. A store made by an older release (0755 directories, 0644 files) also has
/// what is inside tightened, in the background, so a later change to the root keeps it closed.
fn make_private(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root)?.permissions().mode() & 0o777;
    if mode == 0o700 {
        return Ok(());
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        let fixed = tighten(&root);
        tracing::info!(path = %root.display(), fixed, "the local store was readable by others: it is private now (directories 0700, files 0600)");
    });
    Ok(())
}

/// Removes group and other access below `dir`; the number of entries changed.
fn tighten(dir: &Path) -> u64 {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut fixed = 0;
    for e in entries.flatten() {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        let mode = meta.permissions().mode();
        if meta.is_dir() {
            fixed += tighten(&e.path());
        }
        if !meta.file_type().is_symlink() && mode & 0o077 != 0 {
            let private = std::fs::Permissions::from_mode(mode & 0o700);
            if std::fs::set_permissions(e.path(), private).is_ok() {
                fixed += 1;
            }
        }
    }
    fixed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_store_becomes_private_at_start() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let source = root.join("builds/b/source");
        std::fs::create_dir_all(source.parent().unwrap()).unwrap();
        std::fs::write(&source, "old").unwrap();
        let set = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        set(&root, 0o755).unwrap();
        set(&root.join("builds"), 0o755).unwrap();
        set(&source, 0o644).unwrap();
        make_private(&root).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        // The walk `make_private` started in the background, run here to its end.
        tighten(&root);
        assert_eq!(mode(&source), 0o600);
        assert_eq!(mode(&root.join("builds")), 0o700);
        assert_eq!(mode(&root.join("builds/b")), 0o700);
    }

    #[test]
    fn urls_pick_the_backend() {
        let t = BackendTuning {
            options: vec![
                ("aws_endpoint".into(), "http://127.0.0.1:9".into()),
                ("aws_allow_http".into(), "true".into()),
                ("aws_access_key_id".into(), "k".into()),
                ("aws_secret_access_key".into(), "s".into()),
                ("aws_region".into(), "us-east-1".into()),
            ],
            ..Default::default()
        };
        assert_eq!(
            from_url("s3://bucket/some/prefix", &t).map(|b| b.kind).ok(),
            Some("s3")
        );
        assert!(matches!(
            from_url("ftp://host/x", &t),
            Err(BackendError::Unsupported(_))
        ));
        let dir = std::env::temp_dir().join(format!("fa-backend-{}", std::process::id()));
        let local = from_url(&format!("file://{}", dir.display()), &t);
        assert_eq!(local.map(|b| b.kind).ok(), Some("local"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
