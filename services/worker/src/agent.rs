//! The worker's top loop: one puller per queue takes a dispatch only when a build slot is free,
//! claims it, acks it, and runs the job. A presence report every few seconds tells the
//! scheduler the worker is alive and how busy; its reply may ask the worker to drain (take no
//! new build). On shutdown pulling stops first; running builds get a grace period, then are
//! stopped and handed back to the queue.

use crate::config::WorkerConfig;
use crate::job::Job;
use async_nats::jetstream::{self, AckKind};
use freeagent_shared::ids::WorkerId;
use freeagent_shared::nats;
use freeagent_shared::scheduler_client::SchedulerClient;
use freeagent_shared::status::QueueName;
use freeagent_shared::wire::{
    self, ClaimReply, ClaimRequest, Dispatch, NotYours, PresenceReply, PresenceRequest,
};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one pull waits for a dispatch before asking again. A worker serving several queues
/// holds its free slot while it waits on one queue, so it waits briefly and lets the next
/// queue's puller have the slot (the semaphore is fair: the queues take turns). A worker of one
/// queue waits `nats::IDLE_PULL_EXPIRES`.
const PULL_EXPIRES_SHARED: Duration = Duration::from_millis(250);

/// Says so in the log when a queue's consumer holds dispatches but this worker's pulls bring
/// none (seen when a NATS 2.9 server had lost a stream's files in a start-up race, see the
/// shared `db::nats_setup_lock`). A diagnostic only: the scheduler's re-dispatch is the remedy.
struct StallWatch {
    queue: QueueName,
    since: std::time::Instant,
    /// The last error a pull ended with since then (the server's status, if it sent one).
    last_error: Option<String>,
}

impl StallWatch {
    fn new(queue: QueueName) -> Self {
        StallWatch {
            queue,
            since: std::time::Instant::now(),
            last_error: None,
        }
    }

    fn pulled(&mut self) {
        self.since = std::time::Instant::now();
        self.last_error = None;
    }

    async fn nothing_pulled(
        &mut self,
        consumer: &jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    ) {
        if self.since.elapsed() < nats::STALL_CHECK {
            return;
        }
        self.since = std::time::Instant::now();
        let mut consumer = consumer.clone();
        if let Ok(info) = consumer.info().await
            && info.num_pending > 0
        {
            tracing::warn!(
                queue = %self.queue,
                num_pending = info.num_pending,
                num_waiting = info.num_waiting,
                num_ack_pending = info.num_ack_pending,
                last_pull_error = self.last_error.as_deref().unwrap_or("none"),
                quiet_secs = nats::STALL_CHECK.as_secs(),
                "the queue holds dispatches but this worker's pulls brought none for quiet_secs"
            );
        }
    }
}

#[derive(Clone)]
pub struct Agent {
    pub config: Arc<WorkerConfig>,
    pub nats: async_nats::Client,
    pub scheduler: SchedulerClient,
    pub http: reqwest::Client,
    pub worker_id: WorkerId,
    /// The newest NATS JWT the farm issued for this worker's key (presence replies renew it);
    /// read at every reconnect.
    pub nats_jwt: Arc<std::sync::RwLock<String>>,
    /// Set when an operator drains this worker: no new builds.
    pub draining: Arc<AtomicBool>,
    /// Its connection's credentials may pull from its queues: false while it awaits approval
    /// (the farm mints credentials without its queues until then).
    pub can_pull: Arc<AtomicBool>,
    /// Builds running here now; a redelivered dispatch for one of them is skipped.
    pub running: Arc<std::sync::Mutex<std::collections::HashSet<freeagent_shared::ids::BuildId>>>,
}

