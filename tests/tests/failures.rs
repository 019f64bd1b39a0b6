//! Cancel, timeouts, retries, lost workers, graceful hand-back and drain, with the real binaries
//! and three scheduler replicas.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::db;
use freeagent_tests::freeagent_shared::ids::Attempt;
use freeagent_tests::freeagent_shared::subjects::Op;
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::freeagent_shared::wire::*;
use freeagent_tests::{API_KEY, Farm, FarmOpts, pack, processes_with, project};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn opts(workers: usize) -> FarmOpts {
    FarmOpts {
        workers,
        schedulers: 3,
        ..Default::default()
    }
}

/// The last line of a project whose command sleeps 60 s as a process marked
/// `mark(marker, build id, attempt)`. Sandboxed, a build's `$$` is its PID namespace's and it
/// cannot write to this test's files, so the test finds the command in `/proc` by its mark;
/// `exec -a` keeps it the command's own process (the one `sh build.sh` started as).
fn sleep_marked(marker: &str) -> String {
    format!(
        "exec bash -c \"exec -a '{marker}/$FREEAGENT_BUILD_ID/attempt-$FREEAGENT_ATTEMPT/' sleep 60\"\n"
    )
}

fn mark(marker: &str, id: &str, attempt: u32) -> String {
    format!("{marker}/{id}/attempt-{attempt}/")
}

/// A project whose command sleeps, marked as `sleep_marked` says.
fn sleeper(marker: &str) -> tempfile::TempDir {
    project(&format!("echo started\n{}", sleep_marked(marker)))
}

fn new_marker() -> String {
    format!("fa-sleeper-{}", uuid::Uuid::new_v4())
}

