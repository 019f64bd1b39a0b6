//! The scheduler: owns every build transition after submission. It dispatches pending builds to
//! JetStream, answers worker claims, heartbeats and reports over NATS request/reply, and rescues
//! builds whose worker was lost. Replicas need no leader: row locks partition the work.

pub mod batches;
pub mod cancels;
pub mod config;
pub mod connection_guard;
pub mod dispatcher;
pub mod events;
pub mod ops;
pub mod republisher;
pub mod rescuer;
pub mod revocations;
pub mod rpc;
pub mod service_loop;

use anyhow::Context;
use freeagent_shared::capability::Signer;
use freeagent_shared::health::Health;
use freeagent_shared::{db, nats, subjects};
use futures::StreamExt;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Revocations are pushed on a wake from the gateway; the tick catches a missed wake.
const REVOCATION_TICK: std::time::Duration = std::time::Duration::from_secs(15);

pub use config::SchedulerConfig;

pub struct App {
    config: SchedulerConfig,
    pool: db::Pool,
    nats: async_nats::Client,
    /// Answers worker requests (`rpc::replies_connection`).
    replies: async_nats::Client,
    listener: TcpListener,
    health: Health,
    subs: rpc::Subscriptions,
    wake_sub: async_nats::Subscriber,
    cancel_sub: async_nats::Subscriber,
    revoked_sub: async_nats::Subscriber,
    minter: Option<freeagent_shared::nats_auth::Minter>,
    revoker: Option<revocations::Revoker>,
    guard: Option<connection_guard::ConnectionGuard>,
}

