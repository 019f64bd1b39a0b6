//! `freeagent status` and `freeagent logs`.

use crate::client::Client;
use std::process::ExitCode;

pub async fn run(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let b = client.get_json(&format!("/api/builds/{id}")).await?;
    if json {
        println!("{b}");
        return Ok(ExitCode::SUCCESS);
    }
    let field = |k: &str| match &b[k] {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    for k in [
        "id",
        "status",
        "platform",
        "queue",
        "attempt",
        "worker_name",
        "submitted_at",
        "started_at",
        "completed_at",
        "duration_ms",
        "error_message",
    ] {
        println!("{k:>14}: {}", field(k));
    }
    if let Some(arts) = b["artifacts"].as_array() {
        for a in arts {
            println!(
                "{:>14}: {} ({} bytes, sha256 {})",
                "artifact",
                a["name"].as_str().unwrap_or("-"),
                a["size"],
                a["sha256"].as_str().unwrap_or("-")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let mut after = 0u64;
    loop {
        let page = client
            .get_json(&format!("/api/builds/{id}/logs?after={after}&limit=10000"))
            .await?;
        let lines = page["logs"].as_array().cloned().unwrap_or_default();
        if lines.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        for l in &lines {
            println!("{}", l["message"].as_str().unwrap_or_default());
        }
        after = page["next_after"].as_u64().unwrap_or(after);
    }
}
