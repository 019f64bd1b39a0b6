//! The scheduler against real Postgres and a real nats-server: dispatch, the claim race, stale
//! and replayed reports, and lost leases. Workers are simulated with plain NATS requests.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_scheduler::{App, SchedulerConfig};
use freeagent_shared::capability::Signer;
use freeagent_shared::db::{self, Pool};
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::status::{BuildStatus, Platform};
use freeagent_shared::subjects::Op;
use freeagent_shared::testing::factory::TestWorker;
use freeagent_shared::testing::{TestDb, TestNats, factory, wait};
use freeagent_shared::wire::*;
use freeagent_shared::{subjects, wire};
use futures::StreamExt;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "scheduler-test-secret-scheduler-test";

struct Sched {
    db: TestDb,
    _nats: TestNats,
    client: async_nats::Client,
    signer: Signer,
    _stop: tokio_util::sync::DropGuard,
}

async fn start(lease: Duration) -> Sched {
    start_with(lease, 1, |_| {}).await
}

/// `replicas` schedulers share one database and one NATS server, as in production.
async fn start_with(
    lease: Duration,
    replicas: usize,
    tune: impl Fn(&mut SchedulerConfig),
) -> Sched {
    start_on(TestDb::new().await, lease, replicas, tune).await
}

/// As `start_with`, on a database the test has already filled.
async fn start_on(
    db: TestDb,
    lease: Duration,
    replicas: usize,
    tune: impl Fn(&mut SchedulerConfig),
) -> Sched {
    freeagent_shared::testing::init_test_log();
    let nats = TestNats::start().await;
    let stop = CancellationToken::new();
    for _ in 0..replicas {
        let mut config = SchedulerConfig::for_urls(
            &db.url,
            nats.service_settings(0, "scheduler"),
            "http://127.0.0.1:9",
            SECRET,
        );
        config.database_pool = freeagent_shared::testing::TEST_DATABASE_POOL;
        config.lease = lease;
        config.tick = Duration::from_millis(100);
        config.retry_backoff = Duration::ZERO;
        tune(&mut config);
        let app = App::build(config).await.expect("scheduler starts");
        tokio::spawn(app.run_until(stop.clone()));
    }
    let client = nats.client().await;
    Sched {
        db,
        _nats: nats,
        client,
        signer: Signer::new(SECRET),
        _stop: stop.drop_guard(),
    }
}

impl Sched {
    /// As the worker the request names would send it (the test client may publish as anyone).
    async fn request<Req: serde::Serialize + FromWorker, Rep: serde::de::DeserializeOwned>(
        &self,
        op: Op,
        req: &Req,
    ) -> Rep {
        let msg = self
            .client
            .request(op.subject(req.worker_id()), wire::encode(req).into())
            .await
            .expect("scheduler answers");
        wire::decode(&msg.payload).expect("readable reply")
    }

    async fn claim(&self, w: &TestWorker, id: BuildId, attempt: Attempt) -> ClaimReply {
        self.request(
            Op::Claim,
            &ClaimRequest {
                build_id: id,
                attempt,
                worker_id: w.worker_id,
            },
        )
        .await
    }

    /// A claim as a worker sends it under load: `None` when no answer came in time (a busy
    /// scheduler may drop a request; the worker asks again).
    async fn try_claim(&self, w: &TestWorker, id: BuildId) -> Option<ClaimReply> {
        let req = ClaimRequest {
            build_id: id,
            attempt: a(1),
            worker_id: w.worker_id,
        };
        let msg = self
            .client
            .request(Op::Claim.subject(w.worker_id), wire::encode(&req).into())
            .await
            .ok()?;
        Some(wire::decode(&msg.payload).expect("readable reply"))
    }

    fn result(&self, id: BuildId, attempt: Attempt) -> StoredObject {
        let key = ObjectKey::Result(id, attempt);
        let sha = "ab".repeat(32);
        StoredObject {
            key: key.to_string(),
            size: 42,
            sha256: sha.clone(),
            receipt: self.signer.receipt(&key, 42, &sha),
        }
    }

    async fn complete(&self, w: &TestWorker, id: BuildId, attempt: Attempt) -> FinishReply {
        let req = CompleteRequest {
            build_id: id,
            attempt,
            worker_id: w.worker_id,
            result: self.result(id, attempt),
        };
        self.request(Op::Complete, &req).await
    }
}