/// How long a starting scheduler waits for another service's NATS set-up.
const NATS_SETUP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl App {
    pub async fn build(config: SchedulerConfig) -> anyhow::Result<Self> {
        if freeagent_shared::config::parse("FREEAGENT_DATABASE_CREATE", false, "true or false")? {
            db::create_database_if_missing(&config.database_url).await?;
        }
        let pool = db::connect(&config.database_url, config.database_pool).await?;
        db::migrate(&pool).await.context("running migrations")?;
        // One service at a time loads the farm's NATS account (`db::nats_setup_lock`).
        let setup = db::nats_setup_lock::NatsSetupLock::acquire(&pool, NATS_SETUP_WAIT).await?;
        let nats = nats::connect(
            &config.nats,
            "freeagent-scheduler",
            nats::Identity::Settings,
            None,
        )
        .await?;
        if config.nats.creds.is_none() {
            tracing::warn!(
                "NATS without credentials: anyone who reaches the server owns this farm. Set FREEAGENT_NATS_CREDS (see `freeagent nats-config` and docs/security.md)"
            );
        }
        let js = async_nats::jetstream::new(nats.clone());
        nats::ensure_streams(&js, &nats::StreamLimits::from_env()?).await?;
        setup.release().await?;
        // The reply connection is a user of the farm's own account; workers are minted in
        // theirs (ADR-0016), or in the farm's by a set-up written before it.
        let farm_minter = config
            .nats
            .minter()
            .context("reading the NATS signing key (FREEAGENT_NATS_SIGNING_KEY)")?;
        let minter = config.nats.worker_minter().context(
            "reading the workers account's signing key (FREEAGENT_NATS_WORKERS_SIGNING_KEY)",
        )?;
        config.nats.warn_if_workers_share_the_account();
        let replies = rpc::replies_connection(&config.nats, farm_minter.as_ref(), &nats).await?;
        let subs = rpc::subscribe(&replies).await?;
        let wake_sub = nats.subscribe(subjects::WAKE).await?;
        let cancel_sub = nats
            .queue_subscribe(subjects::CANCEL, subjects::SCHEDULER_QUEUE_GROUP.into())
            .await?;
        let revoked_sub = nats.subscribe(revocations::REVOKED).await?;
        let revoker = match (&minter, &config.nats.operator_key, config.nats.system()) {
            (Some(minter), Some(op), Some(system)) => {
                let operator = freeagent_shared::nats_auth::read_seed("NATS operator key", op)
                    .context("reading FREEAGENT_NATS_OPERATOR_KEY")?;
                let system = nats::connect(
                    &system,
                    "freeagent-scheduler-system",
                    nats::Identity::Settings,
                    None,
                )
                .await
                .context("connecting as the NATS system user (FREEAGENT_NATS_SYSTEM_CREDS)")?;
                Some(revocations::Revoker {
                    pool: pool.clone(),
                    minter: minter.clone(),
                    operator: Arc::new(operator),
                    system,
                    pushed: Default::default(),
                })
            }
            (Some(_), _, _) => {
                tracing::warn!(
                    "FREEAGENT_NATS_OPERATOR_KEY or FREEAGENT_NATS_SYSTEM_CREDS is not set: unregistered workers keep their NATS credentials until they expire (FREEAGENT_WORKER_NATS_TTL)"
                );
                None
            }
            _ => None,
        };
        let guard = revoker
            .as_ref()
            .filter(|_| config.worker_max_connections > 0)
            .map(|r| {
                connection_guard::ConnectionGuard::new(
                    pool.clone(),
                    nats.clone(),
                    r.system.clone(),
                    r.minter.account().to_owned(),
                    config.worker_max_connections,
                )
            });
        nats.flush().await?;
        replies.flush().await?;
        let health = Health::new()
            .postgres(pool.clone())
            .nats(nats.clone())
            .jetstream(nats.clone());
        let listener = TcpListener::bind((config.bind.as_str(), config.port))
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}:{}; set FREEAGENT_SCHEDULER_PORT",
                    config.bind, config.port
                )
            })?;
        Ok(Self {
            config,
            pool,
            nats,
            replies,
            listener,
            health,
            subs,
            wake_sub,
            cancel_sub,
            revoked_sub,
            minter,
            revoker,
            guard,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn pool(&self) -> &db::Pool {
        &self.pool
    }

    /// Runs every part until `stop`; then stops intake and gives in-flight work a grace period.
    pub async fn run_until(self, stop: CancellationToken) -> anyhow::Result<()> {
        let c = &self.config;
        let tracker = TaskTracker::new();
        let wake = Arc::new(Notify::new());
        let js = async_nats::jetstream::new(self.nats.clone());
        let handlers = ops::Handlers {
            pool: self.pool.clone(),
            nats: self.nats.clone(),
            caps: ops::Capabilities {
                signer: Signer::new(&c.signing_secret).with_previous(c.signing_previous.clone()),
                storage_endpoint: c.storage_endpoint.clone(),
                ttl: c.url_ttl,
                result_limit: c.result_limit,
            },
            lease: c.lease,
            http_lease: c.http_lease,
            backoff: c.backoff(),
            minter: self.minter.clone(),
            worker_nats_ttl: c.worker_nats_ttl,
            wake_dispatcher: wake.clone(),
            logs: std::sync::Arc::new(ops::LogGate::new(c.log_budget)),
        };
        let full_queues: dispatcher::FullQueues = Default::default();
        let dispatcher = dispatcher::Dispatcher {
            pool: self.pool.clone(),
            js,
            batch: c.dispatch_batch,
            window: c.dispatch_window,
            last_pass: Default::default(),
            full_queues: full_queues.clone(),
        };
        let republisher = republisher::Republisher {
            pool: self.pool.clone(),
            js: dispatcher.js.clone(),
            unclaimed_after: c.redispatch_after,
        };
        let rescuer = rescuer::Rescuer {
            pool: self.pool.clone(),
            nats: self.nats.clone(),
            backoff: c.backoff(),
            worker_offline_after: c.worker_offline_after,
            wake_dispatcher: wake.clone(),
        };

        let mut wake_sub = self.wake_sub;
        let (w, s, fq) = (wake.clone(), stop.clone(), full_queues.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    m = wake_sub.next() => match m {
                        Some(m) if dispatcher::worth_waking(&fq, &m.payload) => w.notify_one(),
                        Some(_) => {}
                        None => return,
                    },
                }
            }
        });
        // Submitters' cancels, forwarded by the gateway.
        tracker.spawn(cancels::serve(
            self.cancel_sub,
            self.pool.clone(),
            self.nats.clone(),
            stop.clone(),
        ));
        if let Some(guard) = self.guard {
            tracker.spawn(guard.clone().follow(stop.clone()));
            tracker.spawn(service_loop::run(
                "connection guard",
                c.tick.saturating_mul(connection_guard::RECOUNT_TICKS),
                Arc::new(Notify::new()),
                stop.clone(),
                move || {
                    let g = guard.clone();
                    async move { g.run_once().await }
                },
            ));
        }
        if let Some(revoker) = self.revoker {
            let revoke_wake = Arc::new(Notify::new());
            let (w, s, mut sub) = (revoke_wake.clone(), stop.clone(), self.revoked_sub);
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = s.cancelled() => return,
                        m = sub.next() => match m { Some(_) => w.notify_one(), None => return },
                    }
                }
            });
            tracker.spawn(service_loop::run(
                "revocations",
                REVOCATION_TICK,
                revoke_wake,
                stop.clone(),
                move || {
                    let r = revoker.clone();
                    async move { r.run_once().await }
                },
            ));
        }
        tracker.spawn(service_loop::run(
            "dispatcher",
            c.tick,
            wake.clone(),
            stop.clone(),
            move || {
                let d = dispatcher.clone();
                async move { d.run_once().await }
            },
        ));
        tracker.spawn(service_loop::run(
            "republisher",
            c.tick,
            Arc::new(Notify::new()),
            stop.clone(),
            move || {
                let r = republisher.clone();
                async move { r.run_once().await }
            },
        ));
        tracker.spawn(service_loop::run(
            "rescuer",
            c.tick,
            Arc::new(Notify::new()),
            stop.clone(),
            move || {
                let r = rescuer.clone();
                async move { r.run_once().await }
            },
        ));
        let rpc_tasks = TaskTracker::new();
        let batches = batches::Batches::start(&handlers, &stop);
        tracker.spawn(rpc::serve(
            self.replies.clone(),
            self.subs,
            handlers,
            batches,
            c.rpc_concurrency,
            stop.clone(),
            rpc_tasks.clone(),
        ));

        let router = self.health.clone().router();
        tracing::info!(
            port = self.listener.local_addr().map(|a| a.port()).unwrap_or(0),
            "scheduler running"
        );
        let limits = freeagent_shared::http_server::ServerLimits::from_env()?;
        let http_result = self
            .health
            .serve(self.listener, router, &limits, stop.clone())
            .await;

        tracker.close();
        rpc_tasks.close();
        let drained = tokio::time::timeout(c.shutdown_grace, async {
            tracker.wait().await;
            rpc_tasks.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown grace period passed with work still in flight");
        }
        let _ = self.replies.flush().await;
        let _ = self.nats.flush().await;
        http_result?;
        tracing::info!("scheduler stopped");
        Ok(())
    }
}
