//! The gateway: the public HTTP API. It authenticates callers, streams submissions to storage,
//! records builds, and serves status, logs and downloads. It owns no build transition after
//! submission: those belong to the scheduler.

mod auth;
mod builds;
pub mod config;
mod dashboard;
pub mod error;
mod figures;
mod http;
mod keys;
mod logs;
mod routes;
mod state;
mod storage_client;
mod workers;

/// Streaming multipart parsing, public for its property tests.
pub use http::multipart;

use anyhow::Context;
use axum::Router;
use freeagent_shared::capability::Signer;
use freeagent_shared::health::Health;
use freeagent_shared::ids::ApiKeyId;
use freeagent_shared::{db, nats, subjects, token};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::GatewayConfig;
use state::AppState;

pub fn router(st: AppState, health: Health) -> Router {
    let c = &st.config;
    let limits = http::route::Limits {
        submit: usize::try_from(c.source_limit + c.certs_limit + 2 * c.json_limit)
            .unwrap_or(usize::MAX),
        json: usize::try_from(c.json_limit).unwrap_or(usize::MAX),
        result: usize::try_from(c.result_limit + c.json_limit).unwrap_or(usize::MAX),
    };
    let deadline = c.request_deadline;
    let limiter = http::rate_limit::Limiter::new(&c.rate);
    let mut router = Router::new();
    for route in routes::routes(&limits) {
        if let Some(mut handler) = route.handler {
            // Uploads, downloads and long polls take as long as their bytes or their wait.
            if !route.streaming {
                handler = handler
                    .layer::<_, std::convert::Infallible>(axum::middleware::from_fn(
                        move |req, next| http::deadline::within_deadline(deadline, req, next),
                    ))
                    .layer(axum::extract::DefaultBodyLimit::max(limits.json));
            }
            router = router.route(route.path, handler);
        }
    }
    let forget = limiter.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            forget.forget_idle();
        }
    });
    let sessions = st.clone();
    router
        .merge(dashboard::router())
        .fallback(|| async { error::GatewayError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            error::GatewayError::new(
                freeagent_shared::api_error::ErrorCode::MethodNotAllowed,
                "this method is not served on this path",
            )
            .hint("see GET /api/openapi.json for the methods of each path")
        })
        .with_state(st)
        .merge(health.router())
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            auth::csrf::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limiter,
            http::rate_limit::middleware,
        ))
        .layer(axum::middleware::from_fn(http::unread_body::middleware))
}

/// Every route the gateway declares, as (method, path, who may call it): what the contract
/// tests hold their own table against. Who may call is read from each handler's credential.
pub fn declared_routes() -> Vec<(&'static str, &'static str, &'static str)> {
    let limits = http::route::Limits {
        submit: 0,
        json: 0,
        result: 0,
    };
    routes::routes(&limits)
        .iter()
        .map(|r| (r.method, r.path, r.who.name()))
        .collect()
}

/// How long a starting gateway waits for another service's NATS set-up.
const NATS_SETUP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub struct App {
    listener: TcpListener,
    router: Router,
    health: Health,
    server: freeagent_shared::http_server::ServerLimits,
    /// What the background tasks (live feed, log archiver) share with the handlers.
    background: AppState,
}

