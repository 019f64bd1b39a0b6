//! `freeagent logs -f <id>`, `freeagent watch <id>` and `freeagent submit --follow`: the build's
//! log as it grows (server-sent events), until the build ends; the exit status is the build's
//! outcome. A dropped connection is resumed with `Last-Event-ID`, so no line is lost or printed
//! twice; a gateway that cannot be reached is tried again with a growing pause (up to 30 s).
//! Lines are printed as the text log (`download --kind logs`) holds them; `watch` also shows
//! each status change (on standard error, so the log on standard output stays the log).
//! `--timeout` stops following after that long (exit 124); the build goes on.

use crate::client::Client;
use freeagent_shared::api::LogEntry;
use futures::StreamExt;
use std::process::ExitCode;
use std::time::Duration;

/// What one event of the stream means to the follower.
enum Seen {
    Line(u64, Box<LogEntry>),
    Status(String),
    End(String),
    Error(String),
    Other,
}

/// The `status` (or `error`) field of an event's data.
fn field(data: &str, name: &str) -> String {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v[name].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn event(block: &str) -> Seen {
    let (mut kind, mut id, mut data) = ("", None, String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    match (kind, id) {
        ("log", Some(id)) => match serde_json::from_str::<LogEntry>(&data) {
            Ok(l) => Seen::Line(id, Box::new(l)),
            Err(_) => Seen::Other,
        },
        ("status", _) => Seen::Status(field(&data, "status")),
        ("end", _) => Seen::End(field(&data, "status")),
        ("error", _) => Seen::Error(field(&data, "error")),
        _ => Seen::Other,
    }
}

/// Follows build `id` until it ends (or `timeout` passes); `show_status` also prints each
/// status change.
pub async fn run(
    client: &Client,
    id: &str,
    show_status: bool,
    timeout: Option<Duration>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let Some(limit) = timeout else {
        return follow(client, id, show_status, json).await;
    };
    match tokio::time::timeout(limit, follow(client, id, show_status, json)).await {
        Ok(r) => r,
        Err(_) => {
            eprintln!(
                "stopped following build {id} after {}: it has not ended (it goes on)",
                humantime::format_duration(limit)
            );
            Ok(ExitCode::from(crate::exit::TIMED_OUT))
        }
    }
}

/// Pauses between attempts to reach the gateway: from half a second, doubling, up to 30 s.
fn pauses() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .with_jitter()
        .build()
}

async fn follow(
    client: &Client,
    id: &str,
    show_status: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut last: Option<u64> = None;
    let mut pause = pauses();
    loop {
        let mut req = client
            .auth(
                client
                    .http
                    .get(client.url(&format!("/api/builds/{id}/logs?follow=true"))),
            )
            .header("accept", "text/event-stream");
        if let Some(n) = last {
            req = req.header("last-event-id", n.to_string());
        }
        match req.send().await {
            // A refusal (unknown build, wrong credential) will not get better by retrying.
            Ok(resp) if resp.status().is_client_error() => {
                let status = resp.status();
                anyhow::bail!("{status}: {}", resp.text().await.unwrap_or_default());
            }
            Ok(resp) if resp.status().is_success() => {
                // Reached: the next outage starts its pauses short again.
                pause = pauses();
                let mut body = resp.bytes_stream();
                let mut buf = String::new();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        match event(&block) {
                            Seen::Line(n, entry) => {
                                let mut out = std::io::stdout().lock();
                                if let Err(e) = out
                                    .write_all(super::status::line_of(&entry, json).as_bytes())
                                    .and_then(|()| out.flush())
                                {
                                    return crate::client::closed_pipe_is_the_end(e);
                                }
                                last = Some(n);
                            }
                            Seen::Status(status) if show_status => {
                                eprintln!("build {id}: {status}");
                                if status == "pending" {
                                    say_why_it_waits(client, id).await;
                                }
                            }
                            Seen::Error(why) => eprintln!("the gateway says: {why}"),
                            Seen::End(status) => {
                                if status != "completed" {
                                    eprintln!("build {id} ended {status}");
                                }
                                return Ok(match status.parse() {
                                    Ok(s) => crate::exit::for_build(s),
                                    Err(_) => ExitCode::from(crate::exit::FAILED),
                                });
                            }
                            Seen::Status(_) | Seen::Other => {}
                        }
                    }
                }
                eprintln!("the log stream was cut; resuming");
            }
            Ok(resp) => eprintln!("the gateway answered {}; retrying", resp.status()),
            Err(e) => eprintln!("cannot reach the gateway ({e}); retrying"),
        }
        tokio::time::sleep(pause.next().unwrap_or(Duration::from_secs(30))).await;
    }
}

/// For a pending build: where it waits and why, and when it should start (best effort: the
/// follow goes on whatever this read does).
async fn say_why_it_waits(client: &Client, id: &str) {
    let Ok(b) = client
        .get::<freeagent_shared::api::BuildDetail>(&format!("/api/builds/{id}"))
        .await
    else {
        return;
    };
    if let Some(w) = b.summary.waiting {
        let eta = w
            .eta_secs
            .map(|s| format!("; starts in {}", super::status::about(s)))
            .unwrap_or_default();
        eprintln!(
            "build {id}: waiting: {} (position {}){eta}",
            w.reason, w.position
        );
    }
}
