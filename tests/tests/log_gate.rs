//! Issue 22, item 5, replayed against the real binaries: a registered worker, with its own NATS
//! credentials, tries to push a running build's log out of the LOGS stream (the audit pushed
//! 1.18 GiB under 336 made-up build ids in 8.3 s, and a running build's first lines were
//! dropped). Workers no longer publish on LOGS; their lines go through the scheduler's log gate,
//! which stores only lines of an attempt the sender holds, within its budget and the attempt's
//! cap.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::db;
use freeagent_tests::freeagent_shared::ids::{Attempt, BuildId};
use freeagent_tests::freeagent_shared::subjects::{self, Op};
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::freeagent_shared::wire::{self, *};
use freeagent_tests::{Farm, FarmOpts, TestWorker, metric_value, project};
use std::time::{Duration, Instant};

const KIB: usize = 1024;

fn batch(w: &TestWorker, build: BuildId, attempt: Attempt, from: u64, n: u64) -> LogBatch {
    LogBatch {
        worker_id: w.worker_id,
        build_id: build,
        attempt,
        lines: (from..from + n)
            .map(|seq| LogLine {
                build_id: build,
                attempt,
                seq,
                timestamp: chrono::Utc::now(),
                level: LogLevel::Info,
                message: "x".repeat(KIB),
                stream: None,
            })
            .collect(),
    }
}

async fn send(nc: &async_nats::Client, w: &TestWorker, b: &LogBatch) -> LogReply {
    let msg = nc
        .request(Op::Log.subject(w.worker_id), wire::encode(b).into())
        .await
        .expect("the scheduler answers");
    wire::decode(&msg.payload).expect("a readable reply")
}

