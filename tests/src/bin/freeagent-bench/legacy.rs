//! Legacy HTTP workers, as the system we replace ran them: each worker authenticates with the
//! API key plus its `worker_id`, registers over HTTP, polls `GET /api/workers/poll` *without*
//! `wait` (an empty reply, a short sleep, poll again), and reports each build with a multipart
//! `POST /api/workers/result`. No build runs in between, and the source is not fetched: what is
//! measured is the gateway's side of the protocol.
//!
//! Two parts. Rounds: many workers poll at once for fewer builds, submitted before the round;
//! every build must reach exactly one worker; every poll's latency is recorded. Lifecycle: a
//! small fleet drains a batch of builds; builds per second from the first submit to the last
//! completion.

use crate::scenarios::percentiles;
use crate::throughput::{farm_env, farm_procs};
use crate::{cpu, machine};
use freeagent_tests::{API_KEY, Farm, FarmOpts};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Workers polling at once in each round.
    #[arg(long, default_value_t = 200)]
    workers: usize,
    /// Builds submitted before each round.
    #[arg(long, default_value_t = 100)]
    builds: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Sleep of a round's worker after an empty poll, ms.
    #[arg(long, default_value_t = 50)]
    idle_ms: u64,
    /// Builds of the lifecycle part (0 skips it).
    #[arg(long, default_value_t = 500)]
    lifecycle_builds: usize,
    /// Workers of the lifecycle part.
    #[arg(long, default_value_t = 20)]
    lifecycle_workers: usize,
    /// Sleep of a lifecycle worker after an empty poll, ms.
    #[arg(long, default_value_t = 20)]
    lifecycle_idle_ms: u64,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 8)]
    submit_clients: usize,
    /// A round (or the lifecycle part) that has not finished after this long is given up.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// A worker's request with no reply after this long is a protocol error, s.
    #[arg(long, default_value_t = 30)]
    request_timeout_secs: u64,
}
/// Protocol errors printed; the rest are only counted.
const PRINTED_ERRORS: u64 = 20;
/// What a worker uploads as the build's result.
const ARTIFACT: &[u8] = b"legacy bench artifact";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The farm's HTTP client and gateway, as every worker task uses them.
#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    gateway: String,
    timeout: Duration,
}

/// 429s any worker saw: the farm runs with its default rate limits, which must fit the fleet.
static RATE_LIMITED: AtomicU64 = AtomicU64::new(0);

fn seen(status: reqwest::StatusCode) -> reqwest::StatusCode {
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        RATE_LIMITED.fetch_add(1, Ordering::Relaxed);
    }
    status
}

/// Protocol errors: each printed (up to a limit) and counted.
#[derive(Default)]
struct Errors(AtomicU64);