impl Agent {
    pub async fn run(self, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.max_concurrent));
        let jobs = TaskTracker::new();
        // Builds are stopped by this token, later than intake, after the grace period.
        let jobs_stop = CancellationToken::new();
        let pullers = TaskTracker::new();
        for queue in self.config.queues.clone() {
            pullers.spawn(self.clone().pull(
                queue,
                slots.clone(),
                jobs.clone(),
                stop.clone(),
                jobs_stop.clone(),
            ));
        }
        pullers.close();
        let presence = tokio::spawn(self.clone().report_presence(stop.clone()));
        stop.cancelled().await;
        presence.abort();
        pullers.wait().await;
        jobs.close();
        if tokio::time::timeout(self.config.shutdown_grace, jobs.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period passed; stopping running builds");
            jobs_stop.cancel();
            jobs.wait().await;
        }
    }

    fn renew_nats_jwt(&self, jwt: String) {
        if let Ok(mut c) = self.nats_jwt.write() {
            *c = jwt;
        }
        tracing::info!("NATS credentials renewed");
    }

    fn is_running(&self, id: freeagent_shared::ids::BuildId) -> bool {
        self.running
            .lock()
            .map(|r| r.contains(&id))
            .unwrap_or(false)
    }

    /// Marks a build as running; false if it already was.
    fn start_running(&self, id: freeagent_shared::ids::BuildId) -> bool {
        self.running
            .lock()
            .map(|mut r| r.insert(id))
            .unwrap_or(true)
    }

    fn stop_running(&self, id: freeagent_shared::ids::BuildId) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&id);
        }
    }

    async fn report_presence(self, stop: CancellationToken) {
        loop {
            // The builds it runs, not the slots taken: a puller holds a slot while it waits.
            let running = self.running.lock().map(|r| r.len()).unwrap_or(0) as u32;
            let req = PresenceRequest {
                worker_id: self.worker_id,
                running,
            };
            match self.scheduler.presence(&req).await {
                Ok(PresenceReply::Seen {
                    drain,
                    nats_jwt,
                    awaiting_approval,
                }) => {
                    if let Some(jwt) = nats_jwt {
                        self.renew_nats_jwt(jwt);
                        // Approved: the new credentials may pull, and only a new connection
                        // presents them.
                        if !awaiting_approval && !self.can_pull.swap(true, Ordering::SeqCst) {
                            tracing::info!(
                                "approved: reconnecting to NATS with credentials that may take builds"
                            );
                            if let Err(e) = self.nats.force_reconnect().await {
                                tracing::warn!(error = %e, "could not reconnect to NATS; the new credentials apply at the next reconnect");
                            }
                        }
                    }
                    // An operator may undrain (or approve) the worker too: it then takes builds.
                    let was = self.draining.swap(drain, Ordering::SeqCst);
                    if awaiting_approval && !was {
                        tracing::warn!(worker_id = %self.worker_id, "awaiting approval: this worker takes no build until an operator runs `freeagent workers approve {}`", self.worker_id);
                    } else if drain && !was {
                        tracing::info!("draining: taking no new builds");
                    } else if was && !drain {
                        tracing::info!("taking builds again");
                    }
                }
                Ok(other) => tracing::warn!(reply = ?other, "presence refused"),
                Err(e) => tracing::warn!(error = %e, "presence report failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.presence_every) => {}
            }
        }
    }

    async fn pull(
        self,
        queue: QueueName,
        slots: Arc<Semaphore>,
        jobs: TaskTracker,
        stop: CancellationToken,
        jobs_stop: CancellationToken,
    ) {
        // Awaiting approval (or drained from the start): its credentials may not look up or pull
        // from the queue yet.
        while self.draining.load(Ordering::SeqCst) {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.presence_every) => {}
            }
        }
        let js = jetstream::new(self.nats.clone());
        let consumer = loop {
            match nats::queue_consumer(&js, &queue).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "queue consumer not ready; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        tracing::info!(%queue, "taking builds");
        let expires = if self.config.queues.len() > 1 {
            PULL_EXPIRES_SHARED
        } else {
            nats::IDLE_PULL_EXPIRES
        };
        let mut idle = StallWatch::new(queue.clone());
        loop {
            if self.draining.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(self.config.presence_every) => continue,
                }
            }
            // Only pull when a slot is free, so no dispatch waits behind a running build.
            let permit = tokio::select! {
                _ = stop.cancelled() => return,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                b = consumer.batch().max_messages(1).expires(expires).messages() => b,
            };
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "pull failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = batch.next() => m,
            };
            let msg = match msg {
                Some(Ok(msg)) => msg,
                other => {
                    if let Some(Err(e)) = other {
                        idle.last_error = Some(e.to_string());
                    }
                    drop(permit);
                    idle.nothing_pulled(&consumer).await;
                    continue;
                }
            };
            idle.pulled();
            let dispatch: Dispatch = match wire::decode(&msg.payload) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(%queue, error = %e, "dropping an unreadable dispatch");
                    let _ = msg.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            if self.is_running(dispatch.build_id) {
                tracing::info!(build_id = %dispatch.build_id, "already running this build; skipping a redelivered dispatch");
                let _ = msg.ack().await;
                continue;
            }
            let req = ClaimRequest {
                build_id: dispatch.build_id,
                attempt: dispatch.attempt,
                worker_id: self.worker_id,
            };
            match self.scheduler.claim(&req).await {
                Ok(ClaimReply::Granted(grant)) => {
                    tracing::info!(build_id = %grant.build_id, attempt = %grant.attempt, "build claimed; starting it");
                    let _ = msg.ack().await;
                    if !self.start_running(grant.build_id) {
                        continue;
                    }
                    let job = Job::new(self.clone(), *grant);
                    let jobs_stop = jobs_stop.clone();
                    jobs.spawn(async move {
                        let _permit = permit;
                        let (agent, id) = (job.agent.clone(), job.grant.build_id);
                        job.run(jobs_stop).await;
                        agent.stop_running(id);
                    });
                }
                // Not ours to run, or a dispatch this farm does not know: ended, not redelivered.
                Ok(ClaimReply::NotYours { reason, status }) => {
                    tracing::info!(build_id = %dispatch.build_id, attempt = %dispatch.attempt, ?reason, ?status, "dispatch not ours");
                    let _ = match reason {
                        NotYours::NotFound => msg.ack_with(AckKind::Term).await,
                        // Full here: let another worker take it now.
                        NotYours::AtCapacity => msg.ack_with(AckKind::Nak(None)).await,
                        // Draining or awaiting approval since it pulled: someone else takes it.
                        NotYours::Draining => msg.ack_with(AckKind::Nak(None)).await,
                        _ => msg.ack().await,
                    };
                }
                Ok(ClaimReply::Error { message } | ClaimReply::Unavailable { message }) => {
                    tracing::warn!(build_id = %dispatch.build_id, %message, "claim failed; the dispatch will be redelivered");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                        .await;
                }
                Err(e) => {
                    tracing::warn!(build_id = %dispatch.build_id, error = %e, "claim failed; the dispatch will be redelivered");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                        .await;
                }
            }
        }
    }
}
