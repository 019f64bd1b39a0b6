//! A worker's log lines through the scheduler's log gate (ADR-0018): lines per second one
//! worker gets stored, for batches of several sizes (one batch per attempt in flight, as the
//! reference worker sends them), and with several attempts of the worker writing at once. The
//! budget is lifted, so the figure is the gate's own rate.

use freeagent_shared::ids::{Attempt, BuildId};
use freeagent_shared::subjects::Op;
use freeagent_shared::testing::wait;
use freeagent_shared::wire::{self, *};
use freeagent_tests::{Farm, FarmOpts, TestWorker, project};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Lines each round writes (per attempt).
    #[arg(long, default_value_t = 20_000)]
    lines: u64,
    /// Bytes of text per line.
    #[arg(long, default_value_t = 200)]
    line_bytes: usize,
    /// Attempts (builds the worker holds) writing at once in the last round.
    #[arg(long, default_value_t = 4)]
    attempts: usize,
}

pub async fn run(a: Args) -> anyhow::Result<Value> {
    let m = crate::machine::describe();
    crate::machine::print(&m);
    println!(
        "log-gate: {} lines of {} B per round, one batch per attempt in flight",
        a.lines, a.line_bytes
    );
    let mut env = crate::throughput::farm_env(64);
    env.extend([
        (
            "FREEAGENT_WORKER_LOG_LINES_PER_SEC".into(),
            "100000000".into(),
        ),
        (
            "FREEAGENT_WORKER_LOG_BYTES_PER_SEC".into(),
            "4000MiB".into(),
        ),
        ("FREEAGENT_LOG_MAX_BYTES".into(), "4000MiB".into()),
    ]);
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: env,
        ..Default::default()
    })
    .await;
    let w = farm
        .register_worker_with("bench", &["ios"], a.attempts.max(1) as u32)
        .await;
    let mut held = Vec::new();
    for _ in 0..a.attempts.max(1) {
        held.push(claim(&farm, &w).await?);
    }
    let nc = farm.worker_nats(&w).await;
    let mut rounds = Vec::new();
    let mut next_seq = vec![1u64; held.len()];
    for per_batch in [256u64, 16, 1] {
        let lines = if per_batch == 1 {
            a.lines / 10
        } else {
            a.lines
        };
        let started = Instant::now();
        write(
            &nc,
            &w,
            held[0],
            &mut next_seq[0],
            lines,
            per_batch,
            a.line_bytes,
        )
        .await?;
        let rate = lines as f64 / started.elapsed().as_secs_f64();
        println!("  batches of {per_batch:>3}, one attempt: {rate:>8.0} lines/s");
        rounds.push(json!({"batch": per_batch, "attempts": 1, "lines_per_sec": rate.round()}));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, &build) in held.iter().enumerate() {
        let (nc, w, mut seq) = (nc.clone(), w.clone(), next_seq[i]);
        let (lines, bytes) = (a.lines, a.line_bytes);
        tasks.push(tokio::spawn(async move {
            write(&nc, &w, build, &mut seq, lines, 256, bytes).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = (a.lines * held.len() as u64) as f64 / started.elapsed().as_secs_f64();
    println!(
        "  batches of 256, {} attempts at once: {rate:>8.0} lines/s in all",
        held.len()
    );
    rounds.push(json!({"batch": 256, "attempts": held.len(), "lines_per_sec": rate.round()}));
    Ok(json!({"scenario": "log-gate", "machine": m, "line_bytes": a.line_bytes, "rounds": rounds}))
}

/// Submits an ios build and claims it as `w` (nothing else serves ios here).
async fn claim(farm: &Farm, w: &TestWorker) -> anyhow::Result<BuildId> {
    let dir = project("true\n");
    let id: BuildId = farm.submit_dir(dir.path(), "ios").await["id"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    wait::until("dispatch", Duration::from_secs(30), || async {
        freeagent_shared::db::builds::build_get(&farm.db.pool, id)
            .await
            .ok()
            .flatten()
            .filter(|b| b.dispatched_at.is_some())
    })
    .await;
    let attempt = Attempt::new(1)?;
    let reply: ClaimReply = farm
        .rpc(
            w,
            Op::Claim,
            &ClaimRequest {
                build_id: id,
                attempt,
                worker_id: w.worker_id,
            },
        )
        .await;
    anyhow::ensure!(matches!(reply, ClaimReply::Granted(_)), "claim: {reply:?}");
    Ok(id)
}

async fn write(
    nc: &async_nats::Client,
    w: &TestWorker,
    build: BuildId,
    seq: &mut u64,
    lines: u64,
    per_batch: u64,
    line_bytes: usize,
) -> anyhow::Result<()> {
    let attempt = Attempt::new(1)?;
    let text = "y".repeat(line_bytes);
    let end = *seq + lines;
    while *seq < end {
        let n = per_batch.min(end - *seq);
        let batch = LogBatch {
            worker_id: w.worker_id,
            build_id: build,
            attempt,
            lines: (*seq..*seq + n)
                .map(|s| LogLine {
                    build_id: build,
                    attempt,
                    seq: s,
                    timestamp: chrono::Utc::now(),
                    level: LogLevel::Info,
                    message: text.clone(),
                    stream: None,
                })
                .collect(),
        };
        let msg = nc
            .request(Op::Log.subject(w.worker_id), wire::encode(&batch).into())
            .await?;
        match wire::decode::<LogReply>(&msg.payload)? {
            LogReply::Stored { through } if through == *seq + n - 1 => *seq += n,
            other => anyhow::bail!("the gate answered {other:?}"),
        }
    }
    Ok(())
}
