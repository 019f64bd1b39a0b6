//! The build's artifact: found in the output directory and streamed to the signed result URL.

use freeagent_shared::status::Platform;
use freeagent_shared::wire::StoredObject;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("the build produced no artifact: $FREEAGENT_OUTPUT_DIR is empty")]
    Missing,
    #[error("uploading the artifact failed: {reason}")]
    Upload {
        reason: String,
        /// Storage away for a moment (no connection, 502–504): worth another try.
        transient: bool,
    },
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

/// Uploads the artifact, trying again for up to a minute while storage is away (a restart, a
/// network blip): failing there would fail a build that succeeded. `url` gives the newest result
/// URL at each try (heartbeats renew it). Refusals (4xx) are final.
pub async fn upload_with_retries(
    http: &reqwest::Client,
    url: impl Fn() -> String,
    path: &Path,
) -> Result<StoredObject, ArtifactError> {
    use backon::{ExponentialBuilder, Retryable};
    let policy = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_total_delay(Some(std::time::Duration::from_secs(60)))
        .without_max_times()
        .with_jitter();
    (|| {
        let url = url();
        async move { upload(http, &url, path).await }
    })
    .retry(policy)
    .when(|e| matches!(e, ArtifactError::Upload { transient: true, .. }))
    .notify(|e, d| tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "artifact upload failed; retrying"))
    .await
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
        .map_err(|e| ArtifactError::Upload {
            reason: e.without_url().to_string(),
            transient: true,
        })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(ArtifactError::Upload {
            reason: format!("storage answered {status}: {text}"),
            transient: matches!(status.as_u16(), 502..=504),
        });
    }
    resp.json().await.map_err(|e| ArtifactError::Upload {
        reason: e.without_url().to_string(),
        transient: false,
    })
}
