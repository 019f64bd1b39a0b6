//! The farm across machines, every part replicated: a 3-node NATS cluster as `freeagent
//! nats-config --cluster 3` writes it (every process is given the list of nodes, the streams
//! are kept on all three), two gateways and two storage services each behind one address, two
//! schedulers, ten workers, and a Postgres primary with a synchronous standby; every process on a
//! host of its own (`hosts::Hosts`, network namespaces; as root), Postgres on the test's. Builds
//! go on while each NATS node in turn is
//! SIGKILLed, one is frozen for 20 s, another's host is cut off for 20 s, a gateway and a
//! scheduler are SIGKILLed, and the primary is SIGKILLed and its standby promoted. With two NATS
//! nodes gone JetStream has no quorum: `/readyz` must say so, and ready again once they are
//! back. Nothing may be lost or run twice; every log is complete and every artifact right.
//! Recovery times are printed, never asserted (speed is measured, not a test threshold).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::env;
use freeagent_tests::freeagent_shared::db::{self, Pool as PgPool};
use freeagent_tests::freeagent_shared::nats::{self, StreamLimits};
use freeagent_tests::freeagent_shared::status::QueueName;
use freeagent_tests::freeagent_shared::subjects;
use freeagent_tests::freeagent_shared::testing::{NodePlace, TestNats, wait};
use freeagent_tests::hosts::Hosts;
use freeagent_tests::runs::{
    Runs, assert_exactly_once, assert_whole_logs_and_artifacts, terminal_count,
};
use freeagent_tests::{Farm, FarmOpts, is_root};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const STREAMS: [&str; 3] = [
    subjects::BUILDS_STREAM,
    subjects::LOGS_STREAM,
    subjects::EVENTS_STREAM,
];
/// Lines each build prints: all of them must be in its log.
const LINES: usize = 20;

/// Each stream's replicas, and whether every replica has caught up with its leader.
async fn replicas(js: &async_nats::jetstream::Context) -> Vec<(usize, bool)> {
    let mut out = Vec::new();
    for name in STREAMS {
        let Ok(mut stream) = js.get_stream(name).await else {
            out.push((0, false));
            continue;
        };
        let Ok(info) = stream.info().await else {
            out.push((0, false));
            continue;
        };
        let current = info.cluster.as_ref().is_some_and(|c| {
            c.leader.is_some() && c.replicas.iter().all(|r| r.current && !r.offline)
        });
        out.push((info.config.num_replicas, current));
    }
    out
}

/// Watches the count of finished builds every 50 ms; keeps the longest time with none finishing
/// and, per fault, the time from the fault to the next build finishing.
struct Progress {
    longest_gap: std::sync::Mutex<Duration>,
    last_change: std::sync::Mutex<Instant>,
    done: AtomicBool,
}

