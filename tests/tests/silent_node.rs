//! A worker's connection leaves a NATS node that froze (SIGSTOP: its TCP connections stay open
//! and nothing answers) at its first unanswered request to the scheduler, not after three pings
//! 30 s apart (ADR-0023). The frozen node of `cluster.rs`, replayed on one connection on
//! loopback, so it needs no root.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::ids::WorkerId;
use freeagent_tests::freeagent_shared::nats::{self, Identity};
use freeagent_tests::freeagent_shared::scheduler_client::SchedulerClient;
use freeagent_tests::freeagent_shared::subjects::{self, Op};
use freeagent_tests::freeagent_shared::testing::TestNats;
use freeagent_tests::freeagent_shared::wire::{self, PresenceReply, PresenceRequest};
use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// The lease a running build keeps with its heartbeats: a worker must be off a frozen node
/// well within it, or its builds run twice.
const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_worker_leaves_a_frozen_node_at_its_first_unanswered_request() {
    let nats = TestNats::start_cluster(3).await;
    let servers: Vec<String> = nats.servers().iter().map(|s| s.to_string()).collect();
    // A stand-in scheduler on every node, so whichever two are left answer.
    let mut responders = vec![];
    for url in &servers {
        let mut one_node = nats.settings();
        one_node.url = url.clone();
        let c = nats::connect(
            &one_node,
            "scheduler",
            Identity::Settings,
            Some(subjects::SERVICE_INBOX_PREFIX.into()),
        )
        .await
        .unwrap();
        let mut sub = c
            .queue_subscribe(Op::Presence.wildcard(), "scheduler".into())
            .await
            .unwrap();
        c.flush().await.unwrap();
        responders.push(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let seen = PresenceReply::Seen {
                        drain: false,
                        nats_jwt: None,
                        awaiting_approval: false,
                    };
                    let _ = c.publish(reply, wire::encode(&seen).into()).await;
                }
            }
        }));
    }
    // The worker: the list of nodes and a worker's ping interval, so its pings alone would
    // take 90 s to give the node up.
    let mut settings = nats.settings();
    settings.ping_interval = nats::DEFAULT_PING_INTERVAL;
    assert!(nats::DEFAULT_PING_INTERVAL * 3 > LEASE);
    let worker = nats::connect(
        &settings,
        "worker",
        Identity::Settings,
        Some(subjects::SERVICE_INBOX_PREFIX.into()),
    )
    .await
    .unwrap();
    let scheduler = SchedulerClient::for_worker(worker.clone());
    let req = PresenceRequest {
        worker_id: WorkerId::new(),
        running: 0,
    };
    scheduler
        .presence(&req)
        .await
        .expect("answered before the freeze");

    let port = worker.server_info().port;
    let frozen = servers
        .iter()
        .position(|s| s.ends_with(&format!(":{port}")))
        .expect("the worker's node is one of the cluster's");
    let pid = Pid::from_raw(nats.node_pid(frozen).unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let froze = Instant::now();
    let mut unanswered = 0;
    let answered_after = loop {
        match scheduler.presence(&req).await {
            Ok(PresenceReply::Seen { .. }) => break froze.elapsed(),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(_) => unanswered += 1,
        }
        if froze.elapsed() > LEASE * 3 {
            kill(pid, Signal::SIGCONT).unwrap();
            panic!("still no reply {:?} after the node froze", froze.elapsed());
        }
        // A presence report every second (the worker's are 10 s apart).
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    kill(pid, Signal::SIGCONT).unwrap();
    eprintln!(
        "node n{} frozen: answered again after {answered_after:?} ({unanswered} reports unanswered)",
        frozen + 1
    );
    assert_ne!(
        worker.server_info().port,
        port,
        "the connection moved to another node"
    );
    assert!(
        answered_after < LEASE,
        "the worker left the frozen node after {answered_after:?}: not inside the {LEASE:?} lease"
    );
    for r in responders {
        r.abort();
    }
}
