//! Simulated NATS workers: registered like real ones, they pull dispatches from the queue's
//! JetStream consumer one at a time, claim through the scheduler, ack, and complete at once
//! with a result receipt (a no-op build: nothing is uploaded). Exactly the protocol of the
//! reference worker, without a build in between.

use freeagent_shared::capability::Signer;
use freeagent_shared::ids::BuildId;
use freeagent_shared::nats;
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::scheduler_client::SchedulerClient;
use freeagent_shared::status::{Platform, QueueName};
use freeagent_shared::testing::factory;
use freeagent_shared::wire::{
    self, ClaimReply, ClaimRequest, CompleteRequest, Dispatch, FinishReply, PresenceRequest,
    StoredObject,
};
use freeagent_tests::{Farm, SECRET};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[derive(Clone, Default)]
pub struct Tally {
    pub completed: Arc<AtomicU64>,
    pub claimed: Arc<AtomicU64>,
    /// When each build was granted to a worker (only when recording).
    pub granted: Option<Arc<Mutex<HashMap<BuildId, Instant>>>>,
}

pub struct Fleet {
    pub tally: Tally,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

/// Connections shared by the simulated workers (a real fleet has one each; the scheduler's cost
/// per request is the same either way).
const CONNECTIONS: usize = 4;

/// How simulated workers behave between builds.
#[derive(Clone, Copy)]
pub struct Idle {
    /// How long one pull request waits for a dispatch before it is renewed.
    pub pull_expires: Duration,
    /// Presence reports to the scheduler, as real workers send them (`None`: none).
    pub presence: Option<Duration>,
    /// After this long without a dispatch, ask the queue's consumer whether it holds any, as
    /// the reference worker does (`nats::STALL_CHECK`; `None`: never).
    pub stall_check: Option<Duration>,
}

impl Default for Idle {
    fn default() -> Self {
        Self {
            pull_expires: Duration::from_secs(5),
            presence: None,
            stall_check: None,
        }
    }
}

impl Fleet {
    pub async fn start(farm: &Farm, workers: usize, record: bool) -> anyhow::Result<Fleet> {
        Self::start_with(farm, workers, record, Idle::default()).await
    }

    pub async fn start_with(
        farm: &Farm,
        workers: usize,
        record: bool,
        idle: Idle,
    ) -> anyhow::Result<Fleet> {
        let queue = QueueName::for_platform(Platform::Android);
        let mut conns = vec![];
        for _ in 0..CONNECTIONS.min(workers.max(1)) {
            // Simulated workers share a few connections with the whole account's credentials:
            // the bench measures the scheduler, not NATS permissions.
            let c = farm.nats.client().await;
            let js = async_nats::jetstream::new(c.clone());
            let consumer = nats::ensure_queue_consumer(&js, &queue).await?;
            conns.push((c, consumer));
        }
        // Registration is not what is measured: many at once.
        let creds: Vec<factory::TestWorker> = futures::stream::iter(0..workers)
            .map(|_| factory::worker(&farm.db.pool, &[Platform::Android]))
            .buffer_unordered(16)
            .collect()
            .await;
        let members = creds
            .into_iter()
            .enumerate()
            .map(|(i, cred)| {
                let (c, consumer) = conns[i % conns.len()].clone();
                (SchedulerClient::new(c), consumer, cred)
            })
            .collect();
        Ok(Self::spawn(members, record, idle))
    }

