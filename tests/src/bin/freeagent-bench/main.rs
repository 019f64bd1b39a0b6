//! `freeagent-bench`: benchmarks that start a real farm (the release binaries next to this one,
//! Postgres, NATS, storage) and print each figure with its unit, the machine and the parameters,
//! then one JSON line for tools. Not a test: nothing here asserts a timing.
//!
//! `cargo build --release --workspace && target/release/freeagent-bench <scenario>`; the
//! scenarios are `storage`, `throughput`, `latency`, `submit`, `fleet`, `recovery`, `legacy`, `health`, `follow` and
//! `log-gate`.

mod cpu;
mod follow;
mod health;
mod legacy;
mod log_gate;
mod machine;
mod scenarios;
mod sim;
mod storage;
mod throughput;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Free Agent benchmarks against real binaries")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Upload and download throughput through the gateway against the raw disk, and peak
    /// resident memory of storage and gateway under concurrent uploads.
    Storage(storage::Args),
    /// No-op builds through dispatch, claim and complete, against the bare SQL rate.
    Throughput(throughput::Args),
    /// Time from submit reply to a granted claim, at fixed submission rates.
    Latency(scenarios::LatencyArgs),
    /// HTTP submissions per second.
    Submit(scenarios::SubmitArgs),
    /// What idle workers cost, and the first build into a large idle fleet.
    Fleet(scenarios::FleetArgs),
    /// A scheduler killed with a backlog, then restarted.
    Recovery(scenarios::RecoveryArgs),
    /// `/health` with a long history (300,000 builds), alone and under a crowd.
    Health(health::Args),
    /// Legacy HTTP workers (API key + worker_id, poll without wait): rounds of many workers
    /// polling for fewer builds, then builds/s of a small fleet.
    Legacy(legacy::Args),
    /// Live logs: many SSE followers of builds writing steadily; delay and gateway cost.
    Follow(follow::Args),
    /// A worker's log lines through the scheduler's log gate: lines/s by batch size.
    LogGate(log_gate::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let out = match cli.scenario {
        Scenario::Storage(a) => storage::run(a).await,
        Scenario::Throughput(a) => throughput::run(a).await,
        Scenario::Latency(a) => scenarios::latency(a).await,
        Scenario::Submit(a) => scenarios::submit_rate(a).await,
        Scenario::Fleet(a) => scenarios::fleet(a).await,
        Scenario::Recovery(a) => scenarios::recovery(a).await,
        Scenario::Health(a) => health::run(a).await,
        Scenario::Legacy(a) => legacy::run(a).await,
        Scenario::Follow(a) => follow::run(a).await,
        Scenario::LogGate(a) => log_gate::run(a).await,
    }?;
    // One JSON line for tools, last.
    println!("{out}");
    Ok(())
}