impl Progress {
    fn watch(pool: PgPool) -> Arc<Self> {
        let p = Arc::new(Progress {
            longest_gap: std::sync::Mutex::new(Duration::ZERO),
            last_change: std::sync::Mutex::new(Instant::now()),
            done: AtomicBool::new(false),
        });
        let me = p.clone();
        let finished = move || {
            let pool = pool.clone();
            async move {
                let counts = db::builds::build_count_by_status(&pool)
                    .await
                    .unwrap_or_default();
                counts
                    .iter()
                    .filter(|(s, _)| s.is_terminal())
                    .map(|(_, n)| *n)
                    .sum::<i64>()
            }
        };
        tokio::spawn(async move {
            let mut seen = finished().await;
            while !me.done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = finished().await;
                if now != seen {
                    seen = now;
                    let mut last = me.last_change.lock().unwrap();
                    let mut gap = me.longest_gap.lock().unwrap();
                    *gap = (*gap).max(last.elapsed());
                    *last = Instant::now();
                }
            }
        });
        p
    }

    /// Waits for a build to finish after `since`; the time it took.
    async fn next_completion_after(&self, since: Instant) -> Duration {
        wait::until(
            "a build to finish after the fault",
            Duration::from_secs(120),
            || async { (*self.last_change.lock().unwrap() > since).then_some(()) },
        )
        .await;
        *self.last_change.lock().unwrap() - since
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_go_on_through_every_fault_of_every_replicated_part() {
    // Builds are kept coming all through the NATS faults, at most 20 waiting: paced by the
    // backlog, not the clock, so a slow machine gets fewer builds rather than a queue it cannot
    // drain in time. Then a batch of slower ones for the other faults. A soak asks for at least
    // `FREEAGENT_CLUSTER_BUILDS` before those (2000 at the ~2.7 builds/s measured here: ~12 min).
    const BACKLOG: i64 = 20;
    let at_least: usize = std::env::var("FREEAGENT_CLUSTER_BUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !is_root() {
        eprintln!("not root: no hosts can be made for the NATS nodes; nothing to check");
        return;
    }
    // Every process on a host of its own: the NATS nodes (so that a partition is a link cut),
    // then 2 storage services, 2 schedulers, 2 gateways and 10 workers.
    let hosts = Arc::new(Hosts::new(3 + 2 + 2 + 2 + 10));
    let places: Vec<NodePlace> = (0..3)
        .map(|i| NodePlace {
            host: hosts.addr(i).to_string(),
            netns: Some(hosts.namespace(i)),
        })
        .collect();
    let nats = TestNats::start_cluster_placed(&places).await;
    assert!(
        nats.url.contains(','),
        "every process gets the list of nodes"
    );
    let farm = Arc::new(
        Farm::start(FarmOpts {
            workers: 10,
            schedulers: 2,
            twice_behind_proxies: true,
            hosts: Some((hosts.clone(), 3)),
            private_postgres: true,
            postgres_standby: true,
            // The default lease: a frozen node is left after three unanswered pings (15 s for
            // a worker, 6 s for a service), inside it.
            lease: "30s",
            nats: Some((nats.clone(), 0)),
            extra_env: env(&[
                ("FREEAGENT_REDISPATCH_AFTER", "5s"),
                ("RUST_LOG", "info,async_nats=warn"),
                // Builds report each run to the test's listener on this machine's loopback.
                ("FREEAGENT_BUILD_NETWORK", "host"),
            ]),
            ..Default::default()
        })
        .await,
    );
    let js = async_nats::jetstream::new(nats.client().await);
    for (name, (replicas, _)) in STREAMS.iter().zip(replicas(&js).await) {
        assert_eq!(replicas, 3, "stream {name} on a cluster is kept on 3 nodes");
    }

    let runs = Runs::start_on(hosts.own_addr()).await;
    let dir = runs.recorder_after(&format!(
        "for i in $(seq 1 {LINES}); do echo \"line $i of $FREEAGENT_BUILD_ID\"; done\n"
    ));
    let progress = Progress::watch(farm.db.pool.clone());
    // Builds arrive all through the node faults, a few at a time.
    let submitting = Arc::new(AtomicBool::new(true));
    let submitter = {
        let (farm, path, on) = (farm.clone(), dir.path().to_owned(), submitting.clone());
        tokio::spawn(async move {
            let mut ids: Vec<String> = Vec::new();
            while on.load(Ordering::SeqCst) || ids.len() < at_least {
                let waiting = ids.len() as i64 - terminal_count(&farm).await;
                if waiting < BACKLOG {
                    let n = (BACKLOG - waiting).min(8) as usize;
                    ids.extend(farm.submit_many(&path, "android", n, 4, &[]).await);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            ids
        })
    };
    for node in 0..nats.nodes() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        nats.kill_node(node);
        let killed = Instant::now();
        let recovered = progress.next_completion_after(killed).await;
        tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed())).await;
        nats.start_node(node).await;
        let rejoined = wait::until(
            "every stream's replicas to catch up again",
            Duration::from_secs(60),
            || async {
                replicas(&js)
                    .await
                    .iter()
                    .all(|(_, current)| *current)
                    .then_some(Instant::now())
            },
        )
        .await;
        eprintln!(
            "node n{} SIGKILLed: next build finished after {recovered:?}; back and caught up {:?} after its restart",
            node + 1,
            rejoined - killed - Duration::from_secs(3).min(rejoined - killed)
        );
    }
    // A node frozen for 20 s: it answers neither its clients nor the other nodes.
    let pid = nix::unistd::Pid::from_raw(nats.node_pid(1).unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let cut = Instant::now();
    let recovered = progress.next_completion_after(cut).await;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    eprintln!("node n2 frozen for 20 s: next build finished after {recovered:?}");
    // Another partitioned for 20 s: its link down, its connections open and unanswered.
    hosts.cut(2);
    let cut = Instant::now();
    let recovered = progress.next_completion_after(cut).await;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;
    hosts.mend(2);
    eprintln!("node n3's host cut off for 20 s: next build finished after {recovered:?}");

    submitting.store(false, Ordering::SeqCst);
    let mut ids = submitter.await.unwrap();
    // One batch more, all in before the faults of the parts submissions go through: each
    // build 3 s long, so that builds are running through those faults however fast the
    // machine is.
    let slower = runs.recorder_after(&format!(
        "sleep 3; for i in $(seq 1 {LINES}); do echo \"line $i of $FREEAGENT_BUILD_ID\"; done\n"
    ));
    ids.extend(farm.submit_many(slower.path(), "android", 60, 4, &[]).await);
    let mut recovered = Vec::new();
    for name in ["gateway", "scheduler-0"] {
        let pid = nix::unistd::Pid::from_raw(farm.pid(name).unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let killed = Instant::now();
        recovered.push((name, progress.next_completion_after(killed).await));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (primary, standby) = (farm.pg.as_ref().unwrap(), farm.standby.as_ref().unwrap());
    primary.kill();
    let killed = Instant::now();
    // An HA tool takes a moment to decide; meanwhile the farm has no primary at all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    standby.promote();
    recovered.push((
        "postgres primary",
        progress.next_completion_after(killed).await,
    ));
    for (what, after) in recovered {
        eprintln!("{what} SIGKILLed: next build finished after {after:?}");
    }

    wait::until(
        "every build to finish",
        Duration::from_secs(300),
        || async { (terminal_count(&farm).await >= ids.len() as i64).then_some(()) },
    )
    .await;
    progress.done.store(true, Ordering::SeqCst);
    eprintln!(
        "{} builds through 3 NATS nodes, 2 gateways, 2 storage, 2 schedulers, 10 workers and a promoted standby; longest time with no build finishing: {:?}",
        ids.len(),
        *progress.longest_gap.lock().unwrap()
    );
    // Dispatches that only waited through the faults were not published again (ADR-0021):
    // before, each 5 s interval added a copy of every waiting build, and a run on CI ended with
    // 3,519 messages for under 240 builds and the workers still refusing copies.
    let published = js
        .get_stream(subjects::BUILDS_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    eprintln!(
        "BUILDS stored {published} dispatches for {} builds",
        ids.len()
    );
    assert!(
        published <= 2 * ids.len() as u64,
        "{published} dispatches for {} builds",
        ids.len()
    );
    assert_exactly_once(&farm, &ids, &runs).await;
    assert_whole_logs_and_artifacts(&farm, &ids, LINES).await;
}

/// With two of three nodes gone JetStream has no quorum: the services stay up but say they are
/// not ready, naming JetStream, and are ready again once the nodes are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_jetstream_quorum() {
    let nats = TestNats::start_cluster(3).await;
    let farm = Farm::start(FarmOpts {
        workers: 0,
        nats: Some((nats.clone(), 0)),
        ..Default::default()
    })
    .await;
    let status = |base: String| {
        let http = farm.http.clone();
        async move {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            let code = r.status().as_u16();
            Some((code, r.json::<serde_json::Value>().await.ok()?))
        }
    };
    nats.kill_node(1);
    nats.kill_node(2);
    let lost = Instant::now();
    let mut said = Vec::new();
    for base in [farm.gateway.clone(), farm.scheduler.clone()] {
        let body = wait::until(
            "readyz to say JetStream cannot serve",
            Duration::from_secs(30),
            || async {
                let (code, body) = status(base.clone()).await?;
                (code == 503).then_some(body)
            },
        )
        .await;
        let failed = &body["failed"];
        assert!(
            failed.get("jetstream").is_some() || failed.get("nats").is_some(),
            "{base}: {body}"
        );
        said.push(body);
    }
    eprintln!(
        "quorum lost -> not ready: {:?} (gateway, scheduler: {said:?})",
        lost.elapsed()
    );
    nats.start_node(1).await;
    nats.start_node(2).await;
    let back = Instant::now();
    for base in [farm.gateway.clone(), farm.scheduler.clone()] {
        wait::until(
            "readyz to say ready again",
            Duration::from_secs(60),
            || async {
                let (code, _) = status(base.clone()).await?;
                (code == 200).then_some(())
            },
        )
        .await;
    }
    eprintln!("quorum back -> ready: {:?}", back.elapsed());
}

/// A farm started on one-replica streams (as every release before this one made them on a
/// cluster) has them moved up to three at its next start, its queue consumers with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_made_with_one_replica_move_up_to_three() {
    let nats = TestNats::start_cluster(3).await;
    let js = async_nats::jetstream::new(nats.client().await);
    let one = StreamLimits {
        replicas: Some(1),
        ..Default::default()
    };
    nats::ensure_streams(&js, &one).await.unwrap();
    let queue = QueueName::parse("android").unwrap();
    nats::ensure_queue_consumer(&js, &queue).await.unwrap();
    assert!(replicas(&js).await.iter().all(|(r, _)| *r == 1));
    // The next start, with the defaults: three on a cluster.
    nats::ensure_streams(&js, &StreamLimits::default())
        .await
        .unwrap();
    let all = wait::until(
        "every stream on three nodes",
        Duration::from_secs(30),
        || async {
            let r = replicas(&js).await;
            r.iter()
                .all(|(n, current)| *n == 3 && *current)
                .then_some(r)
        },
    )
    .await;
    assert_eq!(all.len(), 3);
    // The consumer's group moves after its stream's (for a moment it lists the old peer too).
    let peers = wait::until(
        "the queue consumer on three nodes",
        Duration::from_secs(30),
        || async {
            let mut consumer = nats::queue_consumer(&js, &queue).await.ok()?;
            let info = consumer.info().await.ok()?;
            let cluster = info.cluster.as_ref()?;
            let mut peers: Vec<&str> = cluster.replicas.iter().map(|r| r.name.as_str()).collect();
            peers.extend(cluster.leader.as_deref());
            peers.sort_unstable();
            peers.dedup();
            let current = cluster.replicas.iter().all(|r| r.current && !r.offline);
            (peers.len() == 3 && current).then(|| peers.join(","))
        },
    )
    .await;
    eprintln!("queue consumer after the move: on {peers}");
}