async fn get(pool: &Pool, id: BuildId) -> db::builds::Build {
    db::builds::build_get(pool, id).await.unwrap().unwrap()
}

async fn wait_dispatched(pool: &Pool, ids: &[BuildId], attempt: i32) {
    wait::until("dispatch", Duration::from_secs(20), || async {
        for id in ids {
            let b = get(pool, *id).await;
            if b.attempt.get() < attempt || b.dispatched_at.is_none() {
                return None;
            }
        }
        Some(())
    })
    .await;
}

fn a(n: i32) -> Attempt {
    Attempt::new(n).unwrap()
}

/// `workers` workers each try to claim `tries` builds (all of them when `tries` is the count),
/// all at once. Exactly one claim per build may win.
async fn race(workers: usize, builds: usize, tries: usize) {
    let s = start_with(Duration::from_secs(30), 3, |c| {
        c.dispatch_window = builds as i64
    })
    .await;
    let mut ids = vec![];
    for _ in 0..builds {
        ids.push(factory::build(&s.db.pool, Default::default()).await);
    }
    let mut creds = vec![];
    for _ in 0..workers {
        creds.push(factory::worker(&s.db.pool, &[Platform::Android]).await);
    }
    wait_dispatched(&s.db.pool, &ids, 1).await;
    // Three replicas dispatched concurrently: each build exactly once.
    for id in &ids {
        assert_eq!(
            get(&s.db.pool, *id).await.attempt,
            a(1),
            "build {id} was dispatched twice"
        );
    }
    let mut attempts = vec![];
    for (i, w) in creds.iter().enumerate() {
        for j in 0..tries {
            attempts.push((w.clone(), ids[(i * 7 + j) % builds]));
        }
    }
    let s = &s;
    // 200 claims in flight at a time: every build still has many claimers at once. As a worker
    // would, a claimer asks again when no answer came in time or the answer was "unavailable"
    // (no database connection in time): thousands of claims on a loaded 2-core machine.
    let replies: Vec<_> = futures::stream::iter(attempts)
        .map(|(w, id)| async move {
            for _ in 0..20 {
                match s.try_claim(&w, id).await {
                    None | Some(ClaimReply::Unavailable { .. }) => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Some(reply) => return (w.worker_id, id, reply),
                }
            }
            panic!("no answer to a claim of {id} after 20 tries");
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let mut won = HashSet::new();
    let mut granted = 0;
    for (worker, id, reply) in &replies {
        match reply {
            ClaimReply::Granted(g) => {
                granted += 1;
                assert!(won.insert(*id), "build {id} was granted twice");
                assert_eq!(g.build_id, *id);
                assert_eq!(get(&s.db.pool, *id).await.worker_id, Some(*worker));
            }
            ClaimReply::NotYours {
                reason: NotYours::Stale,
                status: Some(BuildStatus::Assigned),
            } => {}
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert_eq!(granted, builds);
    let counts = db::builds::build_count_by_status(&s.db.pool).await.unwrap();
    assert_eq!(counts, vec![(BuildStatus::Assigned, builds as i64)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_workers_race_for_ten_builds() {
    race(20, 10, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_workers_race_for_a_hundred_builds() {
    race(200, 100, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_workers_race_for_two_hundred_fifty_builds() {
    race(500, 250, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_workers_of_the_builds_queue_may_claim_it() {
    let s = start(Duration::from_secs(30)).await;
    let id = factory::build(&s.db.pool, Default::default()).await;
    let ios = factory::worker(&s.db.pool, &[Platform::Ios]).await;
    wait_dispatched(&s.db.pool, &[id], 1).await;
    assert!(matches!(
        s.claim(&ios, id, a(1)).await,
        ClaimReply::NotYours {
            reason: NotYours::WrongQueue,
            ..
        }
    ));
    assert_eq!(get(&s.db.pool, id).await.status, BuildStatus::Pending);
}

/// The messages the BUILDS stream holds, and the attempts they carry.
async fn dispatches_held(s: &Sched) -> Vec<Dispatch> {
    let js = async_nats::jetstream::new(s.client.clone());
    let mut stream = js.get_stream(subjects::BUILDS_STREAM).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut held = vec![];
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            held.push(wire::decode(&m.payload).unwrap());
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_that_only_waits_is_not_published_again() {
    let s = start_with(Duration::from_secs(30), 1, |c| {
        c.redispatch_after = Duration::from_millis(300)
    })
    .await;
    let id = factory::build(&s.db.pool, Default::default()).await;
    wait_dispatched(&s.db.pool, &[id], 1).await;
    let first = get(&s.db.pool, id).await.dispatched_at;
    // Nobody pulls: the message waits in JetStream. Ten intervals later it is still the only
    // one (a copy per interval was published before, and a backlog grew by the copies of every
    // waiting build).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(dispatches_held(&s).await.len(), 1);
    assert_eq!(get(&s.db.pool, id).await.dispatched_at, first);
    // What the republisher reads: the oldest message the queue holds, with its time.
    let js = async_nats::jetstream::new(s.client.clone());
    let subject =
        subjects::dispatch(&freeagent_shared::status::QueueName::parse("android").unwrap());
    let oldest = freeagent_shared::nats::first_on(&js, subjects::BUILDS_STREAM, &subject, 0)
        .await
        .unwrap()
        .expect("the waiting dispatch");
    assert_eq!(
        wire::decode::<Dispatch>(&oldest.payload).unwrap().build_id,
        id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_dispatch_is_published_again_under_the_same_attempt() {
    let s = start_with(Duration::from_secs(30), 1, |c| {
        c.redispatch_after = Duration::from_millis(500)
    })
    .await;
    let id = factory::build(&s.db.pool, Default::default()).await;
    let w = factory::worker(&s.db.pool, &[Platform::Android]).await;
    let other = factory::worker(&s.db.pool, &[Platform::Android]).await;
    wait_dispatched(&s.db.pool, &[id], 1).await;
    let first = get(&s.db.pool, id).await.dispatched_at;
    // JetStream loses the message (a purge here; a stream that lost its files in production).
    let js = async_nats::jetstream::new(s.client.clone());
    let stream = js.get_stream(subjects::BUILDS_STREAM).await.unwrap();
    stream.purge().await.unwrap();
    wait::until("a second publish", Duration::from_secs(20), || async {
        (get(&s.db.pool, id).await.dispatched_at > first).then_some(())
    })
    .await;
    // Published again once, under the same attempt: waiting cost the build no attempt.
    let held = dispatches_held(&s).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!((held[0].build_id, held[0].attempt), (id, a(1)));
    assert_eq!(get(&s.db.pool, id).await.attempt, a(1));
    // Whichever message a worker holds wins the build once; the other is refused.
    assert!(matches!(
        s.claim(&w, id, a(1)).await,
        ClaimReply::Granted(_)
    ));
    assert!(matches!(
        s.claim(&other, id, a(1)).await,
        ClaimReply::NotYours { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_beats_its_dispatch_commit_waits_for_it() {
    let s = start(Duration::from_secs(30)).await;
    let id = factory::build(&s.db.pool, Default::default()).await;
    let w = factory::worker(&s.db.pool, &[Platform::Android]).await;
    wait_dispatched(&s.db.pool, &[id], 1).await;
    // A dispatch of attempt 2 has published (the worker holds its message) but not committed.
    let mut dispatch = s.db.pool.begin().await.unwrap();
    sqlx::query("UPDATE builds SET attempt = 2, dispatched_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *dispatch)
        .await
        .unwrap();
    let claim = tokio::spawn({
        let (client, w) = (s.client.clone(), w.clone());
        async move {
            let req = ClaimRequest {
                build_id: id,
                attempt: a(2),
                worker_id: w.worker_id,
            };
            let reply = client
                .request(Op::Claim.subject(req.worker_id), wire::encode(&req).into())
                .await
                .unwrap();
            wire::decode::<ClaimReply>(&reply.payload).unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    dispatch.commit().await.unwrap();
    // The claim waited for the commit instead of sending the worker away to retry.
    let reply = claim.await.unwrap();
    assert!(
        matches!(reply, ClaimReply::Granted(ref g) if g.attempt == a(2)),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeues_back_off_exponentially_with_jitter() {
    let s = start_with(Duration::from_millis(300), 1, |c| {
        c.retry_backoff = Duration::from_secs(10);
        c.retry_backoff_max = Duration::from_secs(15);
    })
    .await;
    let id = factory::build(
        &s.db.pool,
        factory::BuildOpts {
            max_attempts: 5,
            ..Default::default()
        },
    )
    .await;
    let w = factory::worker(&s.db.pool, &[Platform::Android]).await;
    wait_dispatched(&s.db.pool, &[id], 1).await;
    assert!(matches!(
        s.claim(&w, id, a(1)).await,
        ClaimReply::Granted(_)
    ));
    // The lease lapses; the rescuer requeues attempt 1 with a backoff of 10 s ±20 %.
    let b = wait::until("the requeue", Duration::from_secs(10), || async {
        let b = get(&s.db.pool, id).await;
        (b.status == BuildStatus::Pending && b.worker_id.is_none()).then_some(b)
    })
    .await;
    let rows = db::builds::build_attempts(&s.db.pool, id).await.unwrap();
    assert_eq!(rows[0].outcome.as_deref(), Some("lost"));
    let backoff = (b.run_after - rows[0].ended_at.unwrap()).num_milliseconds() as f64 / 1000.0;
    assert!(
        (7.9..=12.1).contains(&backoff),
        "backoff {backoff} s outside 10 s ±20 %"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get(&s.db.pool, id).await.attempt,
        a(1),
        "dispatched before its backoff"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_backlog_of_a_queue_stays_within_its_window() {
    let s = start_with(Duration::from_secs(30), 1, |c| c.dispatch_window = 5).await;
    let mut ids = vec![];
    for _ in 0..20 {
        ids.push(factory::build(&s.db.pool, Default::default()).await);
    }
    let w = factory::worker(&s.db.pool, &[Platform::Android]).await;
    let dispatched = || async {
        let mut n = vec![];
        for id in &ids {
            let b = get(&s.db.pool, *id).await;
            if b.status == BuildStatus::Pending && b.dispatched_at.is_some() {
                n.push((b.id, b.attempt));
            }
        }
        n
    };
    wait::until("the first window", Duration::from_secs(10), || async {
        (dispatched().await.len() == 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let window = dispatched().await;
    assert_eq!(window.len(), 5, "the rest waits in Postgres");
    // Claiming two frees two places in the window.
    for (id, attempt) in &window[..2] {
        assert!(matches!(
            s.claim(&w, *id, *attempt).await,
            ClaimReply::Granted(_)
        ));
    }
    wait::until("the window to refill", Duration::from_secs(10), || async {
        (dispatched().await.len() == 5).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_heartbeats_at_once_are_each_answered() {
    let s = start(Duration::from_secs(30)).await;
    let mut held = vec![];
    for _ in 0..60 {
        let id = factory::build(&s.db.pool, Default::default()).await;
        held.push(id);
    }
    let w = factory::worker(&s.db.pool, &[Platform::Android]).await;
    let other = factory::worker(&s.db.pool, &[Platform::Android]).await;
    wait_dispatched(&s.db.pool, &held, 1).await;
    for id in &held {
        assert!(matches!(
            s.claim(&w, *id, a(1)).await,
            ClaimReply::Granted(_)
        ));
    }
    let s = &s;
    // The holder's beats renew; a stranger's beats for the same builds, in the same batches, do not.
    let beats = held
        .iter()
        .flat_map(|id| [(w.clone(), *id, true), (other.clone(), *id, false)]);
    let replies = futures::future::join_all(beats.map(|(cred, id, mine)| async move {
        let r: HeartbeatReply = s
            .request(
                Op::Heartbeat,
                &HeartbeatRequest {
                    build_id: id,
                    attempt: a(1),
                    worker_id: cred.worker_id,
                    progress: Some(10),
                },
            )
            .await;
        (mine, r)
    }))
    .await;
    for (mine, r) in replies {
        match (mine, r) {
            (true, HeartbeatReply::Renewed { .. })
            | (
                false,
                HeartbeatReply::Stop {
                    reason: NotYours::Stale,
                    ..
                },
            ) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    for id in &held {
        let b = get(&s.db.pool, *id).await;
        assert_eq!(b.status, BuildStatus::Building);
        assert_eq!(b.progress, Some(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_publishes_once_per_attempt_with_a_message_id() {
    // The builds exist before the scheduler starts, so one pass sees all three and the order
    // below is the priority order, not the order they were inserted in.
    let db = TestDb::new().await;
    let mut ids = vec![];
    for p in [0, 5, 0] {
        ids.push(
            factory::build(
                &db.pool,
                factory::BuildOpts {
                    priority: p,
                    ..Default::default()
                },
            )
            .await,
        );
    }
    let s = start_on(db, Duration::from_secs(30), 1, |_| {}).await;
    wait_dispatched(&s.db.pool, &ids, 1).await;
    let js = async_nats::jetstream::new(s.client.clone());
    let mut stream = js.get_stream(subjects::BUILDS_STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 3);
    for seq in 1..=3 {
        let m = stream.get_raw_message(seq).await.unwrap();
        let d: Dispatch = wire::decode(&m.payload).unwrap();
        let msg_id = m.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned();
        assert!(
            msg_id.starts_with(&format!("{}:{}:", d.build_id, d.attempt)),
            "{msg_id}"
        );
        assert_eq!(d.attempt, a(1));
    }
    // The higher priority build went first.
    let first: Dispatch = wire::decode(&stream.get_raw_message(1).await.unwrap().payload).unwrap();
    assert_eq!(first.build_id, ids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_foreign_reports_change_nothing_and_replays_are_idempotent() {
    let s = start(Duration::from_secs(30)).await;
    let id = factory::build(&s.db.pool, Default::default()).await;
    let (owner, other) = (
        factory::worker(&s.db.pool, &[Platform::Android]).await,
        factory::worker(&s.db.pool, &[Platform::Android]).await,
    );
    wait_dispatched(&s.db.pool, &[id], 1).await;

    // Wrong attempt, wrong token, unknown build.
    assert!(matches!(
        s.claim(&owner, id, a(0)).await,
        ClaimReply::NotYours {
            reason: NotYours::Stale,
            ..
        }
    ));
    // An attempt ahead of the row that no dispatch holds: a void dispatch (rolled back, or a
    // database restored from a backup). The worker ends it rather than redelivering it forever.
    assert!(matches!(
        s.claim(&owner, id, a(2)).await,
        ClaimReply::NotYours {
            reason: NotYours::NotFound,
            ..
        }
    ));
    // A body naming another worker than the subject it came on is refused.
    let msg = s
        .client
        .request(
            Op::Claim.subject(other.worker_id),
            wire::encode(&ClaimRequest {
                build_id: id,
                attempt: a(1),
                worker_id: owner.worker_id,
            })
            .into(),
        )
        .await
        .unwrap();
    assert!(matches!(
        wire::decode::<ClaimReply>(&msg.payload).unwrap(),
        ClaimReply::Error { .. }
    ));
    // A worker nobody registered is refused.
    let stranger = TestWorker {
        worker_id: WorkerId::new(),
        worker_token: String::new(),
    };
    assert!(matches!(
        s.claim(&stranger, id, a(1)).await,
        ClaimReply::NotYours {
            reason: NotYours::Unauthorized,
            ..
        }
    ));
    assert!(matches!(
        s.claim(&owner, BuildId::new(), a(1)).await,
        ClaimReply::NotYours {
            reason: NotYours::NotFound,
            ..
        }
    ));
    assert_eq!(get(&s.db.pool, id).await.status, BuildStatus::Pending);

    let ClaimReply::Granted(grant) = s.claim(&owner, id, a(1)).await else {
        panic!("owner should win")
    };
    assert!(
        grant
            .result_url
            .contains(&format!("builds/{id}/attempts/1/result"))
    );
    // Another worker claiming it is refused.
    assert!(matches!(
        s.claim(&other, id, a(1)).await,
        ClaimReply::NotYours {
            reason: NotYours::Stale,
            ..
        }
    ));
    // The holder asking again (its reply was lost) gets the same job again.
    let ClaimReply::Granted(again) = s.claim(&owner, id, a(1)).await else {
        panic!("the holder is granted again")
    };
    assert_eq!(
        again.result_url.split('?').next(),
        grant.result_url.split('?').next()
    );

    // Heartbeats: the owner's moves it to building; another worker's is told to stop.
    let hb = |w: &TestWorker, att| HeartbeatRequest {
        build_id: id,
        attempt: att,
        worker_id: w.worker_id,
        progress: Some(40),
    };
    assert!(matches!(
        s.request::<_, HeartbeatReply>(Op::Heartbeat, &hb(&owner, a(1)))
            .await,
        HeartbeatReply::Renewed { .. }
    ));
    assert_eq!(get(&s.db.pool, id).await.status, BuildStatus::Building);
    assert!(matches!(
        s.request::<_, HeartbeatReply>(Op::Heartbeat, &hb(&other, a(1)))
            .await,
        HeartbeatReply::Stop { .. }
    ));
    assert!(matches!(
        s.request::<_, HeartbeatReply>(Op::Heartbeat, &hb(&owner, a(0)))
            .await,
        HeartbeatReply::Stop { .. }
    ));

    // Another worker's completion, a stale attempt, and a receipt for another key: refused.
    assert!(matches!(
        s.complete(&other, id, a(1)).await,
        FinishReply::NotYours {
            reason: NotYours::Stale,
            ..
        }
    ));
    let forged_result = CompleteRequest {
        build_id: id,
        attempt: a(1),
        worker_id: owner.worker_id,
        result: s.result(id, a(2)),
    };
    assert!(matches!(
        s.request::<_, FinishReply>(Op::Complete, &forged_result)
            .await,
        FinishReply::Error { .. }
    ));
    let mut tampered = s.result(id, a(1));
    tampered.sha256 = "cd".repeat(32);
    let tampered = CompleteRequest {
        build_id: id,
        attempt: a(1),
        worker_id: owner.worker_id,
        result: tampered,
    };
    assert!(matches!(
        s.request::<_, FinishReply>(Op::Complete, &tampered).await,
        FinishReply::Error { .. }
    ));
    assert_eq!(get(&s.db.pool, id).await.status, BuildStatus::Building);

    // The owner's completion is recorded once; a replay gets the same answer; a late failure is refused.
    assert_eq!(
        s.complete(&owner, id, a(1)).await,
        FinishReply::Recorded {
            status: BuildStatus::Completed
        }
    );
    assert_eq!(
        s.complete(&owner, id, a(1)).await,
        FinishReply::Recorded {
            status: BuildStatus::Completed
        }
    );
    let fail = FailRequest {
        build_id: id,
        attempt: a(1),
        worker_id: owner.worker_id,
        error: "late".into(),
    };
    assert!(matches!(
        s.request::<_, FinishReply>(Op::Fail, &fail).await,
        FinishReply::NotYours {
            reason: NotYours::Finished,
            ..
        }
    ));
    let b = get(&s.db.pool, id).await;
    assert_eq!(b.status, BuildStatus::Completed);
    assert_eq!(b.result_sha256.as_deref(), Some("ab".repeat(32).as_str()));
    assert_eq!(b.result_size, Some(42));
    assert_eq!(b.error_message, None);

    // Garbage and other versions get an error reply, not silence.
    let msg = s
        .client
        .request(Op::Claim.subject(WorkerId::new()), "garbage".into())
        .await
        .unwrap();
    assert!(matches!(
        wire::decode::<ClaimReply>(&msg.payload).unwrap(),
        ClaimReply::Error { .. }
    ));
    let msg = s
        .client
        .request(Op::Complete.subject(WorkerId::new()), r#"{"v":9}"#.into())
        .await
        .unwrap();
    assert!(matches!(
        wire::decode::<FinishReply>(&msg.payload).unwrap(),
        FinishReply::Error { .. }
    ));
}

/// Every message `stream` holds on `subject`, oldest first.
async fn stored_on(
    js: &async_nats::jetstream::Context,
    stream: &str,
    subject: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let mut out = Vec::new();
    let mut from = 1;
    while let Some(m) = freeagent_shared::nats::first_on(js, stream, subject, from)
        .await
        .unwrap()
    {
        from = m.sequence + 1;
        out.push(m);
    }
    out
}

/// A scheduler SIGKILLed after its commit of an outcome and before its announcement (here: the
/// transition made straight in the database) leaves the build ended with no `completed` event and
/// no closing line, and the worker without a reply. The worker asks again (another scheduler):
/// the replay announces what the streams lack, and a further replay adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_report_announces_an_outcome_whose_recorder_died_first() {
    let s = start(Duration::from_secs(30)).await;
    let id = factory::build(&s.db.pool, Default::default()).await;
    let w = factory::worker(&s.db.pool, &[Platform::Android]).await;
    wait_dispatched(&s.db.pool, &[id], 1).await;
    assert!(matches!(
        s.claim(&w, id, a(1)).await,
        ClaimReply::Granted(_)
    ));
    let r = s.result(id, a(1));
    let object = db::builds::NewObject {
        key: r.key,
        size: 42,
        sha256: r.sha256,
    };
    let t = db::builds::build_complete(&s.db.pool, id, a(1), w.worker_id, &object)
        .await
        .unwrap();
    assert!(matches!(t, db::Transition::Applied(_)));

    let js = async_nats::jetstream::new(s.client.clone());
    let completed_events = || async {
        stored_on(&js, subjects::EVENTS_STREAM, &subjects::build_events(id))
            .await
            .iter()
            .filter(|m| {
                matches!(
                    wire::decode::<freeagent_shared::events::FarmEvent>(&m.payload),
                    Ok(freeagent_shared::events::FarmEvent::Build(e))
                        if e.status == BuildStatus::Completed
                )
            })
            .count()
    };
    let closing_lines = || async {
        stored_on(&js, subjects::LOGS_STREAM, &subjects::farm_logs(id))
            .await
            .iter()
            .filter(|m| {
                wire::decode::<LogLine>(&m.payload)
                    .is_ok_and(|l| l.message == freeagent_shared::farm_log::COMPLETED)
            })
            .count()
    };
    assert_eq!(completed_events().await, 0, "the recorder died before it");
    assert_eq!(closing_lines().await, 0);

    for _ in 0..2 {
        assert_eq!(
            s.complete(&w, id, a(1)).await,
            FinishReply::Recorded {
                status: BuildStatus::Completed
            }
        );
        wait::until("the completed event", Duration::from_secs(10), || async {
            (completed_events().await > 0).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(completed_events().await, 1, "announced once");
    assert_eq!(closing_lines().await, 1, "the closing line written once");

    // A worker replaying an old report (no lost reply: a worker asks again for a minute at most)
    // makes the farm write nothing, even when the streams have forgotten the outcome.
    sqlx::query("UPDATE builds SET completed_at = now() - interval '1 hour' WHERE id = $1")
        .bind(id)
        .execute(&s.db.pool)
        .await
        .unwrap();
    js.get_stream(subjects::EVENTS_STREAM)
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    assert_eq!(
        s.complete(&w, id, a(1)).await,
        FinishReply::Recorded {
            status: BuildStatus::Completed
        }
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        completed_events().await,
        0,
        "an old replay announces nothing"
    );
    assert_eq!(closing_lines().await, 1, "and writes no line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_runs_the_build_again_and_refuses_the_old_worker() {
    let s = start(Duration::from_secs(1)).await;
    let id = factory::build(
        &s.db.pool,
        factory::BuildOpts {
            max_attempts: 2,
            ..Default::default()
        },
    )
    .await;
    let (first, second) = (
        factory::worker(&s.db.pool, &[Platform::Android]).await,
        factory::worker(&s.db.pool, &[Platform::Android]).await,
    );
    wait_dispatched(&s.db.pool, &[id], 1).await;
    assert!(matches!(
        s.claim(&first, id, a(1)).await,
        ClaimReply::Granted(_)
    ));
    // The first worker goes silent: the lease expires and the build is dispatched again.
    wait_dispatched(&s.db.pool, &[id], 2).await;
    assert_eq!(get(&s.db.pool, id).await.status, BuildStatus::Pending);
    assert!(matches!(
        s.complete(&first, id, a(1)).await,
        FinishReply::NotYours {
            reason: NotYours::Stale,
            ..
        }
    ));
    assert!(matches!(
        s.claim(&second, id, a(2)).await,
        ClaimReply::Granted(_)
    ));
    // The second worker is lost too: attempts are used up, the build fails.
    let b = wait::until("the build to fail", Duration::from_secs(20), || async {
        let b = get(&s.db.pool, id).await;
        (b.status == BuildStatus::Failed).then_some(b)
    })
    .await;
    assert_eq!(b.attempt, a(2));
    assert!(b.error_message.unwrap().contains("worker lost"));
    assert!(matches!(
        s.complete(&second, id, a(2)).await,
        FinishReply::NotYours {
            reason: NotYours::Finished,
            ..
        }
    ));
}
