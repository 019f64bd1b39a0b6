//! `freeagent logs -f` against the real binaries: it prints a running build's log as it grows,
//! survives a gateway restart mid-stream by resuming with `Last-Event-ID` (no line lost, none
//! twice), and exits with the build's outcome.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::{API_KEY, Farm, FarmOpts, bin_dir, project};
use std::process::Stdio;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_resumes_across_a_gateway_restart_and_exits_with_the_outcome() {
    let mut farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    let script = "for i in $(seq 1 30); do echo \"line $i\"; sleep 0.2; done\n\
                  echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n";
    let dir = project(script);
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cli = tokio::process::Command::new(bin_dir().join("freeagent"))
        .args(["logs", "-f", &id])
        .env_clear()
        .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
        .env("FREEAGENT_API_KEY", API_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Mid-build, the gateway goes away and comes back on the same port.
    freeagent_tests::freeagent_shared::testing::wait::until(
        "the build to print some lines",
        Duration::from_secs(60),
        || async {
            (farm
                .all_logs(&id)
                .await
                .iter()
                .filter(|l| l.starts_with("line "))
                .count()
                >= 5)
                .then_some(())
        },
    )
    .await;
    farm.restart("gateway");
    let out = tokio::time::timeout(Duration::from_secs(120), cli.wait_with_output())
        .await
        .expect("logs -f ends with the build")
        .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let stored = farm.all_logs(&id).await;
    assert_eq!(printed, stored, "what -f printed is the whole log, once");
    assert_eq!(
        printed.last().map(String::as_str),
        Some("Build completed successfully")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_log_streams_are_capped_per_gateway() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: vec![("FREEAGENT_MAX_LOG_FOLLOWERS".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let dir = project("true\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/api/builds/{id}/logs?follow=true", farm.gateway);
    // The build never runs (no worker): this stream stays open.
    let first = farm
        .http
        .get(&url)
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = farm
        .http
        .get(&url)
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    let body: serde_json::Value = second.json().await.unwrap();
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("FREEAGENT_MAX_LOG_FOLLOWERS"),
        "{body}"
    );
    // The paged route is not limited by it.
    let page = farm
        .http
        .get(format!("{}/api/builds/{id}/logs", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    drop(first);
}
