//! `/health` on a farm with a long history: the figures behind it are measured in the
//! background at most every `FREEAGENT_FIGURES_TTL`, so a call costs the same with 300,000
//! builds as with none; while a crowd polls it, an authenticated status request stays fast.

use crate::scenarios::percentiles;
use crate::throughput::farm_env;
use freeagent_shared::db;
use freeagent_shared::status::{Platform, QueueName};
use freeagent_tests::{API_KEY, Farm, FarmOpts};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Finished builds in the database before measuring.
    #[arg(long, default_value_t = 300_000)]
    builds: i64,
    /// Sequential `/health` calls measured.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Callers polling `/health` at once while status requests are measured.
    #[arg(long, default_value_t = 20)]
    crowd: usize,
}

async fn timed(req: reqwest::RequestBuilder) -> anyhow::Result<f64> {
    let started = Instant::now();
    let r = req.send().await?;
    anyhow::ensure!(r.status().is_success(), "answered {}", r.status());
    r.bytes().await?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

pub async fn run(a: Args) -> anyhow::Result<Value> {
    let mut env = farm_env(64);
    // The test farm measures on every call; this is the production default.
    env.push(("FREEAGENT_FIGURES_TTL".into(), "2s".into()));
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: env,
        ..Default::default()
    })
    .await;
    let queue = QueueName::try_from("history".to_owned())
        .map_err(|e| anyhow::anyhow!("queue name: {e:?}"))?;
    let started = Instant::now();
    db::builds::build_insert_synthetic(&farm.db.pool, a.builds, Platform::Android, &queue).await?;
    db::builds::build_finish_synthetic(&farm.db.pool, &queue).await?;
    db::builds::build_analyze(&farm.db.pool).await?;
    println!(
        "health: {} finished builds written in {:.1} s",
        a.builds,
        started.elapsed().as_secs_f64()
    );
    let id = farm
        .submit_dir(&freeagent_tests::example("hello"), "android")
        .await["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let http = farm.http.clone();
    let health = format!("{}/health", farm.gateway);
    // The first call measures the farm (every later one is served from memory).
    let cold = timed(http.get(&health)).await?;
    let mut calls = Vec::with_capacity(a.calls);
    for _ in 0..a.calls {
        calls.push(timed(http.get(&health)).await?);
    }
    let sequential = percentiles(calls);
    println!("health: first call {cold:.1} ms (measures the farm); then {sequential}");
    // A crowd polls /health while one client asks for its build's status.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut crowd = Vec::new();
    for _ in 0..a.crowd {
        let (http, url, stop) = (http.clone(), health.clone(), stop.clone());
        crowd.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if http.get(&url).send().await.is_ok() {
                    n += 1;
                }
            }
            n
        }));
    }
    let status_url = format!("{}/api/builds/{id}/status", farm.gateway);
    let mut status = Vec::new();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(5) {
        status.push(timed(http.get(&status_url).header("x-api-key", API_KEY)).await?);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut crowd_calls = 0;
    for c in crowd {
        crowd_calls += c.await.unwrap_or(0);
    }
    let status = percentiles(status);
    println!(
        "health: {} callers made {crowd_calls} /health calls in 5 s; meanwhile status requests: {status}",
        a.crowd
    );
    Ok(json!({
        "scenario": "health",
        "builds": a.builds,
        "first_call_ms": (cold * 100.0).round() / 100.0,
        "health": sequential,
        "crowd": a.crowd,
        "crowd_calls": crowd_calls,
        "status_under_crowd": status,
    }))
}
