//! Throughput: N no-op builds through dispatch → claim → complete with W simulated workers,
//! then, on the same database, the bare claim-and-complete SQL driven by `pgbench` (a
//! `FOR UPDATE SKIP LOCKED` claim and a guarded complete per transaction), so the farm's rate
//! reads as a fraction of the database's own.

use crate::sim::Fleet;
use crate::{cpu, machine};
use freeagent_shared::db;
use freeagent_shared::status::{Platform, QueueName};
use freeagent_tests::{Farm, FarmOpts, metric_value};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Builds to run through the farm.
    #[arg(long, default_value_t = 20_000)]
    pub builds: u64,
    /// Simulated workers.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Scheduler replicas.
    #[arg(long, default_value_t = 1)]
    pub schedulers: usize,
    /// Builds of a queue waiting in JetStream at once (`FREEAGENT_DISPATCH_WINDOW`).
    #[arg(long, default_value_t = 512)]
    pub window: u64,
    /// pgbench clients for the database's own rate.
    #[arg(long, default_value_t = 8)]
    pub pg_clients: usize,
    /// Do not wait for every build's log to be archived after the run (the rate with archives
    /// is then not measured).
    #[arg(long)]
    pub skip_archive_wait: bool,
}

pub fn farm_env(window: u64) -> Vec<(String, String)> {
    vec![
        (
            "RUST_LOG".into(),
            std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ),
        ("FREEAGENT_LOG_FORMAT".into(), "json".into()),
        ("FREEAGENT_DISPATCH_WINDOW".into(), window.to_string()),
        (
            "FREEAGENT_DISPATCH_BATCH".into(),
            window.min(1024).to_string(),
        ),
        ("FREEAGENT_SCHEDULER_TICK".into(), "1s".into()),
        ("FREEAGENT_RETENTION".into(), "off".into()),
        // The production pool, not the tests' small one.
        (
            "FREEAGENT_DATABASE_POOL".into(),
            freeagent_shared::config::DEFAULT_DATABASE_POOL.to_string(),
        ),
        // Benchmarks measure the farm, not its rate limits (one client plays many).
        ("FREEAGENT_RATE_LIMIT_KEY".into(), "0".into()),
        ("FREEAGENT_RATE_LIMIT_IP".into(), "0".into()),
        ("FREEAGENT_RATE_LIMIT_ANONYMOUS".into(), "0".into()),
    ]
}

