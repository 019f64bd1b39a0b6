//! `freeagent download`: streams to a temporary file beside the target, checks the SHA-256 the
//! gateway reports, then renames. A mismatch leaves nothing at the target.

use crate::client::Client;
use anyhow::{Context, bail};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::ExitCode;
use tokio::io::AsyncWriteExt;

pub async fn run(client: &Client, id: &str, kind: &str, output: &Path) -> anyhow::Result<ExitCode> {
    let resp = client
        .send(
            client
                .http
                .get(client.url(&format!("/api/builds/{id}/download/{kind}"))),
        )
        .await?;
    let expected = resp
        .headers()
        .get("x-checksum-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".freeagent-download-")
        .tempfile_in(dir)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen()?);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download was cut off")?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    let actual = hex::encode(hasher.finalize());
    if let Some(expected) = &expected
        && *expected != actual
    {
        bail!(
            "checksum mismatch: the gateway reported {expected}, the bytes hash to {actual}; nothing was saved"
        );
    }
    tmp.persist(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "saved {} ({size} bytes, sha256 {actual}{})",
        output.display(),
        if expected.is_some() { ", verified" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}
