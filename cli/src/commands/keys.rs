//! `freeagent keys create|list|revoke`: API keys as a managed resource (needs an admin key).

use crate::client::Client;
use anyhow::{Context, anyhow};
use clap::Subcommand;
use freeagent_shared::api::{
    ApiScope, CreateKeyRequest, CreatedKey, KeyList, KeyRevoked, parse_expiry_from_now,
};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown once; the farm keeps only its hash).
    Create {
        /// A name for people (1 to 200 characters).
        #[arg(long)]
        name: String,
        /// A scope: submit, read, worker, register_workers or admin (repeat for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<ApiScope>,
        /// When the key stops working: a duration from now (30d, 12h) or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        /// For a key that registers workers: the only queues its workers may serve
        /// (comma-separated; default any).
        #[arg(long, value_delimiter = ',')]
        worker_queues: Option<Vec<String>>,
        /// For a key that registers workers: the most live workers at once (default any number).
        #[arg(long)]
        max_workers: Option<i32>,
        /// The team whose builds the key sees and acts on (made if new; default `default`).
        /// Admin keys see every team's builds.
        #[arg(long)]
        team: Option<freeagent_shared::team::TeamName>,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// List every key (never a secret).
    List {
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: it stops working at once on the gateway that answers, within seconds on
    /// the others.
    Revoke {
        id: String,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, command: KeysCommand) -> anyhow::Result<ExitCode> {
    client.require_key()?;
    match command {
        KeysCommand::Create {
            name,
            scopes,
            expires,
            worker_queues,
            max_workers,
            team,
            json,
        } => {
            let expires_at = expires
                .map(|e| parse_expiry_from_now(&e))
                .transpose()
                .map_err(|e| anyhow!("--expires: {e}"))?;
            let req = CreateKeyRequest {
                name,
                scopes,
                expires_at,
                worker_queues,
                max_workers,
                team,
            };
            let resp = client
                .send(client.http.post(client.url("/api/keys")).json(&req))
                .await?;
            let k: CreatedKey = resp.json().await.context("reading the created key")?;
            if json {
                println!("{}", serde_json::to_string(&k)?);
            } else {
                println!("{:>10}: {}", "id", k.id);
                println!("{:>10}: {}", "name", k.name);
                println!("{:>10}: {}", "scopes", scopes_text(&k.scopes));
                println!("{:>10}: {}", "team", k.team);
                println!(
                    "{:>10}: {}",
                    "expires",
                    time(k.expires_at.map(|t| t.to_rfc3339()), "never")
                );
                if let Some(q) = &k.worker_queues {
                    println!("{:>10}: {}", "queues", q.join(", "));
                }
                if let Some(n) = k.max_workers {
                    println!("{:>10}: {n}", "workers");
                }
                println!("{:>10}: {}", "key", k.key);
                eprintln!("Keep the key now: it is not shown again.");
            }
        }
        KeysCommand::List { json } => {
            let list: KeyList = client.get("/api/keys").await?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<36}  {:<20}  {:<30}  {:<16}  {:<20}  {:<20}  {:<20}",
                "ID", "NAME", "SCOPES", "TEAM", "EXPIRES", "LAST USED", "REVOKED"
            );
            for k in &list.keys {
                println!(
                    "{:<36}  {:<20}  {:<30}  {:<16}  {:<20}  {:<20}  {:<20}",
                    k.id,
                    k.name,
                    scopes_text(&k.scopes),
                    k.team.to_string(),
                    time(k.expires_at.map(|t| t.to_rfc3339()), "never"),
                    time(k.last_used_at.map(|t| t.to_rfc3339()), "-"),
                    time(k.revoked_at.map(|t| t.to_rfc3339()), "-"),
                );
            }
        }
        KeysCommand::Revoke { id, json } => {
            let resp = client
                .send(client.http.delete(client.url(&format!("/api/keys/{id}"))))
                .await?;
            let r: KeyRevoked = resp.json().await.context("reading the revocation")?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "revoked {} at {}",
                    r.id,
                    time(Some(r.revoked_at.to_rfc3339()), "-")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A time as `2026-11-30T12:34:56Z` (no fraction), or `none`.
fn time(rfc3339: Option<String>, none: &str) -> String {
    match rfc3339 {
        Some(t) => match t.get(..19) {
            Some(secs) => format!("{secs}Z"),
            None => t,
        },
        None => none.to_owned(),
    }
}

fn scopes_text(scopes: &[ApiScope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