impl Errors {
    fn report(&self, what: &str, e: &anyhow::Error) {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= PRINTED_ERRORS {
            eprintln!("legacy: protocol error {n}: {what}: {e:#}");
        } else if n == PRINTED_ERRORS + 1 {
            eprintln!("legacy: further protocol errors are counted, not printed");
        }
    }
    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// `POST /api/workers/register` with the API key, as the old workers do; the reply's `id`.
async fn register(http: &Http, name: &str) -> anyhow::Result<String> {
    let r = http
        .client
        .post(format!("{}/api/workers/register", http.gateway))
        .header("x-api-key", API_KEY)
        .timeout(http.timeout)
        .json(&json!({"name": name, "capabilities": {"platforms": ["android"]}}))
        .send()
        .await?;
    let status = seen(r.status());
    let body = r.text().await?;
    // 201 before the gateway answers exactly 200, as the old macOS app needs.
    anyhow::ensure!(status == 200 || status == 201, "register: {status}: {body}");
    let v: Value = serde_json::from_str(&body)?;
    v["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("register reply without id: {body}"))
}

/// `GET /api/workers/poll?worker_id=<id>` without `wait`: the job's id, or `None`.
async fn poll(http: &Http, worker: &str) -> anyhow::Result<Option<String>> {
    let r = http
        .client
        .get(format!(
            "{}/api/workers/poll?worker_id={worker}",
            http.gateway
        ))
        .header("x-api-key", API_KEY)
        .timeout(http.timeout)
        .send()
        .await?;
    let status = seen(r.status());
    let body = r.text().await?;
    anyhow::ensure!(status == 200, "poll: {status}: {body}");
    let v: Value = serde_json::from_str(&body)?;
    anyhow::ensure!(
        v.get("access_token").is_some(),
        "poll reply without access_token: {body}"
    );
    match &v["job"] {
        Value::Null => Ok(None),
        job => job["id"]
            .as_str()
            .map(|id| Some(id.to_owned()))
            .ok_or_else(|| anyhow::anyhow!("poll: a job without id: {body}")),
    }
}

/// `POST /api/workers/result`, multipart, legacy style: `build_id`, `worker_id`, `success`, then
/// the `result` file.
async fn upload(http: &Http, worker: &str, build: &str) -> anyhow::Result<()> {
    let form = reqwest::multipart::Form::new()
        .text("build_id", build.to_owned())
        .text("worker_id", worker.to_owned())
        .text("success", "true")
        .part(
            "result",
            reqwest::multipart::Part::bytes(ARTIFACT).file_name("app.apk"),
        );
    let r = http
        .client
        .post(format!("{}/api/workers/result", http.gateway))
        .header("x-api-key", API_KEY)
        .timeout(http.timeout)
        .multipart(form)
        .send()
        .await?;
    let status = seen(r.status());
    let body = r.text().await?;
    anyhow::ensure!(status == 200, "result for {build}: {status}: {body}");
    let v: Value = serde_json::from_str(&body)?;
    anyhow::ensure!(
        v["status"] == "completed",
        "result for {build}: not completed: {body}"
    );
    Ok(())
}

/// Registers `n` workers named `<prefix>-<i>` (not measured); failures are counted and skipped.
async fn register_all(http: &Http, prefix: &str, n: usize, errors: &Errors) -> Vec<String> {
    let results: Vec<(usize, anyhow::Result<String>)> = futures::stream::iter(0..n)
        .map(|i| async move { (i, register(http, &format!("{prefix}-{i}")).await) })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut ids = vec![];
    for (i, r) in results {
        match r {
            Ok(id) => ids.push(id),
            Err(e) => errors.report(&format!("register {prefix}-{i}"), &e),
        }
    }
    ids
}

/// What the workers of one round (or of the lifecycle part) share.
struct Phase {
    /// The builds of this phase, when known before it starts.
    ids: Option<HashSet<String>>,
    /// Completions that end the phase.
    target: usize,
    idle: Duration,
    deadline: Instant,
    /// Build → the workers it was handed to.
    handed: Mutex<HashMap<String, HashSet<usize>>>,
    completed: Mutex<HashSet<String>>,
    last_completion: Mutex<Option<Instant>>,
    /// Every poll's latency, ms (failed ones too: the time to the failure).
    polls: Mutex<Vec<f64>>,
    /// Jobs for builds outside this phase.
    foreign: AtomicU64,
    errors: Errors,
}

impl Phase {
    fn new(ids: Option<HashSet<String>>, target: usize, idle: Duration, timeout: Duration) -> Self {
        Phase {
            ids,
            target,
            idle,
            deadline: Instant::now() + timeout,
            handed: Default::default(),
            completed: Default::default(),
            last_completion: Default::default(),
            polls: Default::default(),
            foreign: AtomicU64::new(0),
            errors: Errors::default(),
        }
    }

    fn done(&self) -> bool {
        lock(&self.completed).len() >= self.target
    }

    fn completions(&self) -> usize {
        lock(&self.completed).len()
    }

    /// Builds handed to more than one worker.
    fn duplicates(&self) -> usize {
        lock(&self.handed).values().filter(|w| w.len() > 1).count()
    }

    /// Builds of the phase no worker got.
    fn never_handed(&self) -> usize {
        let handed = lock(&self.handed);
        self.ids
            .as_ref()
            .map(|ids| ids.iter().filter(|id| !handed.contains_key(*id)).count())
            .unwrap_or(0)
    }

    fn poll_count(&self) -> usize {
        lock(&self.polls).len()
    }
}

/// One legacy worker: poll without `wait`; a job → upload its result and poll again; none →
/// sleep `idle`. Until the phase's builds are all complete (or its deadline).
async fn work(http: Http, phase: Arc<Phase>, index: usize, worker: String) {
    while !phase.done() && Instant::now() < phase.deadline {
        let t = Instant::now();
        let polled = poll(&http, &worker).await;
        lock(&phase.polls).push(t.elapsed().as_secs_f64() * 1000.0);
        match polled {
            Ok(Some(build)) => {
                lock(&phase.handed)
                    .entry(build.clone())
                    .or_default()
                    .insert(index);
                let ours = phase.ids.as_ref().is_none_or(|ids| ids.contains(&build));
                if !ours {
                    phase.foreign.fetch_add(1, Ordering::Relaxed);
                }
                match upload(&http, &worker, &build).await {
                    Ok(()) if ours => {
                        let mut completed = lock(&phase.completed);
                        if completed.insert(build) {
                            *lock(&phase.last_completion) = Some(Instant::now());
                        }
                    }
                    Ok(()) => {}
                    // The build stays held: the next poll hands it back to this worker.
                    Err(e) => {
                        phase.errors.report(&format!("worker {index}"), &e);
                        tokio::time::sleep(phase.idle).await;
                    }
                }
            }
            Ok(None) => tokio::time::sleep(phase.idle).await,
            Err(e) => {
                phase.errors.report(&format!("worker {index}"), &e);
                tokio::time::sleep(phase.idle).await;
            }
        }
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub async fn run(a: Args) -> anyhow::Result<Value> {
    let m = machine::describe();
    machine::print(&m);
    // The default rate limits: a fleet of the seed's workers sharing one key must fit them.
    let mut env = farm_env(512);
    env.retain(|(k, _)| !k.starts_with("FREEAGENT_RATE_LIMIT"));
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: env,
        ..Default::default()
    })
    .await;
    let http = Http {
        client: farm.http.clone(),
        gateway: farm.gateway.clone(),
        timeout: Duration::from_secs(a.request_timeout_secs),
    };
    // An empty project: the builds are never run, only handed out and reported.
    let source = tempfile::tempdir()?;
    let procs = farm_procs(&farm, 1);
    let rounds = rounds(&a, &farm, &http, source.path(), &procs).await?;
    let lifecycle = if a.lifecycle_builds > 0 {
        lifecycle(&a, &farm, &http, source.path(), &procs).await?
    } else {
        Value::Null
    };
    let rate_limited = RATE_LIMITED.load(Ordering::Relaxed);
    println!("legacy: 429s seen by the workers (default rate limits): {rate_limited}");
    Ok(
        json!({"scenario": "legacy", "machine": m, "rounds": rounds, "lifecycle": lifecycle, "rate_limited": rate_limited}),
    )
}

async fn rounds(
    a: &Args,
    farm: &Farm,
    http: &Http,
    source: &std::path::Path,
    procs: &[(&'static str, Option<u32>)],
) -> anyhow::Result<Value> {
    println!(
        "legacy rounds: {} workers (API key + worker_id, poll without wait, {} ms after an empty poll), {} builds a round, {} rounds",
        a.workers, a.idle_ms, a.builds, a.rounds
    );
    let reg_errors = Errors::default();
    let workers = register_all(http, "legacy", a.workers, &reg_errors).await;
    let mut all_polls = vec![];
    let mut per_round = vec![];
    let (mut duplicates, mut never, mut foreign, mut errors) =
        (0usize, 0usize, 0u64, reg_errors.count());
    let cpu0 = cpu::sample(procs);
    for round in 1..=a.rounds {
        let t = Instant::now();
        let ids = farm
            .submit_many(source, "android", a.builds, a.submit_clients, &[])
            .await;
        let submitted = t.elapsed();
        let phase = Arc::new(Phase::new(
            Some(ids.into_iter().collect()),
            a.builds,
            Duration::from_millis(a.idle_ms),
            Duration::from_secs(a.timeout_secs),
        ));
        // All workers start polling at once.
        let start = Arc::new(tokio::sync::Barrier::new(workers.len() + 1));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, w) in workers.iter().enumerate() {
            let (http, phase, start, w) = (http.clone(), phase.clone(), start.clone(), w.clone());
            tasks.spawn(async move {
                start.wait().await;
                work(http, phase, i, w).await;
            });
        }
        start.wait().await;
        let t0 = Instant::now();
        while tasks.join_next().await.is_some() {}
        // Workers stop after the round's last completion, once their poll or sleep ends.
        let stopped = t0.elapsed();
        let took = lock(&phase.last_completion).map(|l| l - t0);
        let completed = phase.completions();
        let p = percentiles(lock(&phase.polls).clone());
        let (dup, nev, forg, err) = (
            phase.duplicates(),
            phase.never_handed(),
            phase.foreign.load(Ordering::Relaxed),
            phase.errors.count(),
        );
        println!(
            "  round {round}: {} builds submitted in {:.2} s; {completed} completed, the last {} after the workers started (all workers stopped after {:.3} s); {} polls (p50 {} ms, p99 {} ms, max {} ms); handed to >1 worker {dup}, never handed out {nev}, foreign jobs {forg}, protocol errors {err}",
            a.builds,
            submitted.as_secs_f64(),
            took.map(|d| format!("{:.3} s", d.as_secs_f64()))
                .unwrap_or_else(|| "never".into()),
            stopped.as_secs_f64(),
            phase.poll_count(),
            p["p50_ms"],
            p["p99_ms"],
            p["max_ms"],
        );
        all_polls.extend(lock(&phase.polls).iter().copied());
        per_round.push(json!({"round": round, "submit_s": secs(submitted),
            "round_s": took.map(secs), "stopped_s": secs(stopped), "completed": completed, "polls": p,
            "duplicates": dup, "never_handed_out": nev, "foreign_jobs": forg, "errors": err}));
        duplicates += dup;
        never += nev;
        foreign += forg;
        errors += err;
    }
    let used = cpu::cores(&cpu0, &cpu::sample(procs));
    let p = percentiles(all_polls);
    println!(
        "legacy rounds: builds handed to more than one worker: {duplicates}; never handed out: {never}; jobs from outside the round: {foreign}; protocol errors: {errors}"
    );
    let target = if p["max_ms"].as_f64().is_some_and(|m| m < 250.0) {
        "met"
    } else {
        "not met"
    };
    println!(
        "legacy rounds: poll latency over {} polls: p50 {} ms, p99 {} ms, max {} ms (target from the issue: max < 250 ms: {target})",
        p["n"], p["p50_ms"], p["p99_ms"], p["max_ms"]
    );
    cpu::print("  rounds", &used);
    Ok(
        json!({"workers": a.workers, "registered": workers.len(), "builds": a.builds,
              "rounds": a.rounds, "idle_ms": a.idle_ms, "polls": p, "duplicates": duplicates,
              "never_handed_out": never, "foreign_jobs": foreign, "errors": errors,
              "per_round": per_round, "cores": used}),
    )
}

async fn lifecycle(
    a: &Args,
    farm: &Farm,
    http: &Http,
    source: &std::path::Path,
    procs: &[(&'static str, Option<u32>)],
) -> anyhow::Result<Value> {
    println!(
        "legacy lifecycle: {} builds, {} workers (poll without wait; a job -> upload the result, none -> {} ms sleep)",
        a.lifecycle_builds, a.lifecycle_workers, a.lifecycle_idle_ms
    );
    let reg_errors = Errors::default();
    let workers = register_all(http, "lifecycle", a.lifecycle_workers, &reg_errors).await;
    // Builds are submitted while the workers poll: the ids are not known ahead; every job
    // counts (the rounds' builds are all complete by now).
    let phase = Arc::new(Phase::new(
        None,
        a.lifecycle_builds,
        Duration::from_millis(a.lifecycle_idle_ms),
        Duration::from_secs(a.timeout_secs),
    ));
    let cpu0 = cpu::sample(procs);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in workers.iter().enumerate() {
        tasks.spawn(work(http.clone(), phase.clone(), i, w.clone()));
    }
    let t0 = Instant::now();
    let ids = farm
        .submit_many(source, "android", a.lifecycle_builds, a.submit_clients, &[])
        .await;
    let submitted = t0.elapsed();
    while tasks.join_next().await.is_some() {}
    let used = cpu::cores(&cpu0, &cpu::sample(procs));
    let completed = phase.completions();
    let took = lock(&phase.last_completion).map(|l| l - t0);
    let rate = took.map(|d| completed as f64 / d.as_secs_f64());
    let p = percentiles(lock(&phase.polls).clone());
    let ids: HashSet<String> = ids.into_iter().collect();
    let foreign = lock(&phase.handed)
        .keys()
        .filter(|b| !ids.contains(*b))
        .count();
    let (dup, errors) = (
        phase.duplicates(),
        phase.errors.count() + reg_errors.count(),
    );
    println!(
        "legacy lifecycle: {completed} of {} builds completed; first submit -> last completion {}: {} builds/s (submitting took {:.2} s); handed to >1 worker {dup}, foreign jobs {foreign}, protocol errors {errors}",
        a.lifecycle_builds,
        took.map(|d| format!("{:.2} s", d.as_secs_f64()))
            .unwrap_or_else(|| "never".into()),
        rate.map(|r| format!("{r:.1}"))
            .unwrap_or_else(|| "-".into()),
        submitted.as_secs_f64(),
    );
    println!(
        "legacy lifecycle: poll latency over {} polls: p50 {} ms, p99 {} ms, max {} ms",
        p["n"], p["p50_ms"], p["p99_ms"], p["max_ms"]
    );
    cpu::print("  lifecycle", &used);
    Ok(
        json!({"builds": a.lifecycle_builds, "workers": a.lifecycle_workers,
              "registered": workers.len(), "idle_ms": a.lifecycle_idle_ms,
              "completed": completed, "total_s": took.map(secs), "submit_s": secs(submitted),
              "builds_per_s": rate.map(|r| (r * 10.0).round() / 10.0), "polls": p,
              "duplicates": dup, "foreign_jobs": foreign, "errors": errors, "cores": used}),
    )
}
