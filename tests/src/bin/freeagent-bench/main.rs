//! `freeagent-bench`: benchmarks that start a real farm (the release binaries next to this one,
//! Postgres, NATS, storage) and print each figure with its unit, the machine and the parameters,
//! then one JSON line for tools. Not a test: nothing here asserts a timing.
//!
//! `cargo build --release --workspace && target/release/freeagent-bench storage`

mod cpu;
mod machine;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Storage(a) => storage::run(a).await,
        Scenario::Throughput(a) => {
            let out = throughput::run(a).await?;
            println!("{out}");
            Ok(())
        }
    }
}
