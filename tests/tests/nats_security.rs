//! The bus as a trust boundary (issue 11), against a real nats-server in operator mode with the
//! configuration `freeagent nats-config` generates: who may connect, what a worker's credentials
//! reach, and the attacks that used to own the farm, replayed by a registered but hostile worker.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::env;
use freeagent_tests::freeagent_shared::capability::{Method, Signer};
use freeagent_tests::freeagent_shared::db;
use freeagent_tests::freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_tests::freeagent_shared::object_key::ObjectKey;
use freeagent_tests::freeagent_shared::status::{BuildStatus, Platform, QueueName};
use freeagent_tests::freeagent_shared::subjects::{self, Op};
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::freeagent_shared::wire::{self, *};
use freeagent_tests::{API_KEY, Farm, FarmOpts, SECRET, TestWorker, project};
use serde_json::Value;
use std::time::Duration;

async fn wait_status(farm: &Farm, id: &str, status: &str) {
    wait::until(
        &format!("build {id} to be {status}"),
        Duration::from_secs(60),
        || async { (farm.get_build(id).await["status"] == status).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_forged_connections_are_refused() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    // No credentials at all.
    let anonymous = async_nats::ConnectOptions::new()
        .connect(&farm.nats.url)
        .await;
    assert!(anonymous.is_err(), "an anonymous connection was accepted");
    // A well-formed user JWT signed by a key the farm's account does not list.
    let rogue_account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let minter = freeagent_tests::freeagent_shared::nats_auth::Minter::new(
        freeagent_tests::freeagent_shared::nats_auth::creds_account(
            &farm.nats.farms[0].gateway_creds,
        )
        .unwrap(),
        rogue_account,
    );
    let forged = minter
        .user_jwt(
            &freeagent_tests::freeagent_shared::nats_auth::Role::Scheduler,
            &user.public_key(),
            None,
        )
        .unwrap();
    let w = TestWorker {
        worker_id: WorkerId::new(),
        worker_token: String::new(),
        nats_jwt: Some(forged),
        nats_key: std::sync::Arc::new(user),
    };
    assert!(
        w.connect(&farm.nats.url).await.is_err(),
        "a forged JWT was accepted"
    );
    // A real worker's JWT presented with another key (a sniffed JWT is useless).
    let real = farm.register_worker("real", &["android"]).await;
    let thief = TestWorker {
        nats_key: std::sync::Arc::new(nkeys::KeyPair::new_user()),
        ..real.clone()
    };
    assert!(
        thief.connect(&farm.nats.url).await.is_err(),
        "a stolen JWT was accepted"
    );
    assert!(real.connect(&farm.nats.url).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_credentials_reach_only_its_own_subjects() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let a = farm.register_worker("a", &["android"]).await;
    let b = farm.register_worker("b", &["ios"]).await;
    let build = BuildId::new();
    let mut nc = a.connect_watched(&farm.nats.url).await;

    // Subscriptions outside its own inbox and cancel subjects.
    for subject in [
        "_INBOX.>".to_owned(),
        format!("{}.>", subjects::inbox_prefix(b.worker_id)),
        "scheduler.>".to_owned(),
        Op::Claim.wildcard(),
        "logs.>".to_owned(),
        subjects::logs_of(build),
        format!("cancel.{}.*", b.worker_id),
        "builds.dispatch.>".to_owned(),
        "events.>".to_owned(),
        ">".to_owned(),
    ] {
        let _sub = nc.client.subscribe(subject.clone()).await.unwrap();
        nc.refused(&format!("subscribe {subject}")).await;
    }
    // Joining the scheduler's queue group to answer claims.
    let _q = nc
        .client
        .queue_subscribe(Op::Claim.wildcard(), subjects::SCHEDULER_QUEUE_GROUP.into())
        .await
        .unwrap();
    nc.refused("queue group scheduler").await;

    // Publishing: cancels, another worker's operations and logs, the old unscoped subjects.
    for subject in [
        subjects::cancel(b.worker_id, build),
        subjects::cancel(a.worker_id, build),
        format!("builds.{build}.cancel"),
        Op::Claim.subject(b.worker_id),
        Op::Complete.subject(b.worker_id),
        Op::Presence.subject(b.worker_id),
        subjects::logs(build, b.worker_id),
        subjects::WAKE.to_owned(),
        subjects::CANCEL.to_owned(),
        subjects::REVOKED.to_owned(),
        subjects::build_events(build),
        subjects::dispatch(&QueueName::parse("android").unwrap()),
    ] {
        nc.client
            .publish(subject.clone(), bytes::Bytes::new())
            .await
            .unwrap();
        nc.refused(&format!("publish {subject}")).await;
    }
    // JetStream: no stream or consumer management, no reading, no other queue.
    for api in [
        "$JS.API.INFO".to_owned(),
        "$JS.API.STREAM.CREATE.EVIL".to_owned(),
        format!("$JS.API.STREAM.DELETE.{}", subjects::BUILDS_STREAM),
        format!("$JS.API.STREAM.PURGE.{}", subjects::LOGS_STREAM),
        format!("$JS.API.STREAM.INFO.{}", subjects::BUILDS_STREAM),
        format!("$JS.API.STREAM.MSG.GET.{}", subjects::LOGS_STREAM),
        format!("$JS.API.CONSUMER.CREATE.{}", subjects::LOGS_STREAM),
        format!(
            "$JS.API.CONSUMER.DELETE.{}.queue-android",
            subjects::BUILDS_STREAM
        ),
        format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.queue-ios",
            subjects::BUILDS_STREAM
        ),
        format!("$JS.ACK.{}.queue-ios.1.1.1.1.1", subjects::BUILDS_STREAM),
    ] {
        nc.client
            .publish(api.clone(), bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        nc.refused(&format!("publish {api}")).await;
    }
    // What it needs works: its own operations and its own queue's consumer.
    let reply: PresenceReply = farm
        .rpc(
            &a,
            Op::Presence,
            &PresenceRequest {
                worker_id: a.worker_id,
                running: 0,
            },
        )
        .await;
    assert!(matches!(reply, PresenceReply::Seen { .. }), "{reply:?}");
    let js = async_nats::jetstream::new(nc.client.clone());
    freeagent_tests::freeagent_shared::nats::queue_consumer(
        &js,
        &QueueName::parse("android").unwrap(),
    )
    .await
    .expect("a worker reads its own queue's consumer");
    nc.allowed("its own queue").await;

    // The farm is as it was: every stream still there, with its consumers.
    let admin = async_nats::jetstream::new(farm.nats.client().await);
    for s in [
        subjects::BUILDS_STREAM,
        subjects::LOGS_STREAM,
        subjects::EVENTS_STREAM,
    ] {
        admin.get_stream(s).await.expect("stream intact");
    }
    assert!(admin.get_stream("EVIL").await.is_err());
}

/// The attacks of issue 11, by a registered worker gone rogue, against a build another worker
/// runs: none changes the build, its log or its artifact.
/// The attack: one worker's login held 20,000 subscriptions. A worker connection may hold
/// 1,024 and publish messages of at most 256 KiB; honest work stays far below both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_login_has_bounded_subscriptions_and_message_size() {
    use freeagent_tests::freeagent_shared::nats_auth::permissions::{
        WORKER_MAX_PAYLOAD, WORKER_MAX_SUBSCRIPTIONS,
    };
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let a = farm.register_worker("a", &["android"]).await;
    let mut nc = a.connect_watched(&farm.nats.url).await;
    let mut subs = Vec::new();
    // async-nats holds one subscription of its own (the request inbox) once it makes a request;
    // fill the rest with subjects the worker may subscribe to.
    for i in 0..WORKER_MAX_SUBSCRIPTIONS - 1 {
        subs.push(
            nc.client
                .subscribe(format!("cancel.{}.{i}", a.worker_id))
                .await
                .unwrap(),
        );
    }
    nc.allowed("subscriptions within the limit").await;
    for i in 0..8 {
        subs.push(
            nc.client
                .subscribe(format!("cancel.{}.over-{i}", a.worker_id))
                .await
                .unwrap(),
        );
    }
    let e = nc.error("subscriptions past the limit").await;
    assert!(e.to_lowercase().contains("maximum subscriptions"), "{e}");
    drop(subs);

    let mut nc = a.connect_watched(&farm.nats.url).await;
    let fits = vec![b'x'; (WORKER_MAX_PAYLOAD / 2) as usize];
    nc.client
        .publish(Op::Log.subject(a.worker_id), fits.into())
        .await
        .unwrap();
    nc.allowed("a message within the limit").await;
    let too_big = vec![b'x'; (WORKER_MAX_PAYLOAD + 1) as usize];
    let _ = nc
        .client
        .publish(Op::Log.subject(a.worker_id), too_big.into())
        .await;
    let e = nc.error("a message past the limit").await;
    assert!(e.to_lowercase().contains("payload"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_worker_cannot_steal_forge_or_kill_another_workers_build() {
    let farm = Farm::start(FarmOpts {
        workers: 1,
        build_command: "sh build.sh".into(),
        ..Default::default()
    })
    .await;
    // The honest worker runs a build long enough for the attacks to happen mid-build.
    let dir = project("echo started\nsleep 6\necho honest > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let submitted = farm.submit_dir(dir.path(), "android").await;
    let id_text = submitted["id"].as_str().unwrap().to_owned();
    let id: BuildId = id_text.parse().unwrap();
    wait_status(&farm, &id_text, "building").await;
    let b = freeagent_tests::freeagent_shared::db::builds::build_get(&farm.db.pool, id)
        .await
        .unwrap()
        .unwrap();
    let holder = b.worker_id.unwrap();
    let attempt = b.attempt;

    let rogue = farm.register_worker("rogue", &["android"]).await;
    let mut nc = rogue.connect_watched(&farm.nats.url).await;
    // Kill it: the holder's cancel subject, the old one.
    for subject in [subjects::cancel(holder, id), format!("builds.{id}.cancel")] {
        nc.client.publish(subject.clone(), "".into()).await.unwrap();
        nc.refused(&subject).await;
    }
    // Forge its log: on the stream as the holder or as itself (refused by NATS: no worker
    // publishes on LOGS), and through the scheduler's log gate (not the holder: refused).
    let line = LogLine {
        build_id: id,
        attempt,
        seq: 1,
        timestamp: chrono::Utc::now(),
        level: LogLevel::Info,
        message: "FORGED LINE".into(),
        stream: None,
    };
    for subject in [
        subjects::logs(id, holder),
        subjects::logs(id, rogue.worker_id),
    ] {
        nc.client
            .publish(subject.clone(), wire::encode(&line).into())
            .await
            .unwrap();
        nc.refused(&format!("log on {subject}")).await;
    }
    let r: LogReply = farm
        .rpc(
            &rogue,
            Op::Log,
            &LogBatch {
                worker_id: rogue.worker_id,
                build_id: id,
                attempt,
                lines: vec![line.clone()],
            },
        )
        .await;
    assert!(
        matches!(
            r,
            LogReply::NotYours {
                reason: NotYours::Stale
            }
        ),
        "{r:?}"
    );
    // Complete it: on its own subject it is not the holder; naming the holder is refused.
    let key = ObjectKey::Result(id, attempt);
    let signer = Signer::new(SECRET);
    let forged = CompleteRequest {
        build_id: id,
        attempt,
        worker_id: rogue.worker_id,
        result: StoredObject {
            key: key.to_string(),
            size: 6,
            sha256: "ab".repeat(32),
            receipt: signer.receipt(&key, 6, &"ab".repeat(32)),
        },
    };
    let r: FinishReply = farm.rpc(&rogue, Op::Complete, &forged).await;
    assert!(
        matches!(
            r,
            FinishReply::NotYours {
                reason: NotYours::Stale,
                ..
            }
        ),
        "{r:?}"
    );
    let impostor = CompleteRequest {
        worker_id: holder,
        ..forged.clone()
    };
    let r: FinishReply = farm.rpc(&rogue, Op::Complete, &impostor).await;
    assert!(matches!(r, FinishReply::Error { .. }), "{r:?}");
    // Heartbeat or claim it: not the holder.
    let r: HeartbeatReply = farm
        .rpc(
            &rogue,
            Op::Heartbeat,
            &HeartbeatRequest {
                build_id: id,
                attempt,
                worker_id: rogue.worker_id,
                progress: None,
            },
        )
        .await;
    assert!(matches!(r, HeartbeatReply::Stop { .. }), "{r:?}");

    // The build runs to the end, untouched.
    let done = farm.wait_terminal(&id_text, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let logs = farm.logs(&id_text).await;
    assert!(logs.iter().any(|l| l == "started"), "{logs:?}");
    assert!(
        !logs.iter().any(|l| l.contains("FORGED")),
        "a forged line reached the log: {logs:?}"
    );

    // A replayed result PUT (the capability of this attempt) is refused and the artifact kept.
    let download = farm
        .http
        .get(format!("{}/api/builds/{id}/download", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    let recorded = download
        .headers()
        .get("x-checksum-sha256")
        .map(|v| v.to_str().unwrap().to_owned());
    let original = download.bytes().await.unwrap();
    let put = signer.url(
        &farm.storage,
        Method::Put,
        &key,
        chrono::Utc::now().timestamp() + 600,
        1 << 20,
    );
    let replay = farm
        .http
        .put(&put)
        .body("forged artifact")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 409, "a replayed result PUT was accepted");
    let again = farm
        .http
        .get(format!("{}/api/builds/{id}/download", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again
            .headers()
            .get("x-checksum-sha256")
            .map(|v| v.to_str().unwrap().to_owned()),
        recorded
    );
    let bytes = again.bytes().await.unwrap();
    assert_eq!(bytes, original);
    assert_eq!(&bytes[..], b"honest\n");
    use sha2::Digest;
    assert_eq!(
        Some(hex::encode(sha2::Sha256::digest(&bytes))),
        recorded,
        "the download does not match its recorded SHA-256"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_live_minutes_and_end_with_the_lease() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        lease: "8s",
        ..Default::default()
    })
    .await;
    let w = farm.register_worker("w", &["android"]).await;
    let dir = project("true\n");
    let id_text = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id: BuildId = id_text.parse().unwrap();
    wait::until("dispatch", Duration::from_secs(20), || async {
        freeagent_tests::freeagent_shared::db::builds::build_get(&farm.db.pool, id)
            .await
            .unwrap()
            .filter(|b| b.dispatched_at.is_some())
    })
    .await;
    let ClaimReply::Granted(grant) = farm
        .rpc::<_, ClaimReply>(
            &w,
            Op::Claim,
            &ClaimRequest {
                build_id: id,
                attempt: Attempt::new(1).unwrap(),
                worker_id: w.worker_id,
            },
        )
        .await
    else {
        panic!("the worker should win the claim")
    };
    let exp = |url: &str| -> i64 {
        url.split(['?', '&'])
            .find_map(|p| p.strip_prefix("exp="))
            .unwrap()
            .parse()
            .unwrap()
    };
    // Never past the lease, and minutes at most.
    for url in [&grant.source_url, &grant.result_url] {
        assert!(exp(url) <= grant.lease_expires_at.timestamp(), "{url}");
        assert!(
            exp(url) <= chrono::Utc::now().timestamp() + 15 * 60,
            "{url}"
        );
    }
    let ok = farm.http.get(&grant.source_url).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    // A heartbeat renews the lease and hands a fresh upload capability.
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
    let HeartbeatReply::Renewed {
        lease_expires_at,
        result_url: Some(fresh),
    } = hb
    else {
        panic!("expected a renewal with a result URL: {hb:?}")
    };
    assert!(exp(&fresh) <= lease_expires_at.timestamp());
    // Once the lease has ended the capability no longer works. (The lease is long enough for
    // the claim and the heartbeat on a loaded machine; the wait is for both expiries to pass.)
    let last = exp(&grant.source_url).max(exp(&fresh));
    wait::until(
        "both capabilities to expire",
        Duration::from_secs(30),
        || async { (chrono::Utc::now().timestamp() > last).then_some(()) },
    )
    .await;
    let late = farm.http.get(&grant.source_url).send().await.unwrap();
    assert_eq!(late.status(), 403, "a capability outlived its lease");
    let late_put = farm.http.put(&fresh).body("late").send().await.unwrap();
    assert_eq!(
        late_put.status(),
        403,
        "an upload capability outlived its lease"
    );
}

/// A worker's source and certs URLs name their attempt: storage serves them only while that
/// attempt runs. Before, they worked until their expiry (up to the lease, 30 s by default) after
/// the build had ended, so a worker that finished or lost a build could still read its certs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_certs_urls_die_with_their_attempt() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        lease: "300s",
        ..Default::default()
    })
    .await;
    let w = farm.register_worker("w", &["android"]).await;
    let dir = project("true\n");
    let grant_of = |id: BuildId, attempt: i32| {
        let (farm, w) = (&farm, &w);
        async move {
            wait::until("dispatch", Duration::from_secs(30), || async {
                freeagent_tests::freeagent_shared::db::builds::build_get(&farm.db.pool, id)
                    .await
                    .unwrap()
                    .filter(|b| b.dispatched_at.is_some() && b.status == BuildStatus::Pending)
            })
            .await;
            match farm
                .rpc::<_, ClaimReply>(
                    w,
                    Op::Claim,
                    &ClaimRequest {
                        build_id: id,
                        attempt: Attempt::new(attempt).unwrap(),
                        worker_id: w.worker_id,
                    },
                )
                .await
            {
                ClaimReply::Granted(g) => g,
                other => panic!("the worker should win the claim: {other:?}"),
            }
        }
    };
    let status = |url: String| {
        let http = farm.http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };

    // A build that ends: its URLs work while it runs and are refused (410) once it has failed,
    // long before their expiry.
    let id: BuildId = farm
        .submit_dir_with_certs(dir.path(), "android", Some(b"certs bytes"))
        .await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grant = grant_of(id, 1).await;
    let certs_url = grant.certs_url.clone().expect("a certs URL");
    assert!(grant.source_url.contains("&att=1&"), "{}", grant.source_url);
    assert_eq!(status(grant.source_url.clone()).await, 200);
    assert_eq!(status(certs_url.clone()).await, 200);
    let failed: FinishReply = farm
        .rpc(
            &w,
            Op::Fail,
            &FailRequest {
                build_id: id,
                attempt: Attempt::new(1).unwrap(),
                worker_id: w.worker_id,
                error: "done with it".into(),
            },
        )
        .await;
    assert!(matches!(failed, FinishReply::Recorded { .. }), "{failed:?}");
    assert_eq!(status(grant.source_url.clone()).await, 410);
    assert_eq!(status(certs_url.clone()).await, 410);
    // The attempt cannot be dropped from the URL, nor moved to another attempt or build.
    for forged in [
        grant.source_url.replace("&att=1", ""),
        grant.source_url.replace("&att=1", "&att=2"),
        grant.source_url.replace(&format!("&bld={id}"), ""),
    ] {
        assert_eq!(status(forged.clone()).await, 403, "{forged}");
    }
    // The submitter's own download of the build's source is not bound to an attempt.
    let own = farm
        .http
        .get(format!("{}/api/builds/{id}/download/source", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_ne!(
        own.status(),
        410,
        "the submitter's download is not an attempt's"
    );

    // A retry reads its original's objects: its URLs are bound to the retry's own attempt, and
    // the original's dead URLs stay dead.
    let retried = farm
        .http
        .post(format!("{}/api/builds/{id}/retry", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert!(retried.status().is_success(), "{}", retried.status());
    let retry: BuildId = retried.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let again = grant_of(retry, 1).await;
    assert!(
        again.source_url.contains(&format!("&bld={retry}&att=1&")),
        "{}",
        again.source_url
    );
    assert_eq!(status(again.source_url.clone()).await, 200);
    assert_eq!(status(grant.source_url.clone()).await, 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_for_an_unknown_build_is_terminated_and_the_next_build_runs() {
    let farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    // A dispatch this farm never made (a restored database, a foreign message).
    let admin = farm.nats.client().await;
    let js = async_nats::jetstream::new(admin.clone());
    let unknown = Dispatch {
        build_id: BuildId::new(),
        attempt: Attempt::new(1).unwrap(),
        platform: Platform::Android,
        queue: QueueName::parse("android").unwrap(),
    };
    js.publish(
        subjects::dispatch(&unknown.queue),
        wire::encode(&unknown).into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let dir = project("echo ok > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed");
    // The unknown dispatch is gone from the work queue, not waiting to be redelivered.
    wait::until(
        "the void dispatch to be removed",
        Duration::from_secs(10),
        || async {
            let mut stream = js.get_stream(subjects::BUILDS_STREAM).await.unwrap();
            (stream.info().await.unwrap().state.messages == 0).then_some(())
        },
    )
    .await;
    let log = farm.log_of("worker-0");
    assert!(log.contains(&unknown.build_id.to_string()), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistering_a_worker_revokes_its_nats_credentials() {
    let farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    let w = farm.register_worker("leaving", &["android"]).await;
    let live = w
        .connect(&farm.nats.url)
        .await
        .expect("connects while registered");
    let r = farm
        .http
        .post(format!("{}/api/workers/unregister", farm.gateway))
        .header("x-worker-token", &w.worker_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    // The scheduler pushes the revocation: new connections are refused, the live one is closed.
    wait::until(
        "the credentials to be refused",
        Duration::from_secs(20),
        || async { w.connect(&farm.nats.url).await.is_err().then_some(()) },
    )
    .await;
    wait::until(
        "the live connection to close",
        Duration::from_secs(20),
        || async {
            (live.connection_state() != async_nats::connection::State::Connected).then_some(())
        },
    )
    .await;
    // Its operations are refused too (as the gateway would send them for it).
    let reply: PresenceReply = farm
        .nats
        .client()
        .await
        .request(
            Op::Presence.subject(w.worker_id),
            wire::encode(&PresenceRequest {
                worker_id: w.worker_id,
                running: 0,
            })
            .into(),
        )
        .await
        .map(|m| wire::decode(&m.payload).unwrap())
        .unwrap();
    assert!(
        matches!(
            reply,
            PresenceReply::NotYours {
                reason: NotYours::Unauthorized
            }
        ),
        "{reply:?}"
    );
    // Registering again gives new credentials that work.
    let back = farm.register_worker("back", &["android"]).await;
    assert!(back.connect(&farm.nats.url).await.is_ok());

    // A real worker whose registration an operator revokes stops, saying why.
    let real = wait::until(
        "the worker process to register",
        Duration::from_secs(30),
        || async {
            let workers: Value = farm
                .http
                .get(format!("{}/api/workers", farm.gateway))
                .header("x-api-key", API_KEY)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            workers["workers"]
                .as_array()?
                .iter()
                .find(|w| w["name"] == "worker-0")
                .and_then(|w| w["id"].as_str().map(str::to_owned))
        },
    )
    .await;
    // Revoked before its first NATS connection, a worker stops with another message (the
    // server refused its credentials at start): wait until it has connected.
    wait::until(
        "the worker process to connect to NATS",
        Duration::from_secs(30),
        || async {
            farm.log_of("worker-0")
                .contains("connected successfully")
                .then_some(())
        },
    )
    .await;
    let r = farm
        .http
        .post(format!("{}/api/workers/unregister", farm.gateway))
        .header("x-api-key", API_KEY)
        .json(&serde_json::json!({ "worker_id": real }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // At once when all goes well (under a second here). The slowest path is documented
    // (docs/security.md): the scheduler's wake-up lost, so the push waits for its 15 s tick, and
    // the server's one "revoked" message lost, so the worker stops after 10 s of refused
    // reconnects (each up to 4 s apart) — about 30 s, more on a loaded machine. CI once went
    // past 30 s. On failure the farm prints every process's log tail, which says the path taken.
    wait::until(
        "the revoked worker to stop",
        Duration::from_secs(60),
        || async {
            farm.log_of("worker-0")
                .contains("no longer accepts this worker")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_farms_on_one_server_never_see_each_others_work() {
    let nats = freeagent_tests::freeagent_shared::testing::TestNats::start_farms(2).await;
    let opts = |farm: usize| FarmOpts {
        workers: 20,
        nats: Some((nats.clone(), farm)),
        extra_env: env(&[("FREEAGENT_PRESENCE_INTERVAL", "2s")]),
        ..Default::default()
    };
    let a = Farm::start(opts(0)).await;
    let b = Farm::start(opts(1)).await;
    let dir = project("echo \"$FREEAGENT_BUILD_ID\" > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let (ids_a, ids_b) = tokio::join!(
        a.submit_many(dir.path(), "android", 200, 8, &[]),
        b.submit_many(dir.path(), "android", 200, 8, &[]),
    );
    for (farm, ids, other) in [(&a, &ids_a, &b), (&b, &ids_b, &a)] {
        for id in ids {
            let done = farm.wait_terminal(id, Duration::from_secs(300)).await;
            assert_eq!(done["status"], "completed", "{done}");
            // The other farm does not know it.
            let r = other
                .http
                .get(format!("{}/api/builds/{id}", other.gateway))
                .header("x-api-key", API_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404);
        }
        // Every build of this farm ran on one of this farm's workers.
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
        let mine: std::collections::HashSet<String> = workers
            .as_array()
            .or_else(|| workers["workers"].as_array())
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect();
        for id in ids {
            let b = farm.get_build(id).await;
            let w = b["worker_id"].as_str().unwrap_or_default().to_owned();
            assert!(mine.contains(&w), "build {id} ran on a stranger {w}");
        }
    }
    let _ = BuildStatus::Completed;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_credentials_are_renewed_before_they_expire() {
    // Credentials that live 8 s, renewed at half-life by presence replies (every 500 ms): the
    // worker keeps taking builds long after its first JWT expired.
    let farm = Farm::start(FarmOpts {
        workers: 1,
        extra_env: env(&[("FREEAGENT_WORKER_NATS_TTL", "8s")]),
        ..Default::default()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let dir = project("echo renewed > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        farm.log_of("worker-0").contains("NATS credentials renewed"),
        "no renewal was logged"
    );
}

/// Issue 22, item 7: one worker's login opened 1,000 connections. NATS user JWTs have no
/// connection limit, so the scheduler counts each worker's connections (the servers' connect
/// events, through the system account, and a full count every minute) and revokes a worker at
/// the connect that takes it over `FREEAGENT_WORKER_MAX_CONNECTIONS`: its connections are
/// closed, and the farm's other workers go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holding_too_many_connections_is_thrown_out() {
    let farm = Farm::start(FarmOpts {
        scheduler_env: vec![("FREEAGENT_WORKER_MAX_CONNECTIONS".into(), "3".into())],
        ..Default::default()
    })
    .await;
    let greedy = farm.register_worker("greedy", &["android"]).await;
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(farm.worker_nats(&greedy).await);
    }
    // At the limit: left alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w = db::workers::worker_get(&farm.db.pool, greedy.worker_id)
        .await
        .unwrap()
        .unwrap();
    assert!(w.revoked_at.is_none(), "revoked at the limit");
    // One more: thrown out, every connection closed.
    conns.push(farm.worker_nats(&greedy).await);
    wait::until(
        "the greedy worker's revocation",
        Duration::from_secs(20),
        || async {
            db::workers::worker_get(&farm.db.pool, greedy.worker_id)
                .await
                .unwrap()
                .and_then(|w| w.revoked_at)
        },
    )
    .await;
    wait::until(
        "its connections to close",
        Duration::from_secs(20),
        || async {
            conns
                .iter()
                .all(|c| c.connection_state() != async_nats::connection::State::Connected)
                .then_some(())
        },
    )
    .await;
    let metrics = farm.metrics(&farm.scheduler).await.unwrap_or_default();
    assert_eq!(
        freeagent_tests::metric_value(
            &metrics,
            "freeagent_workers_revoked_total{reason=\"connections\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // The honest worker, one connection, keeps building.
    let dir = project("echo ok > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
}