    /// Workers as a real fleet has them: each registered over HTTP with an nkey of its own and
    /// connected with the JWT the farm gave it, so each is a connection of its own with its own
    /// permissions (what NATS pays per worker), pulling through the queue's consumer as the
    /// reference worker does.
    pub async fn start_own(
        farm: &Farm,
        workers: usize,
        record: bool,
        idle: Idle,
    ) -> anyhow::Result<Fleet> {
        let queue = QueueName::for_platform(Platform::Android);
        let registered: Vec<freeagent_tests::TestWorker> = futures::stream::iter(0..workers)
            .map(|i| async move {
                farm.register_worker(&format!("sim-{i}"), &["android"])
                    .await
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let members: Vec<anyhow::Result<Member>> = futures::stream::iter(registered)
            .map(|w| {
                let queue = queue.clone();
                async move {
                    let c = w.connect(&farm.nats.url).await?;
                    let js = async_nats::jetstream::new(c.clone());
                    let consumer = nats::queue_consumer(&js, &queue).await?;
                    let cred = factory::TestWorker {
                        worker_id: w.worker_id,
                        worker_token: w.worker_token,
                    };
                    Ok((SchedulerClient::new(c), consumer, cred))
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let members = members.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::spawn(members, record, idle))
    }

    fn spawn(members: Vec<Member>, record: bool, idle: Idle) -> Fleet {
        let tally = Tally {
            granted: record.then(Default::default),
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let signer = Signer::new(SECRET);
        for (i, (scheduler, consumer, cred)) in members.into_iter().enumerate() {
            let w = SimWorker {
                scheduler,
                consumer,
                cred,
                signer: signer.clone(),
                tally: tally.clone(),
                idle,
            };
            if let Some(every) = idle.presence {
                let (sched, cred, stop) = (w.scheduler.clone(), w.cred.clone(), stop.clone());
                // Spread the reports over the interval, as independent workers would be.
                let offset = every.mul_f64((i as f64 * 0.618_034) % 1.0);
                tasks.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(offset) => {}
                    }
                    loop {
                        let req = PresenceRequest {
                            worker_id: cred.worker_id,
                            running: 0,
                        };
                        let _ = sched.presence(&req).await;
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(every) => {}
                        }
                    }
                });
            }
            tasks.spawn(w.run(stop.clone()));
        }
        Fleet { tally, stop, tasks }
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A simulated worker's connection to the scheduler, its queue's consumer, its credential.
type Member = (
    SchedulerClient,
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    factory::TestWorker,
);

struct SimWorker {
    scheduler: SchedulerClient,
    consumer:
        async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    cred: factory::TestWorker,
    signer: Signer,
    tally: Tally,
    idle: Idle,
}

impl SimWorker {
    async fn run(self, stop: CancellationToken) {
        let mut quiet_since = Instant::now();
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                b = self.consumer.batch().max_messages(1).expires(self.idle.pull_expires).messages() => b,
            };
            let Ok(mut batch) = batch else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = batch.next() => m,
            };
            let Some(Ok(msg)) = msg else {
                if let Some(every) = self.idle.stall_check
                    && quiet_since.elapsed() >= every
                {
                    quiet_since = Instant::now();
                    let _ = self.consumer.clone().info().await;
                }
                continue;
            };
            quiet_since = Instant::now();
            let Ok(d) = wire::decode::<Dispatch>(&msg.payload) else {
                let _ = msg.ack().await;
                continue;
            };
            let req = ClaimRequest {
                build_id: d.build_id,
                attempt: d.attempt,
                worker_id: self.cred.worker_id,
            };
            match self.scheduler.claim(&req).await {
                Ok(ClaimReply::Granted(g)) => {
                    if let Some(map) = &self.tally.granted
                        && let Ok(mut m) = map.lock()
                    {
                        m.insert(g.build_id, Instant::now());
                    }
                    self.tally.claimed.fetch_add(1, Ordering::Relaxed);
                    let _ = msg.ack().await;
                    self.complete(g.build_id, g.attempt).await;
                }
                Ok(ClaimReply::NotYours { .. }) => {
                    let _ = msg.ack_with(async_nats::jetstream::AckKind::Term).await;
                }
                _ => {
                    let _ = msg
                        .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                            Duration::from_millis(200),
                        )))
                        .await;
                }
            }
        }
    }

    async fn complete(&self, id: BuildId, attempt: freeagent_shared::ids::Attempt) {
        let key = ObjectKey::Result(id, attempt);
        let req = CompleteRequest {
            build_id: id,
            attempt,
            worker_id: self.cred.worker_id,
            result: StoredObject {
                key: key.to_string(),
                size: 0,
                sha256: EMPTY_SHA256.into(),
                receipt: self.signer.receipt(&key, 0, EMPTY_SHA256),
            },
        };
        if let Ok(FinishReply::Recorded { .. }) = self.scheduler.complete(&req).await {
            self.tally.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
