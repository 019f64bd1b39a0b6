//! `freeagent-storage`: configuration from the environment, then the app until SIGTERM.

use anyhow::Context;
use freeagent_storage::{App, StorageConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    freeagent_shared::exit::code(run().await)
}

async fn run() -> anyhow::Result<()> {
    // Objects on local disk are the farm's alone: files 0600, directories 0700 (a build on the
    // same machine, under another uid, must not read another build's source or results).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    freeagent_shared::telemetry::init("storage");
    let config = StorageConfig::from_env().context("storage configuration")?;
    let app = App::build(config).await?;
    app.run_until(freeagent_shared::shutdown::on_signal()).await
}
