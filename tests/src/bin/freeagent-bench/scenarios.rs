//! The scenarios that go through the HTTP front door or stress one property: latency at a fixed
//! submission rate, submissions per second, an idle fleet's cost, and recovery after a
//! scheduler is killed with a backlog.

use crate::sim::{Fleet, Idle};
use crate::throughput::{farm_env, farm_procs};
use crate::{cpu, machine};
use freeagent_shared::db;
use freeagent_shared::ids::BuildId;
use freeagent_shared::nats;
use freeagent_shared::status::{Platform, QueueName};
use freeagent_tests::{API_KEY, Farm, FarmOpts};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A minimal valid source archive (an empty tar.gz) for submissions where size does not matter.
fn tiny_source() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    freeagent_tests::pack(dir.path())
}

async fn submit(farm: &Farm, source: Vec<u8>) -> anyhow::Result<BuildId> {
    let form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .part(
            "source",
            reqwest::multipart::Part::bytes(source).file_name("s.tar.gz"),
        );
    let resp = farm
        .http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", API_KEY)
        .multipart(form)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "submit: {}", resp.status());
    let v: Value = resp.json().await?;
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("submit reply without id"))
}

pub(crate) fn percentiles(mut ms: Vec<f64>) -> Value {
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| {
        if ms.is_empty() {
            return 0.0;
        }
        let i = ((ms.len() as f64 - 1.0) * p).round() as usize;
        (ms[i] * 100.0).round() / 100.0
    };
    json!({"n": ms.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

#[derive(clap::Args)]
pub struct LatencyArgs {
    /// Submission rates to measure, per second.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    rates: Vec<u64>,
    /// Seconds at each rate.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    #[arg(long, default_value_t = 256)]
    workers: usize,
}

/// Submissions at a fixed rate (open loop); for each build, the time from the submit reply to a
/// worker holding the granted claim.
pub async fn latency(a: LatencyArgs) -> anyhow::Result<Value> {
    let m = machine::describe();
    machine::print(&m);
    let mut results = vec![];
    for &rate in &a.rates {
        let farm = Farm::start(FarmOpts {
            workers: 0,
            extra_env: farm_env(2048),
            ..Default::default()
        })
        .await;
        let fleet = Fleet::start(&farm, a.workers, true).await?;
        let source = tiny_source();
        let replied: Arc<Mutex<HashMap<BuildId, Instant>>> = Default::default();
        let total = rate * a.secs;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let farm = Arc::new(farm);
        let procs = farm_procs(&farm, 1);
        let cpu0 = cpu::sample(&procs);
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..total {
            tick.tick().await;
            let (farm, source, replied) = (farm.clone(), source.clone(), replied.clone());
            sends.spawn(async move {
                if let Ok(id) = submit(&farm, source).await
                    && let Ok(mut r) = replied.lock()
                {
                    r.insert(id, Instant::now());
                }
            });
        }
        while sends.join_next().await.is_some() {}
        let deadline = Instant::now() + Duration::from_secs(60);
        while fleet.tally.claimed.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let used = cpu::cores(&cpu0, &cpu::sample(&procs));
        let granted = fleet
            .tally
            .granted
            .as_ref()
            .and_then(|g| g.lock().ok().map(|g| g.clone()))
            .unwrap_or_default();
        let replied = replied.lock().map(|r| r.clone()).unwrap_or_default();
        let ms: Vec<f64> = replied
            .iter()
            .filter_map(|(id, at)| {
                granted
                    .get(id)
                    .map(|g| g.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        let p = percentiles(ms);
        println!(
            "latency at {rate}/s for {} s ({} workers): submit reply -> claim granted p50 {} ms, p99 {} ms, max {} ms over {} builds",
            a.secs, a.workers, p["p50_ms"], p["p99_ms"], p["max_ms"], p["n"]
        );
        cpu::print(&format!("  at {rate}/s"), &used);
        results.push(json!({"rate": rate, "latency": p, "cores": used}));
        fleet.stop().await;
    }
    Ok(
        json!({"scenario": "latency", "machine": m, "secs": a.secs, "workers": a.workers, "rates": results}),
    )
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Source size, KiB.
    #[arg(long, default_value_t = 64)]
    kib: usize,
    #[arg(long, default_value_t = 10_000)]
    builds: usize,
}

/// HTTP submissions per second: `clients` concurrent clients, each source `kib` KiB.
pub async fn submit_rate(a: SubmitArgs) -> anyhow::Result<Value> {
    let m = machine::describe();
    machine::print(&m);
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: farm_env(512),
        ..Default::default()
    })
    .await;
    let source: Vec<u8> = (0..a.kib * 1024).map(|i| (i * 7 % 251) as u8).collect();
    // Warm up connections.
    for _ in 0..a.clients {
        submit(&farm, source.clone()).await?;
    }
    let procs = farm_procs(&farm, 1);
    let cpu0 = cpu::sample(&procs);
    let t = Instant::now();
    let failures = futures::stream::iter(0..a.builds)
        .map(|_| submit(&farm, source.clone()))
        .buffer_unordered(a.clients)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    let secs = t.elapsed().as_secs_f64();
    let used = cpu::cores(&cpu0, &cpu::sample(&procs));
    let rate = (a.builds - failures) as f64 / secs;
    println!(
        "submit: {} builds of {} KiB from {} clients in {secs:.2} s: {rate:.0} submissions/s ({failures} failed)",
        a.builds, a.kib, a.clients
    );
    cpu::print("  submit", &used);
    Ok(
        json!({"scenario": "submit", "machine": m, "clients": a.clients, "kib": a.kib,
              "builds": a.builds, "failed": failures, "per_s": rate.round(), "cores": used}),
    )
}

#[derive(clap::Args)]
pub struct FleetArgs {
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    sizes: Vec<usize>,
    /// Seconds of idling measured.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Workers share a few connections with the account's credentials (the scheduler's cost
    /// alone), instead of each registering over HTTP and connecting with its own JWT.
    #[arg(long)]
    shared_identities: bool,
    /// Seconds between a worker's presence reports (the reference worker's default; 0: none),
    /// to tell what presence costs apart from what idle connections and pulls cost.
    #[arg(long, default_value_t = 10)]
    presence_secs: u64,
    /// Seconds an idle worker's pull request waits before it is renewed (the reference
    /// worker's).
    #[arg(long, default_value_t = nats::IDLE_PULL_EXPIRES.as_secs())]
    pull_secs: u64,
    /// Seconds without a dispatch after which a worker asks its queue's consumer whether it
    /// holds any (the reference worker's stall check; 0: never).
    #[arg(long, default_value_t = nats::STALL_CHECK.as_secs())]
    stall_check_secs: u64,
}

/// Idle workers connected and waiting (a pull request outstanding, presence every 10 s, as the
/// reference worker does): what they cost each process, and how fast the first build lands.
pub async fn fleet(a: FleetArgs) -> anyhow::Result<Value> {
    let m = machine::describe();
    machine::print(&m);
    let mut results = vec![];
    for &n in &a.sizes {
        let farm = Farm::start(FarmOpts {
            workers: 0,
            extra_env: farm_env(512),
            ..Default::default()
        })
        .await;
        let idle = Idle {
            pull_expires: Duration::from_secs(a.pull_secs),
            presence: (a.presence_secs > 0).then(|| Duration::from_secs(a.presence_secs)),
            stall_check: (a.stall_check_secs > 0).then(|| Duration::from_secs(a.stall_check_secs)),
        };
        let rss_mib = |name: &str| farm.memory(name).0 as f64 / (1 << 20) as f64;
        let nats_mib = || {
            let pid = farm.nats.pid().unwrap_or(0);
            machine::rss_bytes(pid) as f64 / (1 << 20) as f64
        };
        let (nats0, sched0) = (nats_mib(), rss_mib("scheduler-0"));
        let t = Instant::now();
        let fleet = if a.shared_identities {
            Fleet::start_with(&farm, n, true, idle).await?
        } else {
            Fleet::start_own(&farm, n, true, idle).await?
        };
        let joined = t.elapsed();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let procs = farm_procs(&farm, 1);
        let cpu0 = cpu::sample(&procs);
        tokio::time::sleep(Duration::from_secs(a.secs)).await;
        let used = cpu::cores(&cpu0, &cpu::sample(&procs));
        let (nats1, sched1) = (nats_mib(), rss_mib("scheduler-0"));
        let per_worker_kib =
            |before: f64, after: f64| ((after - before) * 1024.0 / n as f64).round();
        let rss = json!({
            "scheduler_mib": sched1.round(),
            "gateway_mib": rss_mib("gateway").round(),
            "storage_mib": rss_mib("storage").round(),
            "nats_mib": nats1.round(),
            "nats_kib_per_worker": per_worker_kib(nats0, nats1),
            "scheduler_kib_per_worker": per_worker_kib(sched0, sched1),
        });
        let t = Instant::now();
        let id = submit(&farm, tiny_source()).await?;
        let replied = t.elapsed();
        let deadline = Instant::now() + Duration::from_secs(30);
        let granted = loop {
            let g = fleet
                .tally
                .granted
                .as_ref()
                .and_then(|g| g.lock().ok().and_then(|g| g.get(&id).copied()));
            if let Some(g) = g {
                break Some(g);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let first_ms = granted.map(|g| ((g - t).as_secs_f64() * 1000.0 * 100.0).round() / 100.0);
        println!(
            "fleet of {n} idle workers ({}; all connected after {:.1} s): cores used over {} s: {}; first build submitted -> granted {:?} ms (submit reply after {:.1} ms); RSS {rss}",
            if a.shared_identities {
                "sharing 4 connections"
            } else {
                "each its own JWT and connection"
            },
            joined.as_secs_f64(),
            a.secs,
            used.iter()
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            first_ms,
            replied.as_secs_f64() * 1000.0,
        );
        results.push(json!({"workers": n, "own_identities": !a.shared_identities,
            "joined_s": joined.as_secs_f64(), "cores": used, "first_build_ms": first_ms, "rss": rss}));
        fleet.stop().await;
    }
    Ok(
        json!({"scenario": "fleet", "machine": m, "secs": a.secs, "presence_secs": a.presence_secs,
        "pull_secs": a.pull_secs, "stall_check_secs": a.stall_check_secs, "fleets": results}),
    )
}

#[derive(clap::Args)]
pub struct RecoveryArgs {
    #[arg(long, default_value_t = 10_000)]
    builds: i64,
    #[arg(long, default_value_t = 256)]
    workers: usize,
}

/// A scheduler killed with a backlog: builds pile up while it is down; it restarts. Time to the
/// first dispatch a worker claims, and to the backlog drained.
pub async fn recovery(a: RecoveryArgs) -> anyhow::Result<Value> {
    let m = machine::describe();
    machine::print(&m);
    let mut farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: farm_env(2048),
        ..Default::default()
    })
    .await;
    let fleet = Fleet::start(&farm, a.workers, false).await?;
    farm.kill("scheduler-0");
    let queue = QueueName::for_platform(Platform::Android);
    db::builds::build_insert_synthetic(&farm.db.pool, a.builds, Platform::Android, &queue).await?;
    let t = Instant::now();
    farm.restart("scheduler-0");
    let deadline = Instant::now() + Duration::from_secs(300);
    while fleet.tally.claimed.load(Ordering::Relaxed) == 0 {
        anyhow::ensure!(Instant::now() < deadline, "no dispatch after restart");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let first = t.elapsed();
    while (fleet.tally.completed.load(Ordering::Relaxed) as i64) < a.builds {
        anyhow::ensure!(Instant::now() < deadline, "backlog not drained");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = t.elapsed();
    println!(
        "recovery: scheduler restarted with {} pending: first build claimed after {:.0} ms, backlog drained after {:.2} s",
        a.builds,
        first.as_secs_f64() * 1000.0,
        drained.as_secs_f64()
    );
    fleet.stop().await;
    Ok(
        json!({"scenario": "recovery", "machine": m, "builds": a.builds, "workers": a.workers,
              "first_claim_ms": (first.as_secs_f64() * 1000.0).round(),
              "drained_s": (drained.as_secs_f64() * 100.0).round() / 100.0}),
    )
}