impl App {
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        if freeagent_shared::config::parse("FREEAGENT_DATABASE_CREATE", false, "true or false")? {
            db::create_database_if_missing(&config.database_url).await?;
        }
        let pool = db::connect(&config.database_url, config.database_pool).await?;
        db::migrate(&pool).await.context("running migrations")?;
        // Ensuring never un-revokes: a key revoked through the API stays revoked.
        let bootstrap = db::api_keys::api_key_ensure(
            &pool,
            ApiKeyId::new(),
            "bootstrap",
            &token::hash(&config.bootstrap_api_key),
            &auth::ALL_SCOPES,
        )
        .await
        .context("storing the bootstrap API key")?;
        if bootstrap.revoked_at.is_some() {
            tracing::warn!(key_id = %bootstrap.id, "FREEAGENT_API_KEY was revoked and stays revoked; set a new one to use a bootstrap key");
        }
        if config.bootstrap_api_key.len() < freeagent_shared::config::MIN_SECRET_LEN
            && bootstrap.revoked_at.is_none()
        {
            tracing::warn!(
                key_id = %bootstrap.id,
                length = config.bootstrap_api_key.len(),
                "FREEAGENT_API_KEY is shorter than 32 characters: accepted because the seed accepted 16, but rotate it. Create a managed key (`freeagent keys create --name admin --scope admin --scope submit --scope read`), move the CLI and workers to it, then `freeagent keys revoke` this one"
            );
        }
        if let Some(k) = &config.worker_registration_key {
            let registration = db::api_keys::api_key_ensure(
                &pool,
                ApiKeyId::new(),
                "worker registration",
                &token::hash(k),
                &[auth::SCOPE_REGISTER_WORKERS],
            )
            .await
            .context("storing the worker registration key")?;
            if registration.revoked_at.is_some() {
                tracing::warn!(key_id = %registration.id, "FREEAGENT_WORKER_REGISTRATION_KEY was revoked and stays revoked; set a new one for workers to register with");
            }
            // The key's scope follows the settings at every start.
            db::api_keys::api_key_set_worker_scope(
                &pool,
                registration.id,
                config.worker_registration_queues.as_deref(),
                config.worker_registration_max,
            )
            .await
            .context("scoping the worker registration key")?;
        }
        // Replies (its own JetStream calls, and the scheduler's answers to the operations it
        // sends for HTTP workers) come to a service inbox, where no worker may listen.
        // One service at a time loads the farm's NATS account (`db::nats_setup_lock`).
        let setup = db::nats_setup_lock::NatsSetupLock::acquire(&pool, NATS_SETUP_WAIT).await?;
        let nats = nats::connect(
            &config.nats,
            "freeagent-gateway",
            nats::Identity::Settings,
            Some(subjects::SERVICE_INBOX_PREFIX.to_owned()),
        )
        .await?;
        // Workers are minted in their own account (ADR-0016), or in the farm's by a set-up
        // written before it.
        let minter = config.nats.worker_minter().context(
            "reading the NATS signing key for workers (FREEAGENT_NATS_WORKERS_SIGNING_KEY, or FREEAGENT_NATS_SIGNING_KEY)",
        )?;
        if config.nats.creds.is_some() && minter.is_none() {
            anyhow::bail!(
                "FREEAGENT_NATS_CREDS is set but FREEAGENT_NATS_WORKERS_SIGNING_KEY is not (nor, for a set-up from before the workers account, FREEAGENT_NATS_SIGNING_KEY): the gateway needs the workers account's signing key to give registering workers their NATS credentials (see `freeagent nats-config`)"
            );
        }
        config.nats.warn_if_workers_share_the_account();
        nats::ensure_streams(
            &async_nats::jetstream::new(nats.clone()),
            &nats::StreamLimits::from_env()?,
        )
        .await?;
        setup.release().await?;
        let storage = storage_client::StorageClient::new(
            &config.storage_endpoint,
            Signer::new(&config.signing_secret).with_previous(config.signing_previous.clone()),
            config.url_ttl,
        );
        let s = storage.clone();
        let health = Health::new()
            .postgres(pool.clone())
            .nats(nats.clone())
            .jetstream(nats.clone())
            .check(
                "storage",
                Arc::new(move || {
                    let s = s.clone();
                    Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
                }),
            );
        let listener = TcpListener::bind((config.bind.as_str(), config.port))
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}:{}; set FREEAGENT_GATEWAY_PORT",
                    config.bind, config.port
                )
            })?;
        let inserts = builds::inserts::start(pool.clone());
        let key_usage = auth::key_usage::KeyUsage::start(pool.clone());
        let server = config.server.clone();
        let figures = figures::FiguresCache::new(config.figures_ttl, config.worker_offline_after);
        let log_followers = Arc::new(tokio::sync::Semaphore::new(config.max_log_followers));
        let live = logs::live::Live::new(config.live_recent);
        let log_budget = config.log_budget;
        let st = AppState {
            scheduler: freeagent_shared::scheduler_client::SchedulerClient::new(nats.clone()),
            signer: Signer::new(&config.signing_secret)
                .with_previous(config.signing_previous.clone()),
            pool,
            nats,
            storage,
            config: Arc::new(config),
            api_keys: Default::default(),
            key_usage,
            inserts,
            minter,
            consumers: Default::default(),
            figures,
            log_followers,
            live,
            lease_renewals: Default::default(),
            build_teams: Default::default(),
            log_budget: std::sync::Arc::new((
                freeagent_shared::log_budget::WorkerBuckets::new(log_budget),
                Default::default(),
            )),
        };
        Ok(Self {
            background: st.clone(),
            router: router(st, health.clone()),
            listener,
            health,
            server,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown`; requests in flight finish first.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), "gateway listening");
        // The live feed and the log archiver stop with the server.
        let st = self.background;
        let background = shutdown.child_token();
        tokio::spawn(
            st.live
                .clone()
                .run(st.nats.clone(), st.pool.clone(), background.clone()),
        );
        let settle = st.config.log_archive_settle;
        tokio::spawn(logs::archive::Archiver::new(st, settle).run(background.clone()));
        let _stop = background.drop_guard();
        self.health
            .serve(self.listener, self.router, &self.server, shutdown)
            .await?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}
