//! `freeagent submit`: streams the archive (and certs) as multipart, then optionally waits.

use crate::archive;
use crate::client::Client;
use anyhow::Context;
use freeagent_shared::api::{BuildDetail, Submitted};
use freeagent_shared::status::BuildStatus;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

pub struct SubmitOpts {
    pub path: PathBuf,
    pub platform: String,
    pub certs: Option<PathBuf>,
    pub metadata: Option<String>,
    /// `key=value` entries, over `metadata`'s.
    pub meta: Vec<String>,
    /// Add the git branch and commit when the project is in a repository.
    pub git_meta: bool,
    pub show_token: bool,
    pub priority: Option<i32>,
    pub queue: Option<String>,
    pub wait: bool,
    /// Show the log live until the build ends.
    pub follow: bool,
    pub json: bool,
}

/// A file as a streamed form part, with a progress bar on a terminal (stderr).
async fn file_part(path: &Path, name: &str) -> anyhow::Result<Part> {
    use futures::StreamExt;
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().await?.len();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(name.to_owned());
    let stream = tokio_util::io::ReaderStream::new(file).map(move |chunk| {
        if let Ok(c) = &chunk {
            bar.inc(c.len() as u64);
            if bar.position() >= len {
                bar.finish_and_clear();
            }
        }
        chunk
    });
    let body = reqwest::Body::wrap_stream(stream);
    Ok(Part::stream_with_length(body, len)
        .file_name(name.to_owned())
        .mime_str("application/octet-stream")?)
}

/// The build's metadata: `--metadata`'s object, then each `--meta key=value`, then the git
/// branch and commit where none was given.
fn metadata(o: &SubmitOpts) -> anyhow::Result<Option<serde_json::Map<String, Value>>> {
    let mut map = match &o.metadata {
        None => serde_json::Map::new(),
        Some(m) => match serde_json::from_str::<Value>(m) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(crate::exit::Usage(
                    "--metadata must be a JSON object, such as '{\"branch\":\"main\"}'".into(),
                )
                .into());
            }
        },
    };
    for pair in &o.meta {
        let Some((k, v)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(crate::exit::Usage(format!("--meta takes key=value, not '{pair}'")).into());
        };
        map.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    if o.git_meta {
        let dir = if o.path.is_dir() {
            o.path.clone()
        } else {
            o.path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        for (key, args) in [
            ("git_branch", &["rev-parse", "--abbrev-ref", "HEAD"][..]),
            ("git_commit", &["rev-parse", "HEAD"][..]),
        ] {
            if map.contains_key(key) {
                continue;
            }
            if let Some(v) = git(&dir, args) {
                map.insert(key.to_owned(), Value::String(v));
            }
        }
    }
    Ok((!map.is_empty()).then_some(map))
}

/// One line of git's output in `dir`; None outside a repository or without git.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let line = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !line.is_empty()).then_some(line)
}

pub async fn run(client: &Client, o: SubmitOpts) -> anyhow::Result<ExitCode> {
    client.require_key()?;
    let metadata = metadata(&o)?;
    let packed;
    let (source, name) = if o.path.is_dir() {
        packed = archive::pack_dir(&o.path)
            .with_context(|| format!("cannot pack {}", o.path.display()))?;
        eprintln!(
            "packed {} files ({}) into {}; left out: .git and what .gitignore and {} list",
            packed.files,
            archive::human(packed.raw_bytes),
            archive::human(packed.packed_bytes),
            archive::IGNORE_FILE
        );
        (packed.file.path().to_path_buf(), "source.tar.gz".to_owned())
    } else {
        archive::check_archive(&o.path)?;
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
    if let Some(m) = metadata {
        form = form.text("metadata", Value::Object(m).to_string());
    }
    if let Some(p) = o.priority {
        form = form.text("priority", p.to_string());
    }
    if let Some(q) = o.queue.clone() {
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
        // Data on stdout (the id, and the token when asked), words on stderr.
        eprintln!("submitted build {id}");
        println!("{id}");
        if o.show_token {
            println!("{}", submitted.access_token);
        } else {
            eprintln!("(its build token is not shown: --show-token, or --json)");
        }
    }
    if o.follow {
        return super::follow::run(client, &id, true, None, false).await;
    }
    if !o.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut last = None;
    loop {
        let b: BuildDetail = client.get(&format!("/api/builds/{id}")).await?;
        let status = b.summary.status;
        if Some(status) != last && !o.json {
            eprintln!("{status}");
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
            eprintln!("error: {e}");
        }
        return Ok(crate::exit::for_build(status));
    }
}
