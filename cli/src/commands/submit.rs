//! `freeagent submit`: streams the archive (and certs) as multipart, then optionally waits.

use crate::archive;
use crate::client::Client;
use anyhow::Context;
use freeagent_shared::api::{BuildDetail, Submitted};
use freeagent_shared::status::BuildStatus;
use reqwest::multipart::{Form, Part};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

pub struct SubmitOpts {
    pub path: PathBuf,
    pub platform: String,
    pub certs: Option<PathBuf>,
    pub metadata: Option<String>,
    pub priority: Option<i32>,
    pub queue: Option<String>,
    pub wait: bool,
    /// Show the log live until the build ends.
    pub follow: bool,
    pub json: bool,
}

async fn file_part(path: &Path, name: &str) -> anyhow::Result<Part> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().await?.len();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    Ok(Part::stream_with_length(body, len)
        .file_name(name.to_owned())
        .mime_str("application/octet-stream")?)
}

pub async fn run(client: &Client, o: SubmitOpts) -> anyhow::Result<ExitCode> {
    client.require_key()?;
    let packed;
    let (source, name) = if o.path.is_dir() {
        packed = archive::pack_dir(&o.path)
            .with_context(|| format!("cannot pack {}", o.path.display()))?;
        (packed.path().to_path_buf(), "source.tar.gz".to_owned())
    } else {
        let name = o
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "source".into());
        (o.path.clone(), name)
    };
    let mut form = Form::new()
        .text("platform", o.platform.clone())
        .part("source", file_part(&source, &name).await?);
    if let Some(c) = &o.certs {
        form = form.part("certs", file_part(c, "certs").await?);
    }
    if let Some(m) = o.metadata {
        form = form.text("metadata", m);
    }
    if let Some(p) = o.priority {
        form = form.text("priority", p.to_string());
    }
    if let Some(q) = o.queue {
        form = form.text("queue", q);
    }
    let resp = client
        .send(client.http.post(client.url("/api/builds")).multipart(form))
        .await?;
    let submitted: Submitted = resp.json().await?;
    let id = submitted.id.to_string();
    if o.json {
        println!("{}", serde_json::to_string(&submitted)?);
    } else {
        println!("submitted build {id}");
        println!("build token: {}", submitted.access_token);
    }
    if o.follow {
        return super::follow::run(client, &id, true).await;
    }
    if !o.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut last = None;
    loop {
        let b: BuildDetail = client.get(&format!("/api/builds/{id}")).await?;
        let status = b.summary.status;
        if Some(status) != last && !o.json {
            println!("{status}");
            last = Some(status);
        }
        if !status.is_terminal() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if o.json {
            println!("{}", serde_json::to_string(&b)?);
        } else if let Some(e) = &b.summary.error_message
            && status != BuildStatus::Completed
        {
            println!("error: {e}");
        }
        return Ok(crate::exit::for_build(status));
    }
}
