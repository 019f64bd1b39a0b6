//! Live logs at scale: builds writing lines at a steady rate while many clients follow them
//! over server-sent events on one gateway. Measures the delay from a line's writing to a
//! follower's receiving it, and what the followers cost the gateway (CPU, memory per follower).
//! Lines are written as the farm's own (`logs.<id>.farm`), so no worker has to hold the builds.

use crate::cpu;
use crate::scenarios::percentiles;
use crate::sim::Fleet;
use crate::throughput::{farm_env, farm_procs};
use freeagent_shared::db;
use freeagent_shared::ids::BuildId;
use freeagent_shared::status::{Platform, QueueName};
use freeagent_shared::subjects;
use freeagent_shared::testing::factory::farm_line;
use freeagent_shared::wire;
use freeagent_tests::{API_KEY, Farm, FarmOpts, project};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args)]
pub struct Args {
    /// Builds writing lines.
    #[arg(long, default_value_t = 100)]
    builds: usize,
    /// Lines per second each build writes.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Followers, spread evenly over the builds.
    #[arg(long, default_value_t = 1000)]
    followers: usize,
    /// Seconds measured (after a warm-up of 3 s).
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Each build writes at its own point of the period, instead of all in the same instant (a
    /// burst of `builds` lines each period).
    #[arg(long)]
    spread: bool,
    /// Simulated workers running the throughput scenario's no-op builds beside the followers
    /// (0: the followers alone). The followed builds wait on another queue meanwhile.
    #[arg(long, default_value_t = 0)]
    load_workers: usize,
    /// No-op builds queued for that load (enough to last the run).
    #[arg(long, default_value_t = 200_000)]
    load_builds: i64,
}

pub async fn run(a: Args) -> anyhow::Result<Value> {
    let m = crate::machine::describe();
    crate::machine::print(&m);
    println!(
        "follow: {} builds writing {} lines/s each ({}), {} SSE followers on one gateway, {} s",
        a.builds,
        a.rate,
        if a.spread {
            "spread over the period"
        } else {
            "in step"
        },
        a.followers,
        a.secs
    );
    let mut env = farm_env(if a.load_workers > 0 { 2048 } else { 64 });
    env.push((
        "FREEAGENT_MAX_LOG_FOLLOWERS".into(),
        (a.followers + 10).to_string(),
    ));
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: env,
        ..Default::default()
    })
    .await;
    let dir = project("true\n");
    // On a queue no simulated worker takes: the followed builds keep running while the load's
    // builds pass.
    let ids: Vec<BuildId> = farm
        .submit_many(dir.path(), "ios", a.builds, 16, &[])
        .await
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect();
    anyhow::ensure!(ids.len() == a.builds, "submitted {} builds", ids.len());
    let (rss_before, _) = farm.memory("gateway");

    // Followers: each records the delay of every line it receives while measuring.
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let delays: Arc<Mutex<Vec<f64>>> = Arc::default();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Followers stop at `done` (not at the builds' end: that takes the archive's settle time).
    let done = tokio_util::sync::CancellationToken::new();
    let addr = farm
        .gateway
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    // The followers run on a thread of their own (one event loop, no work stealing between
    // threads): the bench's reading costs as little as it can and stays apart from the writers.
    let (connected_tx, connected) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let followers = {
        let (ids, measuring, delays, received, done) = (
            ids.clone(),
            measuring.clone(),
            delays.clone(),
            received.clone(),
            done.clone(),
        );
        let count = a.followers;
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = connected_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for i in 0..count {
                    let id = ids[i % ids.len()];
                    let conn = match tokio::net::TcpStream::connect(&addr).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = connected_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    tasks.push(tokio::spawn(follower(
                        conn,
                        format!(
                            "GET /api/builds/{id}/logs?follow=true HTTP/1.1\r\nHost: {addr}\r\nx-api-key: {API_KEY}\r\naccept: text/event-stream\r\n\r\n"
                        ),
                        measuring.clone(),
                        delays.clone(),
                        received.clone(),
                        done.clone(),
                    )));
                }
                let _ = connected_tx.send(Ok(()));
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };
    connected.await??;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_followed, _) = farm.memory("gateway");

    // Writers: each build writes `rate` lines per second.
    let nats = farm.service_nats().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    let every = Duration::from_micros(1_000_000 / a.rate.max(1));
    let first_tick = tokio::time::Instant::now();
    for (i, id) in ids.clone().into_iter().enumerate() {
        let (nats, stop, written) = (nats.clone(), stop.clone(), written.clone());
        // `--spread`: each writer starts at its own point of the period, as independent builds
        // would; by default all write in the same instant (the figures recorded so far).
        let offset = if a.spread {
            every.mul_f64(i as f64 / ids.len().max(1) as f64)
        } else {
            Duration::ZERO
        };
        writers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first_tick + offset, every);
            // A late tick is made up at once: the offered load stays `rate` per second even
            // when the machine is busy (each line's timestamp is taken when it is written).
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            while !stop.is_cancelled() {
                tick.tick().await;
                n += 1;
                let line = farm_line(id, n, format!("line {n} of a build that writes steadily"));
                if nats
                    .publish(subjects::farm_logs(id), wire::encode(&line).into())
                    .await
                    .is_ok()
                {
                    written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    let load = if a.load_workers > 0 {
        let fleet = Fleet::start(&farm, a.load_workers, false).await?;
        let queue = QueueName::for_platform(Platform::Android);
        db::builds::build_insert_synthetic(&farm.db.pool, a.load_builds, Platform::Android, &queue)
            .await?;
        nats.publish(subjects::WAKE, "".into()).await?;
        Some(fleet)
    } else {
        None
    };
    let load_done = || {
        load.as_ref().map_or(0, |f| {
            f.tally.completed.load(std::sync::atomic::Ordering::Relaxed)
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let procs = farm_procs(&farm, 1);
    let before = cpu::sample(&procs);
    let load_before = load_done();
    let written_before = written.load(std::sync::atomic::Ordering::Relaxed);
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.secs)).await;
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let after = cpu::sample(&procs);
    let load_end = load_done();
    let load_rate = (load_end - load_before) as f64 / secs;
    if let Some(fleet) = load {
        let load_done = load_end;
        println!(
            "follow: beside it, {} simulated workers completed {load_rate:.0} no-op builds/s ({} of {} queued by the end: {})",
            a.load_workers,
            load_done,
            a.load_builds,
            if (load_done as i64) < a.load_builds {
                "the load lasted the run"
            } else {
                "the load ran out before the end"
            },
        );
        fleet.stop().await;
    }
    // BENCH_DEBUG=1: how many consumers the streams have (the feed is one per gateway).
    if std::env::var_os("BENCH_DEBUG").is_some() {
        let js = async_nats::jetstream::new(nats.clone());
        for name in ["LOGS", "EVENTS", "BUILDS"] {
            if let Ok(mut s) = js.get_stream(name).await
                && let Ok(i) = s.info().await
            {
                println!(
                    "stream {name}: {} messages, {} consumers",
                    i.state.messages, i.state.consumer_count
                );
            }
        }
    }
    let (rss_during, rss_peak) = farm.memory("gateway");
    let lines = written.load(std::sync::atomic::Ordering::Relaxed) - written_before;
    stop.cancel();
    for w in writers {
        let _ = w.await;
    }
    done.cancel();
    let _ = tokio::task::spawn_blocking(move || followers.join()).await;
    let got = received.load(std::sync::atomic::Ordering::Relaxed);
    let all = std::mem::take(&mut *delays.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let delay = percentiles(all);
    let cores = cpu::cores(&before, &after);
    let gateway_cores = cores.get("gateway").copied().unwrap_or(0.0);
    let per_follower_kib =
        (rss_followed.saturating_sub(rss_before)) as f64 / 1024.0 / a.followers.max(1) as f64;
    println!(
        "follow: {lines} lines written in {secs:.1} s ({:.0}/s), {got} deliveries to followers ({:.0}/s)",
        lines as f64 / secs,
        got as f64 / secs
    );
    println!(
        "follow: delay from writing to a follower p50 {} ms, p99 {} ms, max {} ms",
        delay["p50_ms"], delay["p99_ms"], delay["max_ms"]
    );
    cpu::print("follow", &cores);
    println!(
        "follow: gateway RSS {:.1} MiB before followers, {:.1} MiB with {} idle followers ({per_follower_kib:.1} KiB each), {:.1} MiB while streaming (peak {:.1} MiB); {:.3} ms of gateway CPU per second per follower",
        rss_before as f64 / 1048576.0,
        rss_followed as f64 / 1048576.0,
        a.followers,
        rss_during as f64 / 1048576.0,
        rss_peak as f64 / 1048576.0,
        gateway_cores * 1000.0 / a.followers.max(1) as f64,
    );
    Ok(json!({
        "scenario": "follow",
        "machine": m,
        "builds": a.builds,
        "lines_per_sec_per_build": a.rate,
        "writers_spread": a.spread,
        "load_workers": a.load_workers,
        "load_builds_per_s": load_rate.round(),
        "followers": a.followers,
        "lines_written": lines,
        "deliveries": got,
        "delay": delay,
        "cores": cores,
        "gateway_rss_bytes": {"before": rss_before, "followed": rss_followed, "streaming": rss_during, "peak": rss_peak},
        "gateway_kib_per_follower": per_follower_kib,
    }))
}

/// One follower: a plain socket that looks only for each `log` event's timestamp (the response's
/// status line and chunk sizes pass by unread) — lean on purpose, as the bench shares the machine
/// with the gateway. Records now − timestamp while `measuring`.
async fn follower(
    mut conn: tokio::net::TcpStream,
    request: String,
    measuring: Arc<std::sync::atomic::AtomicBool>,
    delays: Arc<Mutex<Vec<f64>>>,
    received: Arc<std::sync::atomic::AtomicU64>,
    done: tokio_util::sync::CancellationToken,
) {
    if conn.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 << 10];
    let mut filled = 0;
    let mut mine = Vec::new();
    loop {
        if filled == buf.len() {
            filled = 0;
        }
        let n = tokio::select! {
            n = conn.read(&mut buf[filled..]) => n,
            _ = done.cancelled() => break,
        };
        let Ok(n) = n else { break };
        if n == 0 {
            break;
        }
        filled += n;
        // Complete events only; the rest waits for the next read.
        let Some(end) = buf[..filled].windows(2).rposition(|w| w == b"\n\n") else {
            continue;
        };
        if measuring.load(std::sync::atomic::Ordering::Relaxed) {
            let now = chrono::Utc::now();
            for ts in timestamps(&buf[..end]) {
                let d = now.signed_duration_since(ts);
                mine.push(d.num_microseconds().unwrap_or(0) as f64 / 1000.0);
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        buf.copy_within(end + 2..filled, 0);
        filled -= end + 2;
    }
    if let Ok(mut all) = delays.lock() {
        all.extend(mine);
    }
}

/// The `timestamp` of every `log` event in `events` (whole SSE events).
fn timestamps(events: &[u8]) -> impl Iterator<Item = chrono::DateTime<chrono::FixedOffset>> + '_ {
    const KEY: &[u8] = b"\"timestamp\":\"";
    let mut rest = events;
    std::iter::from_fn(move || {
        loop {
            let at = rest.windows(KEY.len()).position(|w| w == KEY)?;
            rest = &rest[at + KEY.len()..];
            let close = rest.iter().position(|&b| b == b'"')?;
            let value = std::str::from_utf8(&rest[..close]).ok();
            rest = &rest[close..];
            if let Some(ts) = value.and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok()) {
                return Some(ts);
            }
        }
    })
}