pub async fn run(a: Args) -> anyhow::Result<serde_json::Value> {
    let m = machine::describe();
    machine::print(&m);
    println!(
        "throughput: {} no-op builds, {} simulated workers, {} scheduler(s), dispatch window {}",
        a.builds, a.workers, a.schedulers, a.window
    );
    let mut farm = Farm::start(FarmOpts {
        workers: 0,
        schedulers: a.schedulers,
        extra_env: farm_env(a.window),
        ..Default::default()
    })
    .await;
    let fleet = Fleet::start(&farm, a.workers, false).await?;
    let queue = QueueName::for_platform(Platform::Android);
    let procs = farm_procs(&farm, a.schedulers);
    let cpu0 = cpu::sample(&procs);
    let t0 = Instant::now();
    db::builds::build_insert_synthetic(&farm.db.pool, a.builds as i64, Platform::Android, &queue)
        .await?;
    let inserted = t0.elapsed();
    // Wake the dispatcher at once rather than at its next tick.
    let nc = farm.nats.client().await;
    nc.publish(freeagent_shared::subjects::WAKE, "".into())
        .await?;
    nc.flush().await?;
    let mut first_done = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while fleet.tally.completed.load(Ordering::Relaxed) < a.builds {
        anyhow::ensure!(Instant::now() < deadline, "throughput run did not finish");
        if first_done.is_none() && fleet.tally.completed.load(Ordering::Relaxed) > 0 {
            first_done = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let total = t0.elapsed();
    let used = cpu::cores(&cpu0, &cpu::sample(&procs));
    fleet.stop().await;
    let rate = a.builds as f64 / (total - inserted).as_secs_f64();
    println!(
        "farm: {} builds in {:.2} s after a {:.2} s insert: {:.0} builds/s claim-to-complete (first completion after {:.0} ms)",
        a.builds,
        (total - inserted).as_secs_f64(),
        inserted.as_secs_f64(),
        rate,
        first_done.unwrap_or_default().as_secs_f64() * 1000.0
    );

    cpu::print("farm run", &used);
    let mut archive = archive_progress(&farm, a.builds).await?;
    let mut with_logs = None;
    if !a.skip_archive_wait {
        // A log is part of a build: the rate a farm can hold is the one its archiver keeps up
        // with, not only claim to complete.
        let deadline = Instant::now() + Duration::from_secs(1200);
        while db::builds::logs_archive_backlog(&farm.db.pool).await? > 0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the log archive did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let all = (t0.elapsed() - inserted).as_secs_f64();
        let archived_rate = a.builds as f64 / all;
        println!(
            "with logs: every log archived {all:.2} s after the insert: {archived_rate:.0} builds/s claim to archived log"
        );
        archive["all_archived_builds_per_s"] = json!(archived_rate.round());
        with_logs = Some(archived_rate);
    }

    // The database's own rate, on the same database, with the farm's scheduler stopped.
    for i in 0..a.schedulers {
        farm.kill(&format!("scheduler-{i}"));
    }
    let pg = pg_limit(&farm, a.builds, a.pg_clients).await?;
    println!(
        "postgres: bare claim + complete, {} clients: {:.0} builds/s; farm = {:.2} of it{}",
        a.pg_clients,
        pg,
        rate / pg,
        with_logs.map_or(String::new(), |r| format!(
            ", {:.2} with every log archived",
            r / pg
        ))
    );
    Ok(json!({
        "scenario": "throughput",
        "machine": m,
        "builds": a.builds,
        "workers": a.workers,
        "schedulers": a.schedulers,
        "window": a.window,
        "farm_builds_per_s": rate.round(),
        "pg_clients": a.pg_clients,
        "pg_builds_per_s": pg.round(),
        "ratio": ((rate / pg) * 100.0).round() / 100.0,
        "cores": used,
        "log_archive": archive,
    }))
}

/// How far the gateway's log archiver got during the run (it is part of every build's cost, and
/// a farm that outruns its archiver grows a backlog the LOGS stream's age limit would cut), and
/// what its steps took.
async fn archive_progress(farm: &Farm, builds: u64) -> anyhow::Result<serde_json::Value> {
    let backlog = db::builds::logs_archive_backlog(&farm.db.pool).await?;
    let archived = builds.saturating_sub(backlog.max(0) as u64);
    let m = farm.metrics(&farm.gateway).await.unwrap_or_default();
    let mean_ms = |name: &str, labels: &str| {
        let sum = metric_value(&m, &format!("{name}_sum{labels}"))?;
        let count = metric_value(&m, &format!("{name}_count{labels}"))?;
        (count > 0.0).then(|| (sum / count * 10_000.0).round() / 10.0)
    };
    let memory_ms = mean_ms("freeagent_log_archive_write_seconds", "{source=\"memory\"}");
    let stream_ms = mean_ms("freeagent_log_archive_write_seconds", "{source=\"stream\"}");
    let count = |source: &str| {
        metric_value(
            &m,
            &format!("freeagent_log_archive_write_seconds_count{{source=\"{source}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let page_ms = mean_ms("freeagent_stream_page_seconds", "{stream=\"LOGS\"}");
    let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
    println!(
        "log archive: {archived} of {builds} builds archived by the run's end; {} written from memory (mean {}), {} read from the stream (mean {}; a LOGS page read {})",
        count("memory"),
        show(memory_ms),
        count("stream"),
        show(stream_ms),
        show(page_ms),
    );
    Ok(json!({
        "archived": archived,
        "from_memory": count("memory"),
        "from_stream": count("stream"),
        "memory_ms": memory_ms,
        "stream_ms": stream_ms,
        "page_ms": page_ms,
    }))
}

/// The farm's service processes by name, for CPU accounting.
pub fn farm_procs(farm: &Farm, schedulers: usize) -> Vec<(&'static str, Option<u32>)> {
    let mut v = vec![
        ("gateway", farm.pid("gateway")),
        ("storage", farm.pid("storage")),
    ];
    for i in 0..schedulers {
        v.push(("scheduler", farm.pid(&format!("scheduler-{i}"))));
    }
    v
}

/// The SQL a minimal Postgres queue runs per job, in one transaction: claim the oldest pending
/// row with `FOR UPDATE SKIP LOCKED`, then complete it with a guarded update. No worker is named,
/// so the farm's capacity trigger (migration 10) has no worker row to count against.
const PGBENCH_SCRIPT: &str = "\
BEGIN;
WITH c AS (SELECT id FROM builds WHERE status = 'pending' AND dispatched_at IS NULL AND queue = 'pgbench' \
ORDER BY priority DESC, submitted_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
UPDATE builds b SET status = 'assigned', attempt = b.attempt + 1, worker_id = NULL, \
lease_expires_at = now() + interval '30 seconds', updated_at = now() FROM c WHERE b.id = c.id \
RETURNING b.id AS claimed, b.attempt AS claimed_attempt \\gset
UPDATE builds SET status = 'completed', completed_at = now(), lease_expires_at = NULL, \
updated_at = now() WHERE id = :claimed AND attempt = :claimed_attempt AND status = 'assigned';
COMMIT;
";

pub async fn pg_limit(farm: &Farm, builds: u64, clients: usize) -> anyhow::Result<f64> {
    let queue = QueueName::try_from("pgbench".to_owned())
        .map_err(|e| anyhow::anyhow!("queue name: {e:?}"))?;
    db::builds::build_insert_synthetic(&farm.db.pool, builds as i64, Platform::Android, &queue)
        .await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("claim_complete.sql");
    std::fs::write(&script, PGBENCH_SCRIPT)?;
    let per_client = builds / clients as u64;
    let out = tokio::process::Command::new("pgbench")
        .arg("-n")
        .args(["-M", "prepared"])
        .args(["-c", &clients.to_string()])
        .args(["-j", &clients.min(2).to_string()])
        .args(["-t", &per_client.to_string()])
        .arg("-f")
        .arg(&script)
        .arg(&farm.db.url)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {stdout}"))
}
