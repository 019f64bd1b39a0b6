//! The reference worker agent: registers with the gateway, takes builds from its queues'
//! JetStream consumers, claims each from the scheduler, runs the build command, streams logs,
//! uploads the artifact and reports the outcome.

pub mod agent;
pub mod artifact;
pub mod config;
pub mod executor;
pub mod job;
pub mod log_spool;
pub mod log_stream;
pub mod registration;
pub mod sandbox;
pub mod workspace;

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use config::WorkerConfig;

/// Registers, connects and runs until `stop`.
pub async fn run(config: WorkerConfig, stop: CancellationToken) -> anyhow::Result<()> {
    freeagent_shared::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let reg = registration::register(&http, &config).await?;
    let worker_id = reg.worker_id;
    tracing::info!(%worker_id, name = %config.name, queues = ?config.queues, nats_auth = reg.nats_jwt.is_some(), "worker registered");
    if !reg.approved {
        tracing::warn!(%worker_id, "awaiting approval: this worker takes no build until an operator runs `freeagent workers approve {worker_id}`");
    }
    let nats_jwt = Arc::new(std::sync::RwLock::new(
        reg.nats_jwt.clone().unwrap_or_default(),
    ));
    let refused = CancellationToken::new();
    let identity = match reg.nats_jwt {
        Some(_) => freeagent_shared::nats::Identity::Worker {
            jwt: nats_jwt.clone(),
            key: reg.nats_key.clone(),
            revoked: refused.clone(),
        },
        None => freeagent_shared::nats::Identity::Settings,
    };
    let nats = freeagent_shared::nats::connect(
        &config.nats,
        "freeagent-worker",
        identity,
        Some(freeagent_shared::subjects::inbox_prefix(worker_id)),
    )
    .await?;
    let agent = agent::Agent {
        scheduler: freeagent_shared::scheduler_client::SchedulerClient::new(nats.clone()),
        config: Arc::new(config),
        nats,
        http,
        worker_id,
        nats_jwt,
        // Awaiting approval: no pulls until a presence reply says it may.
        draining: Arc::new(std::sync::atomic::AtomicBool::new(!reg.approved)),
        can_pull: Arc::new(std::sync::atomic::AtomicBool::new(reg.approved)),
        running: Default::default(),
    };
    // A revoked registration, or NATS out of reach for long (credentials refused at reconnect
    // leave the client disconnected for good): stop, so a supervisor restarts and re-registers.
    tokio::spawn(watch_connection(agent.nats.clone(), refused.clone()));
    let agent_stop = stop.child_token();
    let run = tokio::spawn(agent.run(agent_stop.clone()));
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = refused.cancelled() => {
            // Said at once: stopping may wait for running builds to hand back.
            tracing::error!("NATS no longer accepts this worker; stopping");
            agent_stop.cancel()
        }
    }
    let _ = run.await;
    if refused.is_cancelled() {
        anyhow::bail!(
            "NATS no longer accepts this worker (its registration was revoked, or NATS was unreachable for {} s); restart the worker to register again",
            DISCONNECTED_LIMIT.as_secs()
        );
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// How long the worker stays disconnected from NATS before it gives up and exits.
const DISCONNECTED_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

async fn watch_connection(nats: async_nats::Client, refused: CancellationToken) {
    let mut since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = refused.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        if nats.connection_state() == async_nats::connection::State::Connected {
            since = None;
            continue;
        }
        let start = *since.get_or_insert_with(std::time::Instant::now);
        if start.elapsed() > DISCONNECTED_LIMIT {
            refused.cancel();
            return;
        }
    }
}
