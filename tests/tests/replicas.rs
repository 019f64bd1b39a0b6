//! Every service twice, as an operator scales them (issue 26): two gateways and two storage
//! services, each pair behind one address (a TCP proxy standing in for the load balancer), two
//! schedulers and four workers. Mid-run one gateway, one storage service and one scheduler are
//! SIGKILLed in turn. `freeagent logs -f` on a running build and a follower of the farm's events
//! reconnect through the same address with `Last-Event-ID` and miss nothing and see nothing
//! twice. Every build runs exactly once, with its whole log and its artifact.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::runs::{
    Runs, assert_exactly_once, assert_whole_logs_and_artifacts, terminal_count,
};
use freeagent_tests::sse::SseReader;
use freeagent_tests::{API_KEY, Farm, FarmOpts, bin_dir, env};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const BUILDS: usize = 60;
const LINES: usize = 20;
const SLOW_LINES: usize = 80;

/// Every event a follower received, with its id.
type Seen = Arc<Mutex<Vec<(u64, Value)>>>;

/// Follows `/api/events` from the start (`Last-Event-ID: 0`) through `base`, reconnecting with
/// `Last-Event-ID` whenever the stream ends, until `stop`, keeping every event in `seen`.
/// Returns the number of times it had to reconnect.
async fn follow_events(
    http: reqwest::Client,
    base: String,
    stop: CancellationToken,
    seen: Seen,
) -> usize {
    let mut reconnects = 0;
    while !stop.is_cancelled() {
        let after = seen.lock().unwrap().last().map_or(0, |(id, _)| *id);
        let req = http
            .get(format!("{base}/api/events"))
            .header("x-api-key", API_KEY)
            .header("accept", "text/event-stream")
            .header("last-event-id", after.to_string());
        if let Ok(resp) = req.send().await
            && resp.status() == 200
        {
            let mut reader = SseReader::new(resp);
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return reconnects,
                    e = reader.next(Duration::from_secs(30)) => e,
                };
                match event {
                    Some(e) if e.event == "build" || e.event == "worker" => {
                        seen.lock()
                            .unwrap()
                            .push((e.id.expect("an event has an id"), e.data));
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        }
        reconnects += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reconnects
}

/// The builds `seen` holds a `completed` event of.
fn completed_in(seen: &Seen) -> HashSet<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| e["type"] == "build" && e["event"] == "completed")
        .filter_map(|(_, e)| e["build_id"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `n` more builds than now have finished; the time it took.
async fn until_more_finish(farm: &Farm, n: i64) -> Duration {
    let (start, before) = (Instant::now(), terminal_count(farm).await);
    wait::until(
        "more builds to finish",
        Duration::from_secs(120),
        || async { (terminal_count(farm).await >= before + n).then_some(()) },
    )
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_each_service_killed_mid_run_loses_and_duplicates_nothing() {
    let mut farm = Farm::start(FarmOpts {
        workers: 4,
        schedulers: 2,
        twice_behind_proxies: true,
        extra_env: env(&[
            ("RUST_LOG", "info,async_nats=warn"),
            // Builds report each run to the test's listener on this machine's loopback.
            ("FREEAGENT_BUILD_NETWORK", "host"),
        ]),
        ..Default::default()
    })
    .await;
    let stop = CancellationToken::new();
    let seen = Seen::default();
    let events = tokio::spawn(follow_events(
        farm.http.clone(),
        farm.gateway.clone(),
        stop.clone(),
        seen.clone(),
    ));

    // A long build followed live by the CLI, through the gateways' one address.
    let runs = Runs::start().await;
    let slow = runs.recorder_after(&format!(
        "for i in $(seq 1 {SLOW_LINES}); do echo \"slow line $i\"; sleep 0.25; done\n"
    ));
    let slow_id = farm.submit_dir(slow.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cli = tokio::process::Command::new(bin_dir().join("freeagent"))
        .args(["logs", "-f", &slow_id])
        .env_clear()
        .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
        .env("FREEAGENT_API_KEY", API_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let dir = runs.recorder_after(&format!(
        "for i in $(seq 1 {LINES}); do echo \"line $i of $FREEAGENT_BUILD_ID\"; sleep 0.02; done\n"
    ));
    let mut ids = farm
        .submit_many(dir.path(), "android", BUILDS, 4, &[])
        .await;

    // Each replica of each service in turn, a few builds apart: SIGKILLed, then started again
    // before its twin goes, so that whichever gateway a follower reads from goes once.
    let mut recovery = BTreeMap::new();
    for name in [
        "gateway",
        "gateway-2",
        "storage",
        "storage-2",
        "scheduler-0",
        "scheduler-1",
    ] {
        until_more_finish(&farm, 3).await;
        farm.kill(name);
        recovery.insert(name, until_more_finish(&farm, 1).await);
        farm.restart(name);
        farm.wait_replica_ready(name).await;
    }
    wait::until(
        "every build to finish",
        Duration::from_secs(240),
        || async { (terminal_count(&farm).await > BUILDS as i64).then_some(()) },
    )
    .await;
    eprintln!("after each kill, the next build finished after: {recovery:?}");

    // The CLI followed the slow build to its end across the gateway it was reading from being
    // killed: what it printed is the archived log, every line once.
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
    // Both gateways went while it ran (20 s), so it lost its stream at least once.
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains("resuming"), "{said}");
    farm.wait_archived(&slow_id).await;
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        printed,
        farm.log_text(&slow_id).await,
        "logs -f printed the whole log once"
    );
    assert_eq!(printed.matches("] slow line ").count(), SLOW_LINES);

    // The events follower saw every build complete, each event once and in order. A build
    // whose scheduler was killed between its commit and its announcement is announced when its
    // worker asks again (its reply was lost), a request timeout later: waited for, bounded.
    ids.push(slow_id.clone());
    let all_completed = tokio::time::timeout(Duration::from_secs(60), async {
        while !ids.iter().all(|id| completed_in(&seen).contains(id)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    stop.cancel();
    let reconnects = events.await.unwrap();
    let completed = completed_in(&seen);
    for id in &ids {
        assert!(
            completed.contains(id),
            "no completed event for {id} ({all_completed:?})"
        );
    }
    let seen = seen.lock().unwrap().clone();
    let event_ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert!(
        event_ids.windows(2).all(|w| w[0] < w[1]),
        "events out of order or twice: {event_ids:?}"
    );
    eprintln!(
        "events follower: {} events, {reconnects} reconnects",
        seen.len()
    );
    assert!(reconnects >= 1, "the events follower's gateway was killed");

    assert_exactly_once(&farm, &ids, &runs).await;
    let others: Vec<String> = ids.into_iter().filter(|id| *id != slow_id).collect();
    assert_whole_logs_and_artifacts(&farm, &others, LINES).await;
}