/// The host pid of the build command marked `mark`, once it runs.
async fn wait_pid(mark: &str) -> i32 {
    let pids = wait::until(
        "the build command to start",
        Duration::from_secs(30),
        || async {
            let pids: Vec<i32> = processes_with(mark).into_iter().map(|p| p.0).collect();
            (!pids.is_empty()).then_some(pids)
        },
    )
    .await;
    assert_eq!(pids.len(), 1, "one command marked {mark}: {pids:?}");
    pids[0]
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

async fn wait_gone(pid: i32, within: Duration) -> Duration {
    let started = Instant::now();
    while alive(pid) {
        assert!(
            started.elapsed() < within,
            "process {pid} still running after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn result_objects(farm: &Farm) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            usize::from(e.path().to_string_lossy().contains("/attempts/"))
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&farm.data.path().join("objects"))
}

async fn cancel(farm: &Farm, id: &str, delete: bool) -> reqwest::Response {
    let req = if delete {
        farm.http
            .delete(format!("{}/api/builds/{id}", farm.gateway))
    } else {
        farm.http
            .post(format!("{}/api/builds/{id}/cancel", farm.gateway))
    };
    req.header("x-api-key", API_KEY).send().await.unwrap()
}

async fn submit_with(farm: &Farm, dir: &Path, parts: &[(&str, &str)]) -> String {
    let mut form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .part(
            "source",
            reqwest::multipart::Part::bytes(pack(dir)).file_name("s.tar.gz"),
        );
    for (k, v) in parts {
        form = form.text(k.to_string(), v.to_string());
    }
    let r = farm
        .http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", API_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_works_from_pending_assigned_and_running() {
    let farm = Farm::start(opts(0)).await;
    let marker = new_marker();
    let dir = sleeper(&marker);

    // Pending: nobody serves the queue yet.
    let pending = farm.submit_dir(dir.path(), "ios").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = cancel(&farm, &pending, false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"id": pending, "status": "cancelled"})
    );
    let again = cancel(&farm, &pending, true).await;
    assert_eq!(again.status(), 400);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "Build already finished"
    );

    // Assigned: a worker (speaking NATS by hand) claimed it and has not started.
    let w = farm.register_worker("hand", &["ios"]).await;
    let assigned = farm.submit_dir(dir.path(), "ios").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = assigned.parse().unwrap();
    wait::until("dispatch", Duration::from_secs(20), || async {
        db::builds::build_get(&farm.db.pool, id)
            .await
            .unwrap()
            .filter(|b| b.dispatched_at.is_some())
    })
    .await;
    let grant: ClaimReply = farm
        .rpc(
            &w,
            Op::Claim,
            &ClaimRequest {
                build_id: id,
                attempt: Attempt::new(1).unwrap(),
                worker_id: w.worker_id,
            },
        )
        .await;
    assert!(matches!(grant, ClaimReply::Granted(_)), "{grant:?}");
    assert_eq!(farm.get_build(&assigned).await["status"], "assigned");
    assert_eq!(cancel(&farm, &assigned, true).await.status(), 200);
    let hb: HeartbeatReply = farm
        .rpc(
            &w,
            Op::Heartbeat,
            &HeartbeatRequest {
                build_id: id,
                attempt: Attempt::new(1).unwrap(),
                worker_id: w.worker_id,
                progress: None,
            },
        )
        .await;
    assert!(
        matches!(
            hb,
            HeartbeatReply::Stop {
                reason: NotYours::Finished,
                ..
            }
        ),
        "{hb:?}"
    );

    // Running: a real worker runs the command; cancel ends it within 2 s.
    let mut farm = farm;
    farm.spawn_worker(0);
    let running = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = wait_pid(&mark(&marker, &running, 1)).await;
    assert!(alive(pid));
    assert_eq!(farm.get_build(&running).await["status"], "building");
    assert_eq!(cancel(&farm, &running, false).await.status(), 200);
    let took = wait_gone(pid, Duration::from_secs(2)).await;
    eprintln!("cancelled command gone after {took:?}");
    for id in [&pending, &assigned, &running] {
        assert_eq!(farm.get_build(id).await["status"], "cancelled");
    }
    // Give the worker a moment to have uploaded anything it (wrongly) would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        result_objects(&farm),
        0,
        "a cancelled build stored an artifact"
    );
    let attempts = db::builds::build_attempts(&farm.db.pool, running.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_deref(), Some("cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_past_its_timeout_fails_and_its_process_stops() {
    let farm = Farm::start(opts(1)).await;
    let marker = new_marker();
    let dir = sleeper(&marker);
    // The limit counts from the claim: 10 s leaves a loaded machine time to fetch and start
    // the command (which sleeps 60 s) before it runs out, so the test sees the process.
    let id = submit_with(&farm, dir.path(), &[("timeout", "10")]).await;
    // Whichever comes first: the command runs, or (a machine slower than the limit) the
    // build times out before its command started. Both must end the same way below.
    let marked = mark(&marker, &id, 1);
    let pid = wait::until(
        "the command to start or the build to end",
        Duration::from_secs(60),
        || async {
            if let Some((pid, _)) = processes_with(&marked).into_iter().next() {
                return Some(Some(pid));
            }
            let b = farm.get_build(&id).await;
            (b["status"] == "failed").then_some(None)
        },
    )
    .await;
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "failed");
    assert!(
        b["error_message"].as_str().unwrap().contains("timed out"),
        "{b}"
    );
    match pid {
        Some(pid) => {
            wait_gone(pid, Duration::from_secs(5)).await;
        }
        None => eprintln!("the limit ran out before the command started; nothing to stop"),
    }
    assert!(
        processes_with(&marked).is_empty(),
        "a marked process outlived its build"
    );
    let attempts = db::builds::build_attempts(&farm.db.pool, id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("timed_out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commands_retry_only_when_the_build_asks() {
    let farm = Farm::start(opts(1)).await;
    let dir = project("echo \"attempt $FREEAGENT_ATTEMPT\"\nexit 1\n");
    let plain = submit_with(&farm, dir.path(), &[]).await;
    let retried = submit_with(
        &farm,
        dir.path(),
        &[("retry_on_failure", "true"), ("max_attempts", "3")],
    )
    .await;
    for (id, runs) in [(&plain, 1), (&retried, 3)] {
        let b = farm.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(b["status"], "failed");
        assert_eq!(b["attempt"], runs);
        let attempts = db::builds::build_attempts(&farm.db.pool, id.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(attempts.len(), runs as usize);
        assert!(
            attempts
                .iter()
                .all(|a| a.outcome.as_deref() == Some("failed") && a.ended_at.is_some())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_every_attempt_loses_its_worker_fails_after_max_attempts() {
    let mut farm = Farm::start(FarmOpts {
        workers: 0,
        schedulers: 3,
        lease: "1s",
        ..Default::default()
    })
    .await;
    let marker = new_marker();
    let dir = sleeper(&marker);
    let id = submit_with(&farm, dir.path(), &[("max_attempts", "2")]).await;
    for i in 0..2 {
        farm.spawn_worker(i);
        let pid = wait_pid(&mark(&marker, &id, i as u32 + 1)).await;
        farm.kill(&format!("worker-{i}"));
        // The orphaned command is not the test's concern here.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let b = farm.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["attempt"], 2);
    assert!(
        b["error_message"].as_str().unwrap().contains("worker lost"),
        "{b}"
    );
    let attempts = db::builds::build_attempts(&farm.db.pool, id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.outcome.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["lost", "lost"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_worker_hands_its_build_back() {
    let mut farm = Farm::start(FarmOpts {
        workers: 1,
        schedulers: 3,
        extra_env: vec![("FREEAGENT_SHUTDOWN_GRACE".into(), "500ms".into())],
        ..Default::default()
    })
    .await;
    let marker = new_marker();
    // The first attempt sleeps; the second finishes at once.
    let dir = project(&format!(
        "if [ \"$FREEAGENT_ATTEMPT\" = 1 ]; then {}fi\necho ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n",
        sleep_marked(&marker)
    ));
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = wait_pid(&mark(&marker, &id, 1)).await;
    let status = farm.signal_and_wait(
        "worker-0",
        nix::sys::signal::Signal::SIGTERM,
        Duration::from_secs(10),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker did not stop cleanly: {status:?}"
    );
    wait_gone(pid, Duration::from_secs(2)).await;
    // Handed back at once: pending again well before the 30 s lease would have run out.
    let back = Instant::now();
    farm.spawn_worker(1);
    let b = farm.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(b["status"], "completed");
    assert_eq!(b["attempt"], 2);
    assert!(back.elapsed() < Duration::from_secs(20));
    let attempts = db::builds::build_attempts(&farm.db.pool, id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("abandoned"));
    assert_eq!(attempts[1].outcome.as_deref(), Some("completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_takes_no_new_build_and_idle_queues_show() {
    let farm = Farm::start(opts(1)).await;
    let workers = |farm: &Farm| {
        let (http, url) = (farm.http.clone(), format!("{}/api/workers", farm.gateway));
        async move {
            http.get(url)
                .header("x-api-key", API_KEY)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let w = wait::until(
        "the worker to register and report",
        Duration::from_secs(20),
        || async {
            let list = workers(&farm).await;
            list["workers"]
                .as_array()
                .unwrap()
                .first()
                .filter(|w| w["status"] == "idle")
                .cloned()
        },
    )
    .await;
    let wid = w["id"].as_str().unwrap().to_owned();
    // Only admins drain.
    let r = farm
        .http
        .post(format!("{}/api/workers/{wid}/drain", farm.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = farm
        .http
        .post(format!("{}/api/workers/{wid}/drain", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(workers(&farm).await["workers"][0]["status"], "draining");
    let r = farm
        .http
        .post(format!(
            "{}/api/workers/{}/drain",
            farm.gateway,
            uuid::Uuid::now_v7()
        ))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let dir = project("echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        farm.get_build(&id).await["status"],
        "pending",
        "a draining worker took a build"
    );
    // The queue has work and no live worker: /health says so.
    let health: Value = farm
        .http
        .get(format!("{}/health", farm.gateway))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queue = health["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "android")
        .cloned()
        .unwrap();
    assert_eq!(queue["depth"], 1);
    assert_eq!(queue["live_workers"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_up_to_its_capacity_and_schedulers_stop_gracefully() {
    let mut farm = Farm::start(FarmOpts {
        workers: 1,
        schedulers: 3,
        extra_env: vec![
            ("FREEAGENT_WORKER_MAX_CONCURRENT".into(), "2".into()),
            ("FREEAGENT_WORKER_PLATFORMS".into(), "android".into()),
        ],
        ..Default::default()
    })
    .await;
    let marker = new_marker();
    let dir = sleeper(&marker);
    let a = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait::until(
        "both builds to run at once",
        Duration::from_secs(30),
        || async {
            let running = |id: &str| !processes_with(&format!("{marker}/{id}/")).is_empty();
            (running(&a) && running(&b)).then_some(())
        },
    )
    .await;
    let workers: Value = farm
        .http
        .get(format!("{}/api/workers", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(workers["workers"][0]["builds"].as_array().unwrap().len(), 2);
    wait::until(
        "the worker to report itself building",
        Duration::from_secs(10),
        || async {
            let w: Value = farm
                .http
                .get(format!("{}/api/workers", farm.gateway))
                .header("x-api-key", API_KEY)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (w["workers"][0]["status"] == "building").then_some(())
        },
    )
    .await;

    // The scheduler's own endpoints: metrics with the names operators alert on, readiness.
    let mut metrics = String::new();
    for url in &farm.schedulers {
        metrics.push_str(&farm.metrics(url).await.expect("the scheduler's /metrics"));
    }
    for name in [
        "freeagent_builds_dispatched_total",
        "freeagent_claims_total",
        "freeagent_dispatch_batch_seconds",
        "freeagent_queue_pending",
        "freeagent_queue_live_workers",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert_eq!(
        farm.http
            .get(format!("{}/readyz", farm.scheduler))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // SIGTERM: each scheduler stops cleanly, the builds keep their leases through the others.
    for name in ["scheduler-1", "scheduler-2"] {
        let status = farm.signal_and_wait(
            name,
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(15),
        );
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} did not stop cleanly: {status:?}"
        );
    }
    for id in [&a, &b] {
        assert_eq!(cancel(&farm, id, false).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_worker_renews_its_token_through_presence_replies() {
    // Tokens live 2 s; the build runs 6 s, so its heartbeats and its completion need renewed ones.
    let farm = Farm::start(FarmOpts {
        workers: 1,
        schedulers: 3,
        extra_env: vec![
            ("FREEAGENT_WORKER_TOKEN_TTL".into(), "2s".into()),
            ("FREEAGENT_WORKER_TOKEN_GRACE".into(), "1s".into()),
        ],
        ..Default::default()
    })
    .await;
    let dir = project("sleep 6\necho ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = farm.wait_terminal(&id, Duration::from_secs(40)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempt"], 1, "the lease must never have lapsed");
}

/// A NATS restart drops the pull an idle worker had waiting on the server. The worker must
/// take the next build once NATS is back, not wait out the dropped pull (30 s, plus the client
/// library's 5 s) while the build's dispatch waits in its queue. The bound asserted is that
/// window, far above the few seconds the restart takes (5 s here).
#[tokio::test]
async fn an_idle_worker_pulls_again_as_soon_as_nats_is_back() {
    let farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    let dir = project("echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n");
    let submit = || async {
        farm.submit_dir(dir.path(), "android").await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = submit().await;
    let b = farm.wait_terminal(&first, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    // The worker pulled again right after its build; that pull now waits on the server.
    tokio::time::sleep(Duration::from_secs(1)).await;
    farm.nats.restart().await;
    let restarted = Instant::now();
    let id = submit().await;
    let b = farm.wait_terminal(&id, Duration::from_secs(90)).await;
    let took = restarted.elapsed();
    eprintln!("a build submitted as NATS came back completed after {took:?}");
    assert_eq!(b["status"], "completed", "{b}");
    assert!(
        took < freeagent_tests::freeagent_shared::nats::IDLE_PULL_EXPIRES,
        "the build waited {took:?}: the worker waited out the pull its old connection had sent"
    );
}

/// Storage away when a build that succeeded uploads its artifact (a restart, a network blip):
/// the worker tries again for up to a minute, with the newest result URL, and the build
/// completes, where before it failed as if the build itself had ("uploading the artifact failed:
/// error sending request", seen on a loaded machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_upload_waits_for_storage_to_come_back() {
    let mut farm = Farm::start(FarmOpts::default()).await;
    let dir = project("sleep 3\necho built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Its source downloaded and its command running (a build is `building` from the first
    // heartbeat, before its download).
    wait::until(
        "the build command to run",
        Duration::from_secs(60),
        || async {
            farm.logs(&id)
                .await
                .iter()
                .any(|l| l.contains("[freeagent] running"))
                .then_some(())
        },
    )
    .await;
    farm.kill("storage");
    wait::until(
        "the worker to retry its upload",
        Duration::from_secs(30),
        || async {
            farm.log_of("worker-0")
                .contains("artifact upload failed; retrying")
                .then_some(())
        },
    )
    .await;
    farm.restart("storage");
    let b = farm.wait_terminal(&id, Duration::from_secs(90)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempts"].as_array().map(Vec::len), Some(1), "{b}");
}
