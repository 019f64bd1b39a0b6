//! `freeagent list`, `cancel` and `retry`: the builds of the farm, and a submitter's hands on one.

use crate::client::Client;
use anyhow::Context;
use freeagent_shared::api::{BuildSummary, Cancelled, Retried};
use std::process::ExitCode;

/// What `list` asks for (each maps to a query parameter of `GET /api/builds`).
pub struct ListArgs {
    pub status: Option<String>,
    pub platform: Option<String>,
    pub queue: Option<String>,
    pub worker: Option<String>,
    /// An admin key's choice of team (any other key lists its own team's builds).
    pub team: Option<String>,
    /// Only the builds the key submitted.
    pub mine: bool,
    pub limit: u32,
    /// From the previous page's "next page" line.
    pub cursor: Option<String>,
    pub json: bool,
}

/// What tells a build apart, from its metadata: `name  branch@commit` (the commit cut to 10).
pub fn what(b: &BuildSummary) -> String {
    let commit: Option<String> = b.commit.as_deref().map(|c| c.chars().take(10).collect());
    let at = match (b.branch.as_deref(), commit) {
        (Some(branch), Some(c)) => Some(format!("{branch}@{c}")),
        (Some(branch), None) => Some(branch.to_owned()),
        (None, Some(c)) => Some(format!("@{c}")),
        (None, None) => None,
    };
    let parts: Vec<String> = b.name.iter().cloned().chain(at).collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join("  ")
    }
}

pub async fn list(client: &Client, a: ListArgs) -> anyhow::Result<ExitCode> {
    let query: Vec<(&str, String)> = [
        ("status", a.status),
        ("platform", a.platform),
        ("queue", a.queue),
        ("worker_id", a.worker),
        ("team", a.team),
        ("mine", a.mine.then(|| "true".to_owned())),
        ("limit", Some(a.limit.to_string())),
        ("cursor", a.cursor),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let url = reqwest::Url::parse_with_params(&client.url("/api/builds"), &query)
        .context("the gateway URL")?;
    let resp = client.send(client.http.get(url)).await?;
    let total = resp
        .headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // `Link: </api/builds?…&cursor=C>; rel="next"`: the next page's cursor.
    let next = resp
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.split("cursor=").nth(1))
        .and_then(|c| c.split(['&', '>']).next())
        .map(str::to_owned);
    let builds: Vec<BuildSummary> = resp.json().await.context("reading the build list")?;
    if a.json {
        println!("{}", serde_json::to_string(&builds)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<10}  {:<8}  {:<12}  {:<12}  {:>7}  {:<25}  {:<12}  {:<12}  WHAT",
        "ID", "STATUS", "PLATFORM", "QUEUE", "TEAM", "ATTEMPT", "SUBMITTED", "WORKER", "BY"
    );
    for b in &builds {
        println!(
            "{:<36}  {:<10}  {:<8}  {:<12}  {:<12}  {:>7}  {:<25}  {:<12}  {:<12}  {}",
            b.id,
            b.status.to_string(),
            b.platform.to_string(),
            b.queue.to_string(),
            b.team.to_string(),
            b.attempt.get(),
            b.submitted_at.to_rfc3339(),
            b.worker_name.as_deref().unwrap_or("-"),
            b.submitted_by_name.as_deref().unwrap_or("-"),
            what(b)
        );
    }
    // Counts and paging go to stderr: stdout stays the table.
    if let Some(total) = total {
        eprintln!("{} of {total} builds", builds.len());
    }
    if let Some(next) = next {
        eprintln!("next page: --cursor {next}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let url = client.url(&format!("/api/builds/{id}/cancel"));
    let resp = client.send(client.http.post(url)).await?;
    let c: Cancelled = resp.json().await.context("reading the reply")?;
    if json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        println!("build {} is {}", c.id, c.status);
    }
    Ok(ExitCode::SUCCESS)
}

/// Retries a build; the new build's token is printed only with `--json` (it opens that build).
pub async fn retry(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let url = client.url(&format!("/api/builds/{id}/retry"));
    let resp = client.send(client.http.post(url)).await?;
    let r: Retried = resp.json().await.context("reading the reply")?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}", r.id);
        eprintln!("retried {} as {} ({})", r.original_build_id, r.id, r.status);
    }
    Ok(ExitCode::SUCCESS)
}
