//! Registers the worker with the gateway over HTTP, retrying while the gateway starts. The
//! worker generates its NATS key here and sends only the public half; the farm answers with a
//! user JWT for it (when its NATS requires credentials). The seed never leaves this machine: with
//! `FREEAGENT_WORKER_IDENTITY_FILE` the worker keeps its id and key in that file (0600) and, at
//! its next start, registers again under the same id with a proof signed by the key
//! (`worker_identity`), so it keeps its approval.

use crate::config::WorkerConfig;
use backon::{ExponentialBuilder, Retryable};
use freeagent_shared::ids::WorkerId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
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

/// What a worker keeps across restarts.
#[derive(Serialize, Deserialize)]
struct Kept {
    worker_id: WorkerId,
    nats_seed: String,
}

/// The kept identity, if the file holds one (a file that does not parse is said and ignored).
fn load(path: &Path) -> Option<(WorkerId, nkeys::KeyPair)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the worker's identity file; registering as a new worker");
            return None;
        }
    };
    let kept = serde_json::from_str::<Kept>(&text)
        .ok()
        .and_then(|k| Some((k.worker_id, nkeys::KeyPair::from_seed(&k.nats_seed).ok()?)));
    if kept.is_none() {
        tracing::warn!(path = %path.display(), "the worker's identity file is not one this worker wrote; registering as a new worker");
    }
    kept
}

/// Writes the identity (0600, replaced whole), so the next start registers as this worker.
fn save(path: &Path, id: WorkerId, key: &nkeys::KeyPair) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let seed = key
        .seed()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let text = serde_json::to_string(&Kept {
        worker_id: id,
        nats_seed: seed,
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub async fn register(
    http: &reqwest::Client,
    c: &WorkerConfig,
) -> Result<Registration, RegisterError> {
    let kept = c.identity_file.as_deref().and_then(load);
    let reg = match kept {
        Some((id, key)) => match register_as(http, c, key, Some(id)).await {
            // The farm no longer knows this identity (unregistered, revoked, a new database).
            Err(RegisterError::Refused { status: 403, body }) => {
                tracing::warn!(worker_id = %id, reason = %body, "the farm refused this worker's kept identity; registering as a new worker");
                register_as(http, c, nkeys::KeyPair::new_user(), None).await?
            }
            other => other?,
        },
        None => register_as(http, c, nkeys::KeyPair::new_user(), None).await?,
    };
    if let Some(path) = &c.identity_file
        && let Err(e) = save(path, reg.worker_id, &reg.nats_key)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the worker's identity: its next start registers as a new worker");
    }
    Ok(reg)
}

/// One registration, with `key`; `again`: under that id, proved with the key.
async fn register_as(
    http: &reqwest::Client,
    c: &WorkerConfig,
    key: nkeys::KeyPair,
    again: Option<WorkerId>,
) -> Result<Registration, RegisterError> {
    let nats_key = std::sync::Arc::new(key);
    let url = format!(
        "{}/api/workers/register",
        c.gateway_url.trim_end_matches('/')
    );
    let mut body = json!({
        "name": c.name,
        "capabilities": {
            "platforms": c.platforms.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            "queues": c.queues.iter().map(|q| q.as_str()).collect::<Vec<_>>(),
            "max_concurrent_builds": c.max_concurrent,
        },
        "nats_public_key": nats_key.public_key(),
    });
    if let Some(id) = again {
        let at = chrono::Utc::now().timestamp();
        let sig = freeagent_shared::worker_identity::sign(&nats_key, id, at).map_err(|e| {
            RegisterError::Refused {
                status: 0,
                body: format!("cannot sign the identity proof: {e}"),
            }
        })?;
        body["id"] = json!(id);
        body["identity_proof"] = json!({"at": at, "sig": sig});
    }
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
