//! `freeagent download`: streams to `<target>.part` beside the target, checks the SHA-256 the
//! gateway reports, then renames. A mismatch leaves nothing. A download cut off leaves its
//! `.part`, and the next run resumes it (`Range`) instead of starting over. Without `-o` the
//! file is named as the gateway names it (`Content-Disposition`); an existing file is never
//! replaced unless `--force` says so. A progress bar shows on a terminal (stderr).

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

/// `<target>.part`: where a download grows until it is whole and checked.
fn part_of(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    output.with_file_name(name)
}

pub async fn run(client: &Client, id: &str, o: DownloadOpts) -> anyhow::Result<ExitCode> {
    let kind = o.kind.as_str();
    if let Some(out) = &o.output {
        refuse_overwrite(out, o.force)?;
    }
    let url = client.url(&format!("/api/builds/{id}/download/{kind}"));
    let from = |offset: u64| {
        let req = client.http.get(&url);
        if offset > 0 {
            req.header(reqwest::header::RANGE, format!("bytes={offset}-"))
        } else {
            req
        }
    };
    let known = o.output.as_deref().map(part_of);
    let have = |p: &Option<PathBuf>| {
        p.as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    };
    let mut resp = match client.send(from(have(&known))).await {
        Ok(r) => r,
        // The part is not a prefix of this file (416): start over.
        Err(_) if have(&known) > 0 => client.send(from(0)).await?,
        Err(e) => return Err(e),
    };
    let output = match o.output {
        Some(p) => p,
        None => {
            let p = PathBuf::from(served_name(&resp).unwrap_or_else(|| format!("{id}-{kind}")));
            refuse_overwrite(&p, o.force)?;
            p
        }
    };
    let output = output.as_path();
    let part = part_of(output);
    // Named only by the reply: a part of that name is resumed with a second request.
    let mut offset = have(&Some(part.clone()));
    if known.is_none() && offset > 0 {
        resp = match client.send(from(offset)).await {
            Ok(r) => r,
            // The part is not a prefix of this file (416): start over.
            Err(_) => {
                offset = 0;
                client.send(from(0)).await?
            }
        };
    }
    if resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        offset = 0;
    }
    let expected = resp
        .headers()
        .get("x-checksum-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut hasher = Sha256::new();
    if offset > 0 {
        // What is there already counts towards the checksum.
        let mut f = std::fs::File::open(&part)?;
        std::io::copy(&mut f, &mut hasher)?;
        eprintln!("resuming {} at {offset} bytes", output.display());
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(offset > 0)
        .truncate(offset == 0)
        .open(&part)
        .await
        .with_context(|| format!("cannot write {}", part.display()))?;
    let total = resp.content_length().map(|n| n + offset);
    let bar =
        indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_position(offset);
    let mut size = offset;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download was cut off; run the same command to resume it")?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await?;
        bar.inc(chunk.len() as u64);
    }
    file.flush().await?;
    drop(file);
    bar.finish_and_clear();
    let actual = hex::encode(hasher.finalize());
    if let Some(expected) = &expected
        && *expected != actual
    {
        let _ = std::fs::remove_file(&part);
        bail!(
            "checksum mismatch: the gateway reported {expected}, the bytes hash to {actual}; nothing was saved"
        );
    }
    std::fs::rename(&part, output).with_context(|| format!("cannot write {}", output.display()))?;
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
