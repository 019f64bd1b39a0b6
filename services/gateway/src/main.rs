//! `freeagent-gateway`: configuration from the environment, then the app until SIGTERM.

use anyhow::Context;
use freeagent_gateway::{App, GatewayConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    freeagent_shared::exit::code(run().await)
}

async fn run() -> anyhow::Result<()> {
    freeagent_shared::telemetry::init("gateway");
    let config = GatewayConfig::from_env().context("gateway configuration")?;
    let app = App::build(config).await?;
    app.run_until(freeagent_shared::shutdown::on_signal()).await
}
