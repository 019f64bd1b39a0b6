//! `freeagent download`: streams to a temporary file beside the target, checks the SHA-256 the
//! gateway reports, then renames. A mismatch leaves nothing at the target. Without `-o` the file
//! is named as the gateway names it (`Content-Disposition`); an existing file is never
//! replaced unless `--force` says so.

use crate::client::Client;
use anyhow::{Context, bail};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::io::AsyncWriteExt;

pub struct DownloadOpts {
    pub kind: String,
    pub output: Option<PathBuf>,
    pub force: bool,
    pub json: bool,
}

/// The file name the gateway gives (`attachment; filename="…"`), if it is a plain name.
fn served_name(resp: &reqwest::Response) -> Option<String> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)?
        .to_str()
        .ok()?;
    let name = v.split("filename=").nth(1)?.trim().trim_matches('"');
    let plain = !name.is_empty()
        && !name.contains(['/', '\\'])
        && name != "."
        && name != ".."
        && !name.starts_with('.');
    plain.then(|| name.to_owned())
}

fn refuse_overwrite(output: &Path, force: bool) -> anyhow::Result<()> {
    if output.exists() && !force {
        return Err(crate::exit::Usage(format!(
            "{} exists: choose another name with -o, or replace it with --force",
            output.display()
        ))
        .into());
    }
    Ok(())
}

pub async fn run(client: &Client, id: &str, o: DownloadOpts) -> anyhow::Result<ExitCode> {
    let kind = o.kind.as_str();
    if let Some(out) = &o.output {
        refuse_overwrite(out, o.force)?;
    }
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
    let output = match o.output {
        Some(p) => p,
        None => {
            let p = PathBuf::from(served_name(&resp).unwrap_or_else(|| format!("{id}-{kind}")));
            refuse_overwrite(&p, o.force)?;
            p
        }
    };
    let output = output.as_path();
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
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "path": output.display().to_string(),
                "bytes": size,
                "sha256": actual,
                "verified": expected.is_some(),
            })
        );
    } else {
        println!(
            "saved {} ({size} bytes, sha256 {actual}{})",
            output.display(),
            if expected.is_some() { ", verified" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
