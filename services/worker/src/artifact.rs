//! The build's artifact: found in the output directory and streamed to the signed result URL.

use freeagent_shared::status::Platform;
use freeagent_shared::wire::StoredObject;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("the build produced no artifact: $FREEAGENT_OUTPUT_DIR is empty")]
    Missing,
    #[error("uploading the artifact failed: {0}")]
    Upload(String),
    #[error("reading the output directory failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The file to upload: the only regular file at the top of `out`, or, among several, the first
/// (by name) with the platform's extension, else the first by name.
pub fn find(out: &Path, platform: Platform) -> Result<PathBuf, ArtifactError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    files.sort();
    let ext = platform.artifact_extension();
    let preferred = files
        .iter()
        .find(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .cloned();
    preferred
        .or_else(|| files.into_iter().next())
        .ok_or(ArtifactError::Missing)
}

/// Streams the file to the PUT capability; storage answers with size, SHA-256 and a receipt.
pub async fn upload(
    http: &reqwest::Client,
    url: &str,
    path: &Path,
) -> Result<StoredObject, ArtifactError> {
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let resp = http
        .put(url)
        .header("content-length", len)
        .body(body)
        .send()
        .await
        // reqwest's errors name the URL, which carries a capability.
        .map_err(|e| ArtifactError::Upload(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(ArtifactError::Upload(format!(
            "storage answered {status}: {text}"
        )));
    }
    resp.json()
        .await
        .map_err(|e| ArtifactError::Upload(e.without_url().to_string()))
}
