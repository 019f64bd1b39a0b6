//! `freeagent-storage`: configuration from the environment, then the app until SIGTERM.

use anyhow::Context;
use freeagent_storage::{App, StorageConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Errors at start-up are printed whole (cause chain included) and end the process with 1.
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    freeagent_shared::telemetry::init("storage");
    let config = StorageConfig::from_env().context("storage configuration")?;
    let app = App::build(config).await?;
    app.run_until(freeagent_shared::shutdown::on_signal()).await
}
