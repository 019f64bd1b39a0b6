//! The reference worker agent: registers with the gateway, takes builds from its queues'
//! JetStream consumers, claims each from the scheduler, runs the build command, streams logs,
//! uploads the artifact and reports the outcome.

pub mod agent;
pub mod artifact;
pub mod config;
pub mod executor;
pub mod job;
pub mod log_stream;
pub mod registration;
pub mod workspace;

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use config::WorkerConfig;

/// Registers, connects and runs until `stop`.
pub async fn run(config: WorkerConfig, stop: CancellationToken) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let reg = registration::register(&http, &config).await?;
    let worker_id = reg.worker_id;
    tracing::info!(%worker_id, name = %config.name, queues = ?config.queues, nats_auth = reg.nats_jwt.is_some(), "worker registered");
    let nats_jwt = Arc::new(std::sync::RwLock::new(
        reg.nats_jwt.clone().unwrap_or_default(),
    ));
    let identity = match reg.nats_jwt {
        Some(_) => freeagent_shared::nats::Identity::Worker {
            jwt: nats_jwt.clone(),
            key: reg.nats_key.clone(),
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
        draining: Default::default(),
        running: Default::default(),
    };
    agent.run(stop).await;
    tracing::info!("worker stopped");
    Ok(())
}
