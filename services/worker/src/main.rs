//! `freeagent-worker`: configuration from the environment, then the agent until SIGTERM.

use anyhow::Context;
use freeagent_worker::WorkerConfig;

fn main() -> std::process::ExitCode {
    // A build's last step before its shell: no runtime, no threads, just the filter and exec.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args
        .first()
        .is_some_and(|a| a == freeagent_worker::sandbox::SECCOMP_EXEC_ARG)
    {
        return freeagent_worker::sandbox::seccomp_exec(&args);
    }
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => freeagent_shared::exit::code(rt.block_on(run())),
        Err(e) => {
            freeagent_shared::exit::code(Err(anyhow::anyhow!("cannot start the runtime: {e}")))
        }
    }
}

async fn run() -> anyhow::Result<()> {
    freeagent_shared::telemetry::init("worker");
    let config = WorkerConfig::from_env().context("worker configuration")?;
    freeagent_worker::run(config, freeagent_shared::shutdown::on_signal()).await
}
