//! `freeagent-worker`: configuration from the environment, then the agent until SIGTERM.

use anyhow::Context;
use freeagent_worker::WorkerConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    freeagent_shared::exit::code(run().await)
}

async fn run() -> anyhow::Result<()> {
    freeagent_shared::telemetry::init("worker");
    let config = WorkerConfig::from_env().context("worker configuration")?;
    freeagent_worker::run(config, freeagent_shared::shutdown::on_signal()).await
}
