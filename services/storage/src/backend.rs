//! The object store behind the service, chosen by URL. Only typed `ObjectKey`s become paths.

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "cannot use {path} for objects: {reason}. Create it or point FREEAGENT_STORAGE_URL elsewhere"
    )]
    LocalDir { path: String, reason: String },
    #[error(
        "storage backend {0:?} is not supported by this build; use file:///path or a directory path"
    )]
    Unsupported(String),
}

/// A backend and a short description of it for `/health` (never credentials).
pub struct Backend {
    pub store: Arc<dyn ObjectStore>,
    pub kind: &'static str,
}

pub fn from_url(url: &str) -> Result<Backend, BackendError> {
    let path = match url.strip_prefix("file://") {
        Some(p) => p,
        None if url.contains("://") => return Err(BackendError::Unsupported(url.to_owned())),
        None => url,
    };
    std::fs::create_dir_all(path).map_err(|e| BackendError::LocalDir {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
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
