//! `freeagent doctor`: is this machine set up to use the farm? Checks, in order, that the
//! gateway answers, that the farm is ready, that this machine's clock agrees with the
//! gateway's, that the credential works, and that the CLI and the gateway are the same release;
//! each line says what to do when a check fails. Exit status: 0 when all pass, else the
//! first failure's kind (5: the farm, 4: the credential, 1: anything else).

use crate::client::Client;
use crate::exit;
use freeagent_shared::api::Health;
use serde_json::{Value, json};
use std::process::ExitCode;

/// Skew past which capabilities and identity proofs (valid ±5 minutes) start to fail.
const CLOCK_WARN_SECS: i64 = 60;

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    hint: Option<String>,
    /// The exit code when this check fails.
    code: u8,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            ok: true,
            detail: detail.into(),
            hint: None,
            code: 0,
        }
    }

    fn fail(name: &'static str, code: u8, detail: impl Into<String>, hint: &str) -> Self {
        Check {
            name,
            ok: false,
            detail: detail.into(),
            hint: Some(hint.into()),
            code,
        }
    }
}

pub async fn run(
    client: &Client,
    has_key: bool,
    has_token: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let checks = checks(client, has_key, has_token).await;
    if json_out {
        let list: Vec<Value> = checks
            .iter()
            .map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail, "hint": c.hint}))
            .collect();
        println!(
            "{}",
            json!({"ok": checks.iter().all(|c| c.ok), "checks": list})
        );
    } else {
        for c in &checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            println!("{mark} {:<12} {}", c.name, c.detail);
            if let Some(h) = &c.hint {
                println!("     {:<12} → {h}", "");
            }
        }
    }
    Ok(match checks.iter().find(|c| !c.ok) {
        None => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.code),
    })
}

async fn checks(client: &Client, has_key: bool, has_token: bool) -> Vec<Check> {
    let mut out = Vec::new();
    // 1. The gateway answers (and its Date header gives its clock).
    let live = match client.http.get(client.url("/healthz")).send().await {
        Ok(r) if r.status().is_success() => {
            out.push(Check::pass("gateway", format!("{} answers", client.base)));
            r
        }
        Ok(r) => {
            out.push(Check::fail(
                "gateway",
                exit::INFRASTRUCTURE,
                format!("{} answered {} to /healthz", client.base, r.status()),
                "is this the gateway's address? (--gateway, FREEAGENT_GATEWAY_URL)",
            ));
            return out;
        }
        Err(e) => {
            out.push(Check::fail(
                "gateway",
                exit::INFRASTRUCTURE,
                format!("cannot reach {}: {}", client.base, e.without_url()),
                "start the farm (`freeagent dev`) or point --gateway / FREEAGENT_GATEWAY_URL at it",
            ));
            return out;
        }
    };
    // 2. The farm is ready: Postgres, NATS and storage answer the gateway.
    match client.http.get(client.url("/readyz")).send().await {
        Ok(r) if r.status().is_success() => {
            out.push(Check::pass("ready", "Postgres, NATS and storage answer"))
        }
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            out.push(Check::fail(
                "ready",
                exit::INFRASTRUCTURE,
                format!("not ready ({status}): {}", body.trim()),
                "the farm is starting or a dependency is down: see the gateway's log",
            ));
        }
        Err(e) => out.push(Check::fail(
            "ready",
            exit::INFRASTRUCTURE,
            e.without_url().to_string(),
            "see the gateway's log",
        )),
    }
    // 3. The clock.
    let server_time = live
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok());
    match server_time {
        Some(t) => {
            let skew = chrono::Utc::now().timestamp() - t.timestamp();
            let detail = match skew {
                0 => "agrees with the gateway's".to_owned(),
                s if s > 0 => format!("{s} s ahead of the gateway's"),
                s => format!("{} s behind the gateway's", -s),
            };
            if skew.abs() > CLOCK_WARN_SECS {
                out.push(Check::fail(
                    "clock",
                    exit::FAILED,
                    detail,
                    "sync this machine's clock (NTP): signed URLs and worker identity proofs allow 5 minutes",
                ));
            } else {
                out.push(Check::pass("clock", detail));
            }
        }
        None => out.push(Check::pass(
            "clock",
            "the gateway sent no Date header: not checked",
        )),
    }
    // 4. The credential.
    if has_key {
        match client
            .send(client.http.get(client.url("/api/builds?limit=1")))
            .await
        {
            Ok(_) => out.push(Check::pass(
                "credentials",
                "the API key is accepted and may read builds",
            )),
            Err(e) => {
                let (code, _) = exit::classify(&e);
                let hint = if code == exit::AUTH {
                    "the key was refused: check FREEAGENT_API_KEY (revoked, expired or mistyped?), or ask an admin for a key with the read scope"
                } else {
                    "see the gateway's log"
                };
                out.push(Check::fail("credentials", code, e.to_string(), hint));
            }
        }
    } else if has_token {
        out.push(Check::pass(
            "credentials",
            "a build token: it opens its one build (not checked here)",
        ));
    } else {
        out.push(Check::fail(
            "credentials",
            exit::AUTH,
            "no API key",
            "pass --api-key or set FREEAGENT_API_KEY (`freeagent dev` prints one)",
        ));
    }
    // 5. The releases.
    let cli = env!("CARGO_PKG_VERSION");
    match client.get::<Health>("/health").await {
        Ok(h) if h.version.is_empty() => out.push(Check::pass(
            "version",
            format!("CLI {cli}; the gateway predates version reporting"),
        )),
        Ok(h) if h.version == cli => {
            out.push(Check::pass("version", format!("CLI and gateway {cli}")))
        }
        Ok(h) => out.push(Check::fail(
            "version",
            exit::FAILED,
            format!("CLI {cli}, gateway {}", h.version),
            "use the CLI of the farm's release",
        )),
        Err(e) => out.push(Check::fail(
            "version",
            exit::INFRASTRUCTURE,
            e.to_string(),
            "see the gateway's log",
        )),
    }
    out
}
