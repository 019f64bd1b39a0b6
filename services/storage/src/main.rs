//! `freeagent-storage`: configuration from the environment, then the app until SIGTERM.

use anyhow::Context;
use freeagent_storage::{App, StorageConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    freeagent_shared::exit::code(run().await)
}

async fn run() -> anyhow::Result<()> {
    freeagent_shared::telemetry::init("storage");
    let config = StorageConfig::from_env().context("storage configuration")?;
    let app = App::build(config).await?;
    app.run_until(freeagent_shared::shutdown::on_signal()).await
}
