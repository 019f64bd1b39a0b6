//! `freeagent workers list|approve|drain|undrain`: the worker registry and an operator's hands
//! on it (listing needs a `read` key, the rest an admin key).

use crate::client::Client;
use anyhow::Context;
use clap::Subcommand;
use freeagent_shared::api::{Approved, Drained, WorkerList};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum WorkersCommand {
    /// List every worker: status, queues, the builds it holds, and whether it awaits approval.
    List {
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Let a worker awaiting approval (FREEAGENT_WORKER_APPROVAL=required) take builds.
    Approve {
        id: String,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Give a worker no new build; the builds it runs finish.
    Drain {
        id: String,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// A draining worker takes new builds again.
    Undrain {
        id: String,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, command: WorkersCommand) -> anyhow::Result<ExitCode> {
    client.require_key()?;
    match command {
        WorkersCommand::List { json } => {
            let list: WorkerList = client.get("/api/workers").await?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<36}  {:<20}  {:<18}  {:<20}  {:>6}",
                "ID", "NAME", "STATUS", "QUEUES", "BUILDS"
            );
            for w in &list.workers {
                let status = if w.approved {
                    w.status.to_string()
                } else {
                    format!("{} (unapproved)", w.status)
                };
                println!(
                    "{:<36}  {:<20}  {:<18}  {:<20}  {:>6}",
                    w.id,
                    w.name,
                    status,
                    w.queues.join(","),
                    w.builds.len()
                );
            }
        }
        WorkersCommand::Approve { id, json } => {
            let resp = client
                .send(
                    client
                        .http
                        .post(client.url(&format!("/api/workers/{id}/approve"))),
                )
                .await?;
            let a: Approved = resp.json().await.context("reading the approval")?;
            if json {
                println!("{}", serde_json::to_string(&a)?);
            } else {
                println!(
                    "worker {} approved at {}: it takes builds from its next presence report",
                    a.id,
                    a.approved_at.to_rfc3339()
                );
            }
        }
        WorkersCommand::Drain { id, json } => change(client, &id, "drain", json).await?,
        WorkersCommand::Undrain { id, json } => change(client, &id, "undrain", json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Drains or undrains a worker.
async fn change(client: &Client, id: &str, action: &str, json: bool) -> anyhow::Result<()> {
    let url = client.url(&format!("/api/workers/{id}/{action}"));
    let resp = client.send(client.http.post(url)).await?;
    let d: Drained = resp.json().await.context("reading the reply")?;
    if json {
        println!("{}", serde_json::to_string(&d)?);
    } else {
        println!("worker {} is {}", d.id, d.status);
    }
    Ok(())
}
