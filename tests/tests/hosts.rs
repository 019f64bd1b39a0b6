//! Workers on hosts of their own (issue 26): each worker in a network namespace with its own
//! address, reaching the gateway, storage and NATS over a veth link and a bridge, as a build
//! machine reaches the farm over a network. With latency and loss on every link the farm
//! runs every build once with its whole log; a worker cut off mid-build loses the build to
//! another worker when its lease runs out, and what it reports after the link comes back is
//! refused. Needs root (`ip netns`, `nft`), as CI has.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::db;
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::hosts::Hosts;
use freeagent_tests::runs::{Runs, assert_exactly_once, terminal_count};
use freeagent_tests::{Farm, FarmOpts, env, is_root, project};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LINES: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_hosts_of_their_own_through_latency_and_loss() {
    if !is_root() {
        eprintln!("not root: no network namespaces can be made; nothing to check");
        return;
    }
    // Across a continent, on a poor link: 40 ms each way, 2 % of packets lost.
    let hosts = Arc::new(Hosts::new(3).with_delay(Duration::from_millis(40)));
    for i in 0..hosts.len() {
        hosts.loss(i, 2);
    }
    let farm = Farm::start(FarmOpts {
        workers: 3,
        worker_hosts: Some(hosts.clone()),
        extra_env: env(&[("RUST_LOG", "info,async_nats=warn")]),
        ..Default::default()
    })
    .await;
    let runs = Runs::start_on(hosts.own_addr()).await;
    let dir = runs.recorder_after(&format!(
        "for i in $(seq 1 {LINES}); do echo \"line $i of $FREEAGENT_BUILD_ID\"; done\n"
    ));
    let started = Instant::now();
    let ids = farm.submit_many(dir.path(), "android", 30, 4, &[]).await;
    wait::until(
        "every build to finish",
        Duration::from_secs(240),
        || async { (terminal_count(&farm).await >= ids.len() as i64).then_some(()) },
    )
    .await;
    eprintln!(
        "{} builds on 3 worker hosts 40 ms away with 2 % loss each way: {:?}",
        ids.len(),
        started.elapsed()
    );
    assert_exactly_once(&farm, &ids, &runs).await;
    for id in &ids {
        let log = farm.all_logs(id).await;
        for i in 1..=LINES {
            let line = format!("line {i} of {id}");
            assert!(log.contains(&line), "build {id} lost {line:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_mid_build_loses_it_to_another_and_is_refused_after() {
    if !is_root() {
        eprintln!("not root: no network namespaces can be made; nothing to check");
        return;
    }
    let hosts = Arc::new(Hosts::new(2));
    let farm = Farm::start(FarmOpts {
        workers: 2,
        worker_hosts: Some(hosts.clone()),
        lease: "6s",
        extra_env: env(&[("RUST_LOG", "info,async_nats=warn")]),
        ..Default::default()
    })
    .await;
    // Long enough to be cut off in the middle, short enough to run again within the test.
    let dir = project(
        "for i in $(seq 1 16); do echo \"step $i\"; sleep 0.5; done\n\
         echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
    );
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let holder = wait::until("the build to start", Duration::from_secs(30), || async {
        let b = farm.get_build(&id).await;
        (b["status"] == "building")
            .then(|| b["worker_name"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    let i: usize = holder.trim_start_matches("worker-").parse().unwrap();
    let host = farm.worker_host(i).unwrap();
    hosts.cut(host);
    let cut = Instant::now();
    // Its lease (6 s) runs out; the other worker runs the build again and completes it.
    let done = wait::until(
        "the build to complete",
        Duration::from_secs(120),
        || async {
            let b = farm.get_build(&id).await;
            (b["status"] == "completed").then_some(b)
        },
    )
    .await;
    eprintln!("cut off -> completed elsewhere: {:?}", cut.elapsed());
    assert_ne!(done["worker_name"], holder.as_str(), "{done}");
    // The link comes back while the cut-off worker still runs its copy: what it reports then
    // is refused (its attempt was taken from it), and the build stays as it ended.
    hosts.mend(host);
    // Back on the network, the cut-off worker learns that the build is no longer its own: its
    // heartbeat or its outcome is refused, and it stops or reports nothing that counts.
    let gave_up = wait::until(
        "the cut-off worker to give the build up",
        Duration::from_secs(90),
        || async {
            let log = farm.log_of(&holder);
            [
                "the scheduler refused the outcome",
                "build stopped; nothing reported",
            ]
            .into_iter()
            .find(|said| log.contains(said))
        },
    )
    .await;
    eprintln!("the cut-off worker, reconnected: {gave_up:?}");
    let attempts = db::builds::build_attempts(&farm.db.pool, id.parse().unwrap())
        .await
        .unwrap();
    let outcomes: Vec<Option<&str>> = attempts.iter().map(|a| a.outcome.as_deref()).collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == Some("completed")).count(),
        1,
        "{attempts:?}"
    );
    assert_eq!(farm.get_build(&id).await["status"], "completed");
    assert_eq!(
        farm.get_build(&id).await["worker_name"],
        done["worker_name"]
    );
}
