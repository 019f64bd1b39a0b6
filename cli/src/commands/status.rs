//! `freeagent status`, `freeagent queue` and `freeagent logs`.

use crate::client::Client;
use freeagent_shared::api::{BuildDetail, LogPage};
use std::io::Write;
use std::process::ExitCode;

pub async fn run(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", client.get_json(&format!("/api/builds/{id}")).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let b: BuildDetail = client.get(&format!("/api/builds/{id}")).await?;
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows = [
        ("id", b.summary.id.to_string()),
        ("what", super::builds::what(&b.summary)),
        ("submitted_by", or_dash(b.summary.submitted_by_name.clone())),
        ("status", b.summary.status.to_string()),
        ("platform", b.summary.platform.to_string()),
        ("queue", b.summary.queue.to_string()),
        ("attempt", b.summary.attempt.get().to_string()),
        ("worker_name", or_dash(b.summary.worker_name.clone())),
        ("submitted_at", b.summary.submitted_at.to_rfc3339()),
        (
            "started_at",
            or_dash(b.summary.started_at.map(|t| t.to_rfc3339())),
        ),
        (
            "completed_at",
            or_dash(b.summary.completed_at.map(|t| t.to_rfc3339())),
        ),
        (
            "duration_ms",
            or_dash(b.summary.duration_ms.map(|d| d.to_string())),
        ),
        ("error_message", or_dash(b.summary.error_message.clone())),
    ];
    for (k, v) in rows {
        println!("{k:>14}: {v}");
    }
    if let Some(w) = &b.summary.waiting {
        println!("{:>14}: {} (position {})", "waiting", w.reason, w.position);
        if let Some(eta) = w.eta_secs {
            println!("{:>14}: {}", "starts in", about(eta));
        }
    }
    for a in &b.artifacts {
        println!(
            "{:>14}: {} ({} bytes, sha256 {})",
            "artifact", a.name, a.size, a.sha256
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `freeagent queue`: each queue's pending builds and live workers (`GET /health`).
pub async fn queues(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let h: freeagent_shared::api::Health = client.get("/health").await?;
    if json {
        println!("{}", serde_json::to_string(&h.queues)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<20} {:>8} {:>13}", "QUEUE", "PENDING", "LIVE WORKERS");
    for q in &h.queues {
        println!("{:<20} {:>8} {:>13}", q.queue, q.depth, q.live_workers);
    }
    Ok(ExitCode::SUCCESS)
}

/// `json`: one JSON object per line instead of the text log's lines.
pub async fn logs(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut after = 0u64;
    loop {
        let page: LogPage = client
            .get(&format!("/api/builds/{id}/logs?after={after}&limit=10000"))
            .await?;
        if page.logs.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        let mut out = std::io::stdout().lock();
        for l in &page.logs {
            if let Err(e) = out.write_all(line_of(l, json).as_bytes()) {
                return crate::client::closed_pipe_is_the_end(e);
            }
        }
        after = page.next_after;
    }
}

/// A log entry as printed: the text log's line, or a JSON object on a line of its own.
pub fn line_of(l: &freeagent_shared::api::LogEntry, json: bool) -> String {
    if json {
        let mut s = serde_json::to_string(l).unwrap_or_default();
        s.push('\n');
        s
    } else {
        l.text_line()
    }
}

/// A guessed wait in words: "about 3 min".
pub fn about(secs: i64) -> String {
    match secs {
        0 => "moments (a slot is free)".to_owned(),
        s if s < 90 => format!("about {s} s"),
        s if s < 5400 => format!("about {} min", (s + 30) / 60),
        s => format!("about {:.1} h", s as f64 / 3600.0),
    }
}