async fn logs_bytes(farm: &Farm) -> u64 {
    async_nats::jetstream::new(farm.service_nats().await)
        .get_stream(subjects::LOGS_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_cannot_push_another_builds_log_out_of_the_stream() {
    // A small LOGS stream, so that a flood would evict the honest build's lines within seconds,
    // and a small budget and cap, so that the test is quick.
    let farm = Farm::start(FarmOpts {
        extra_env: vec![
            ("FREEAGENT_LOGS_MAX_BYTES".into(), "4MiB".into()),
            // The honest worker serves android only: the ios build is the attacker's to claim.
            ("FREEAGENT_WORKER_PLATFORMS".into(), "android".into()),
        ],
        scheduler_env: vec![
            ("FREEAGENT_WORKER_LOG_BYTES_PER_SEC".into(), "256KiB".into()),
            ("FREEAGENT_WORKER_LOG_LINES_PER_SEC".into(), "1000".into()),
            ("FREEAGENT_LOG_MAX_BYTES".into(), "512KiB".into()),
        ],
        ..Default::default()
    })
    .await;
    let dir = project(
        "echo 'honest first line'\nsleep 12\necho 'honest last line'\necho ok > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
    );
    let honest = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait::until(
        "the honest build's first line",
        Duration::from_secs(60),
        || async {
            farm.logs(&honest)
                .await
                .iter()
                .any(|l| l == "honest first line")
                .then_some(())
        },
    )
    .await;

    let attacker = farm.register_worker("attacker", &["ios"]).await;
    // 1. Straight onto the stream, under a made-up build: NATS refuses it.
    let mut watched = attacker.connect_watched(&farm.nats.url).await;
    let made_up = BuildId::new();
    watched
        .client
        .publish(
            subjects::logs(made_up, attacker.worker_id),
            wire::encode(&batch(&attacker, made_up, Attempt::NONE, 1, 1).lines[0]).into(),
        )
        .await
        .unwrap();
    watched.refused("a log line straight onto LOGS").await;

    // 2. Through the gate, under 300 made-up builds, 200 KiB each (60 MiB): nothing is stored.
    let nc = farm.worker_nats(&attacker).await;
    let before = logs_bytes(&farm).await;
    let (mut not_yours, mut slow) = (0, 0);
    for _ in 0..300 {
        let b = batch(&attacker, BuildId::new(), Attempt::new(1).unwrap(), 1, 200);
        match send(&nc, &attacker, &b).await {
            LogReply::NotYours { .. } => not_yours += 1,
            LogReply::Slow { .. } => slow += 1,
            other => panic!("a made-up build's lines were not refused: {other:?}"),
        }
    }
    let after = logs_bytes(&farm).await;
    eprintln!(
        "made-up builds: {not_yours} refused as not held, {slow} told to wait; LOGS {before} -> {after} bytes"
    );
    assert!(not_yours > 0);
    assert!(
        after < before + 64 * KIB as u64,
        "LOGS grew from {before} to {after} bytes"
    );

    // 3. A build it does hold: an ios build it claims as any worker would.
    let ios_dir = project("true\n");
    let own = farm.submit_dir(ios_dir.path(), "ios").await["id"]
        .as_str()
        .unwrap()
        .parse::<BuildId>()
        .unwrap();
    wait::until("dispatch", Duration::from_secs(20), || async {
        db::builds::build_get(&farm.db.pool, own)
            .await
            .unwrap()
            .filter(|b| b.dispatched_at.is_some())
    })
    .await;
    let attempt = Attempt::new(1).unwrap();
    let granted: ClaimReply = farm
        .rpc(
            &attacker,
            Op::Claim,
            &ClaimRequest {
                build_id: own,
                attempt,
                worker_id: attacker.worker_id,
            },
        )
        .await;
    assert!(matches!(granted, ClaimReply::Granted(_)), "{granted:?}");
    // As fast as it can, 200 KiB a batch: the budget slows it down, the attempt's cap stops it.
    let started = Instant::now();
    let (mut stored_through, mut waits, mut capped) = (0u64, 0, false);
    while started.elapsed() < Duration::from_secs(30) {
        let b = batch(&attacker, own, attempt, stored_through + 1, 200);
        match send(&nc, &attacker, &b).await {
            LogReply::Stored { through } => stored_through = through,
            LogReply::Slow { through, .. } => {
                stored_through = stored_through.max(through);
                waits += 1;
            }
            LogReply::Error { message } => {
                assert!(message.contains("cap"), "{message}");
                capped = true;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let rate = stored_through as f64 * KIB as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "own build: {stored_through} lines of 1 KiB stored in {:?} ({:.0} KiB/s), told to wait {waits} times, capped: {capped}",
        started.elapsed(),
        rate / KIB as f64
    );
    assert!(waits > 0, "the budget never slowed the flood");
    assert!(capped, "the attempt's cap never stopped the flood");
    // 512 KiB cap + 2 MiB for the last lines, and at most one batch past it.
    assert!(stored_through as usize * KIB <= (512 + 2048 + 200) * KIB);
    let metrics = farm.metrics(&farm.scheduler).await.unwrap_or_default();
    for reason in ["not_held", "budget", "cap"] {
        let series = format!("freeagent_log_lines_refused_total{{reason=\"{reason}\"}}");
        assert!(
            metric_value(&metrics, &series).unwrap_or(0.0) > 0.0,
            "{series} in {metrics}"
        );
    }

    // The honest build's log is whole: its first line was never pushed out.
    let done = farm.wait_terminal(&honest, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let logs = farm.logs(&honest).await;
    assert!(logs.iter().any(|l| l == "honest first line"), "{logs:?}");
    assert!(logs.iter().any(|l| l == "honest last line"), "{logs:?}");
}

/// The same budget for a worker that polls over HTTP (the seed's Mac app): its lines reach LOGS
/// through the gateway, which counts them as the scheduler's gate counts a NATS worker's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_worker_is_held_to_the_same_log_budget() {
    use serde_json::{Value, json};
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: vec![
            ("FREEAGENT_WORKER_LOG_BYTES_PER_SEC".into(), "256KiB".into()),
            ("FREEAGENT_WORKER_LOG_LINES_PER_SEC".into(), "1000".into()),
            ("FREEAGENT_LOG_MAX_BYTES".into(), "512KiB".into()),
            // The gateway's own request limit stays out of the way.
            ("FREEAGENT_RATE_LIMIT_KEY".into(), "0".into()),
        ],
        ..Default::default()
    })
    .await;
    let dir = project("true\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reg: Value = farm
        .http
        .post(format!("{}/api/workers/register", farm.gateway))
        .header("x-api-key", freeagent_tests::API_KEY)
        .json(&json!({"name": "mac", "capabilities": {"platforms": ["android"]}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = reg["access_token"].as_str().unwrap().to_owned();
    let job: Value = farm
        .http
        .get(format!("{}/api/workers/poll?wait=20", farm.gateway))
        .header("x-worker-token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["job"]["id"], id.as_str(), "{job}");
    let lines: Vec<Value> = (0..200)
        .map(|_| json!({"level": "info", "message": "x".repeat(KIB)}))
        .collect();
    let started = Instant::now();
    let (mut stored, mut slowed, mut capped) = (0, 0, false);
    while started.elapsed() < Duration::from_secs(30) {
        let r = farm
            .http
            .post(format!("{}/api/builds/{id}/logs", farm.gateway))
            .header("x-worker-token", &token)
            .json(&json!({ "logs": lines }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        match status {
            200 => stored += 200,
            429 => {
                assert!(body.contains("budget"), "{body}");
                slowed += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            413 => {
                assert!(body.contains("cap"), "{body}");
                capped = true;
                break;
            }
            other => panic!("{other}: {body}"),
        }
    }
    eprintln!(
        "http worker: {stored} lines of 1 KiB stored in {:?}, told to wait {slowed} times, capped: {capped}",
        started.elapsed()
    );
    assert!(slowed > 0, "the budget never slowed the flood");
    assert!(capped, "the attempt's cap never stopped the flood");
    assert!(stored * KIB <= (512 + 2048) * KIB);
}
