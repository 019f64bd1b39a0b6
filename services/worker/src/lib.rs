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
    let credential = registration::register(&http, &config).await?;
    tracing::info!(worker_id = %credential.worker_id, name = %config.name, queues = ?config.queues, "worker registered");
    let nats = freeagent_shared::nats::connect(&config.nats_url, "freeagent-worker").await?;
    let agent = agent::Agent {
        scheduler: freeagent_shared::scheduler_client::SchedulerClient::new(nats.clone()),
        config: Arc::new(config),
        nats,
        http,
        credential: Arc::new(std::sync::RwLock::new(credential)),
        draining: Default::default(),
        running: Default::default(),
    };
    agent.run(stop).await;
    tracing::info!("worker stopped");
    Ok(())
}
