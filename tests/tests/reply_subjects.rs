//! A worker chooses the reply subject of everything it sends: replayed attacks that try to make
//! the scheduler or JetStream publish there on its behalf (a cancel of another worker's build,
//! a purge of a stream), against the real binaries on a nats-server in operator mode. Workers
//! live in an account of their own (ADR-0016); the scheduler's own check is replayed on a
//! set-up written before that, where it is what stands between a worker and the streams.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::ids::BuildId;
use freeagent_tests::freeagent_shared::subjects::{self, Op};
use freeagent_tests::freeagent_shared::testing::TestNats;
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::freeagent_shared::wire::{self, LogBatch, LogLevel, LogLine, PresenceRequest};
use freeagent_tests::{Farm, FarmOpts, TestWorker, metric_value, project};
use futures::StreamExt;
use std::path::PathBuf;
use std::time::Duration;

/// A build that runs until the test creates `release` in its working directory, so it is
/// certainly running while the attacks land, however slow the machine.
const HELD_BUILD: &str = "echo \"cwd=$PWD\"\n\
    while [ ! -e release ]; do sleep 0.1; done\n\
    echo ok > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n";

/// Submits [`HELD_BUILD`] and waits until it runs: its id, its worker and its directory.
async fn held_build(farm: &Farm) -> (String, BuildId, String, PathBuf) {
    let dir = project(HELD_BUILD);
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cwd = wait::until("the build to run", Duration::from_secs(60), || async {
        farm.logs(&id)
            .await
            .iter()
            .find_map(|l| l.strip_prefix("cwd=").map(PathBuf::from))
    })
    .await;
    let b = farm.get_build(&id).await;
    let worker = b["worker_id"].as_str().unwrap().to_owned();
    (id.clone(), id.parse().unwrap(), worker, cwd)
}

