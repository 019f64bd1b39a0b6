//! `freeagent logs -f <id>`: the build's log as it grows (server-sent events), until the build
//! ends; the exit status is the build's outcome. A dropped connection is resumed with
//! `Last-Event-ID`, so no line is lost or printed twice.

use crate::client::Client;
use freeagent_shared::api::LogEntry;
use futures::StreamExt;
use std::process::ExitCode;
use std::time::Duration;

/// What one event of the stream means to the follower.
enum Seen {
    Line(u64, String),
    End(String),
    Other,
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
            Ok(l) => Seen::Line(id, l.message),
            Err(_) => Seen::Other,
        },
        ("end", _) => Seen::End(
            serde_json::from_str::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| v["status"].as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
        _ => Seen::Other,
    }
}

pub async fn run(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let mut last: Option<u64> = None;
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
                let mut body = resp.bytes_stream();
                let mut buf = String::new();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        match event(&block) {
                            Seen::Line(n, message) => {
                                println!("{message}");
                                last = Some(n);
                            }
                            Seen::End(status) => {
                                return Ok(if status == "completed" {
                                    ExitCode::SUCCESS
                                } else {
                                    eprintln!("build {id} ended {status}");
                                    ExitCode::FAILURE
                                });
                            }
                            Seen::Other => {}
                        }
                    }
                }
                eprintln!("the log stream was cut; resuming");
            }
            Ok(resp) => eprintln!("the gateway answered {}; retrying", resp.status()),
            Err(e) => eprintln!("cannot reach the gateway ({e}); retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
