//! Registers the worker with the gateway over HTTP, retrying while the gateway starts. The
//! worker generates its NATS key here and sends only the public half; the farm answers with a
//! user JWT for it (when its NATS requires credentials). The seed never leaves this process.

use crate::config::WorkerConfig;
use backon::{ExponentialBuilder, Retryable};
use freeagent_shared::ids::WorkerId;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("cannot reach the gateway at {url}: {reason}. Start it or set FREEAGENT_GATEWAY_URL")]
    Unreachable { url: String, reason: String },
    #[error(
        "the gateway refused registration ({status}): {body}. Check FREEAGENT_API_KEY and its worker scope"
    )]
    Refused { status: u16, body: String },
}

#[derive(Deserialize)]
struct Registered {
    id: WorkerId,
    #[serde(default)]
    nats_jwt: Option<String>,
    /// Absent from gateways before approval existed: approved.
    #[serde(default = "approved")]
    approved: bool,
}

fn approved() -> bool {
    true
}

/// Who this worker is: its id, its NATS key and (on a farm with NATS auth) the JWT for it.
pub struct Registration {
    pub worker_id: WorkerId,
    pub nats_key: std::sync::Arc<nkeys::KeyPair>,
    pub nats_jwt: Option<String>,
    /// `false`: it takes no build until an operator approves it (its presence replies say when).
    pub approved: bool,
}

pub async fn register(
    http: &reqwest::Client,
    c: &WorkerConfig,
) -> Result<Registration, RegisterError> {
    let nats_key = std::sync::Arc::new(nkeys::KeyPair::new_user());
    let url = format!(
        "{}/api/workers/register",
        c.gateway_url.trim_end_matches('/')
    );
    let body = json!({
        "name": c.name,
        "capabilities": {
            "platforms": c.platforms.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            "queues": c.queues.iter().map(|q| q.as_str()).collect::<Vec<_>>(),
            "max_concurrent_builds": c.max_concurrent,
        },
        "nats_public_key": nats_key.public_key(),
    });
    let attempt = || async {
        let resp = http
            .post(&url)
            .header("x-api-key", &c.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| RegisterError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(RegisterError::Refused {
                status,
                body: resp.text().await.unwrap_or_default(),
            });
        }
        let r: Registered = resp.json().await.map_err(|e| RegisterError::Refused {
            status,
            body: e.to_string(),
        })?;
        Ok(Registration {
            worker_id: r.id,
            nats_key: nats_key.clone(),
            nats_jwt: r.nats_jwt,
            approved: r.approved,
        })
    };
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_total_delay(Some(Duration::from_secs(60)))
        // Without this the builder gives up after 3 tries, whatever the total.
        .without_max_times()
        .with_jitter();
    attempt
        .retry(policy)
        .when(|e| matches!(e, RegisterError::Unreachable { .. } | RegisterError::Refused { status: 502..=504, .. }))
        .notify(|e, d| tracing::info!(error = %e, retry_in_ms = d.as_millis() as u64, "waiting for the gateway"))
        .await
}