async fn stream_messages(farm: &Farm, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(farm.service_nats().await);
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

async fn refused_replies(farm: &Farm) -> f64 {
    let m = farm.metrics(&farm.scheduler).await.unwrap_or_default();
    metric_value(&m, "freeagent_scheduler_replies_refused_total").unwrap_or(0.0)
}

/// A presence report (any operation would do) whose reply subject is `reply`.
async fn presence_replying_to(attacker: &TestWorker, client: &async_nats::Client, reply: &str) {
    let body = wire::encode(&PresenceRequest {
        worker_id: attacker.worker_id,
        running: 0,
    });
    client
        .publish_with_reply(
            Op::Presence.subject(attacker.worker_id),
            reply.to_owned(),
            body.into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
}

/// On a set-up without a workers account (an older `nats-config`), workers share the farm's
/// account: the scheduler's own reply check is then what keeps them off the streams, and such a
/// farm still runs builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_answers_only_into_the_senders_own_inbox() {
    let farm = Farm::start(FarmOpts {
        nats: Some((TestNats::start_without_workers_account().await, 0)),
        ..Default::default()
    })
    .await;
    assert!(
        farm.log_of("gateway")
            .contains("FREEAGENT_NATS_WORKERS_SIGNING_KEY is not set"),
        "an old set-up is told to run nats-config again"
    );
    let (id, build, victim, cwd) = held_build(&farm).await;
    let logs_before = stream_messages(&farm, subjects::LOGS_STREAM).await;
    let attacker = farm.register_worker("attacker", &["android"]).await;
    let nc = farm.worker_nats(&attacker).await;

    // The scheduler as a deputy: its reply would be a cancel of the victim's build, a purge of
    // every live log, of every queued dispatch, of every event.
    let cancel = format!("cancel.{victim}.{build}");
    for reply in [
        cancel.as_str(),
        "$JS.API.STREAM.PURGE.LOGS",
        "$JS.API.STREAM.PURGE.BUILDS",
        "$JS.API.STREAM.PURGE.EVENTS",
    ] {
        presence_replying_to(&attacker, &nc, reply).await;
    }
    wait::until(
        "the scheduler to refuse four replies",
        Duration::from_secs(30),
        || async { (refused_replies(&farm).await >= 4.0).then_some(()) },
    )
    .await;
    assert!(
        farm.log_of("scheduler-0")
            .contains("asked for its reply outside its own inbox"),
        "the refusal is logged"
    );
    // Its own inbox still gets answers.
    let reply = nc
        .request(
            Op::Presence.subject(attacker.worker_id),
            wire::encode(&PresenceRequest {
                worker_id: attacker.worker_id,
                running: 0,
            })
            .into(),
        )
        .await;
    assert!(reply.is_ok(), "{reply:?}");

    // Nothing was erased, and the victim's build runs on to completion, in its first attempt.
    assert!(stream_messages(&farm, subjects::LOGS_STREAM).await >= logs_before);
    assert_eq!(farm.get_build(&id).await["status"], "building");
    std::fs::write(cwd.join("release"), "").unwrap();
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempt"], 1, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_sent_to_a_cancel_subject_cancels_nothing() {
    let farm = Farm::start(FarmOpts::default()).await;
    let (id, build, victim, cwd) = held_build(&farm).await;
    let attacker = farm.register_worker("attacker", &["android"]).await;
    let nc = farm.worker_nats(&attacker).await;
    let cancel = format!("cancel.{victim}.{build}");

    // JetStream answers a pull to the reply subject its sender chose: here the victim's cancel
    // subject. The victim gets a message there (a dispatch, or with nothing queued a status),
    // and must not take it as a cancel. (Log lines were the other way to aim a JetStream
    // acknowledgement there; workers no longer publish on LOGS, the scheduler stores them.)
    nc.publish_with_reply(
        format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.queue-android",
            subjects::BUILDS_STREAM
        ),
        cancel.clone(),
        r#"{"batch":1,"no_wait":true}"#.into(),
    )
    .await
    .unwrap();
    nc.flush().await.unwrap();
    wait::until(
        "the victim to ignore the acknowledgement",
        Duration::from_secs(30),
        || async {
            farm.log_of("worker-0")
                .contains("ignoring a message on the cancel subject")
                .then_some(())
        },
    )
    .await;
    assert_eq!(farm.get_build(&id).await["status"], "building");
    std::fs::write(cwd.join("release"), "").unwrap();
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempt"], 1, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_the_api_still_stops_the_build() {
    let farm = Farm::start(FarmOpts::default()).await;
    let (id, _, _, _) = held_build(&farm).await;
    let r = farm
        .http
        .post(format!("{}/api/builds/{id}/cancel", farm.gateway))
        .header("x-api-key", freeagent_tests::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait::until(
        "the worker to stop the build",
        Duration::from_secs(30),
        || async {
            farm.log_of("worker-0")
                .contains("build cancelled")
                .then_some(())
        },
    )
    .await;
    assert_eq!(farm.get_build(&id).await["status"], "cancelled");
}

/// How many messages `stream` holds, and the sequence of its first (a purge moves it past the
/// last, even when later messages refill the stream).
async fn stream_state(farm: &Farm, stream: &str) -> (u64, u64) {
    let js = async_nats::jetstream::new(farm.service_nats().await);
    let mut stream = js.get_stream(stream).await.unwrap();
    let state = &stream.info().await.unwrap().state;
    (state.messages, state.first_sequence)
}

/// Waits until `stream` holds at least one message; returns its state.
async fn holds_messages(farm: &Farm, stream: &str) -> (u64, u64) {
    wait::until(
        &format!("{stream} to hold a message"),
        Duration::from_secs(30),
        || async {
            let state = stream_state(farm, stream).await;
            (state.0 > 0).then_some(state)
        },
    )
    .await
}

/// The attack that stayed open while workers shared the farm's account: JetStream answers a
/// log line, a pull and an ack at the reply subject the worker chose, with the account's rights,
/// and nats-server acts on an answer published to its own API. With a worker's own credentials,
/// every answer is aimed at a purge of the farm's streams, and at another worker's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstreams_answers_never_reach_the_farms_streams() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let attacker = farm.register_worker("attacker", &["android"]).await;
    let victim = farm.register_worker("victim", &["android"]).await;
    // A queued dispatch (nobody runs it), its log and its events.
    let dir = project(HELD_BUILD);
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let build: BuildId = id.parse().unwrap();
    let mut before = Vec::new();
    for stream in [
        subjects::BUILDS_STREAM,
        subjects::LOGS_STREAM,
        subjects::EVENTS_STREAM,
    ] {
        before.push((stream, holds_messages(&farm, stream).await));
    }
    let nc = farm.worker_nats(&attacker).await;
    let purge = |stream: &str| format!("$JS.API.STREAM.PURGE.{stream}");
    let line = wire::encode(&LogBatch {
        worker_id: attacker.worker_id,
        build_id: build,
        attempt: freeagent_tests::freeagent_shared::ids::Attempt::new(1).unwrap(),
        lines: vec![LogLine {
            build_id: build,
            attempt: freeagent_tests::freeagent_shared::ids::Attempt::new(1).unwrap(),
            seq: 1,
            timestamp: chrono::Utc::now(),
            level: LogLevel::Info,
            message: "a line whose acknowledgement is a purge".into(),
            stream: None,
        }],
    });
    // Log lines go to the scheduler's log gate, which stores them and answers.
    let own_log = Op::Log.subject(attacker.worker_id);

    // An ack with a reply subject: take the dispatch (into its own inbox, as a worker does),
    // then hand it back with a negative acknowledgement whose answer is a purge.
    let js = async_nats::jetstream::new(nc.clone());
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("queue-android", subjects::BUILDS_STREAM)
        .await
        .unwrap();
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let pulled = batch.next().await.expect("a dispatch").unwrap();
    let ack = pulled
        .reply
        .clone()
        .expect("a dispatch with its ack subject");
    assert!(ack.as_str().starts_with("$JS.ACK.BUILDS."), "{pulled:?}");
    nc.publish_with_reply(ack, purge("EVENTS"), "-NAK".into())
        .await
        .unwrap();
    // Log lines: the gate's answer goes to the reply subject. One of them aims it at the
    // victim's log subject, where it would be stored as the victim's line.
    let victims_log = subjects::logs(build, victim.worker_id);
    for reply in [
        purge("EVENTS"),
        purge("LOGS"),
        purge("BUILDS"),
        victims_log.clone(),
    ] {
        nc.publish_with_reply(own_log.clone(), reply, line.clone().into())
            .await
            .unwrap();
    }
    // The scheduler as a deputy: it answers every worker operation.
    for stream in ["EVENTS", "LOGS", "BUILDS"] {
        presence_replying_to(&attacker, &nc, &purge(stream)).await;
    }
    // A pull whose dispatch (or, with nothing queued, whose 404 status) is a purge of BUILDS.
    nc.publish_with_reply(
        format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.queue-android",
            subjects::BUILDS_STREAM
        ),
        purge("BUILDS"),
        r#"{"batch":1,"no_wait":true}"#.into(),
    )
    .await
    .unwrap();
    nc.flush().await.unwrap();
    // Whatever the server does with the answers, it has done it by now.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Nobody acks in this test and nothing expires: every stream still starts where it did.
    let mut harmed = Vec::new();
    for (stream, (n, first)) in before {
        let (now, now_first) = stream_state(&farm, stream).await;
        if now < n || now_first != first {
            harmed.push(format!(
                "{stream} held {n} messages from sequence {first}, now {now} from {now_first}"
            ));
        }
    }
    let logs = async_nats::jetstream::new(farm.service_nats().await)
        .get_stream(subjects::LOGS_STREAM)
        .await
        .unwrap();
    if logs
        .get_last_raw_message_by_subject(&victims_log)
        .await
        .is_ok()
    {
        harmed.push("an acknowledgement was stored as the victim's log line".into());
    }
    assert!(harmed.is_empty(), "{harmed:?}");
    // The scheduler still answers this worker at its own inbox.
    let reply = nc
        .request(
            Op::Presence.subject(attacker.worker_id),
            wire::encode(&PresenceRequest {
                worker_id: attacker.worker_id,
                running: 0,
            })
            .into(),
        )
        .await;
    assert!(reply.is_ok(), "{reply:?}");
}
