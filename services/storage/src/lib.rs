//! The storage service: streams object bytes in and out of an object store, computes SHA-256 and
//! size on the way, and trusts only capability URLs signed by the gateway or scheduler. It holds
//! no user or build state.

pub mod backend;
pub mod config;
pub mod crypt;
pub mod error;
pub mod retention;
pub mod routes;
pub mod upload;

use axum::Router;
use axum::routing::get;
use freeagent_shared::capability::Signer;
use freeagent_shared::health::Health;
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::StorageConfig;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ObjectStore>,
    pub signer: Signer,
    pub part_size: usize,
    pub parts_in_flight: usize,
    pub certs: crypt::CertsCipher,
    /// Create-only (result) publishes of one key take turns in this process (`upload.rs`).
    pub publish_locks: Arc<upload::PublishLocks>,
    /// The build records, to check that an attempt-bound capability's attempt still runs.
    pub db: Option<sqlx::PgPool>,
}

pub fn router(state: AppState, health: Health) -> Router {
    Router::new()
        .route(
            "/objects/{*key}",
            get(routes::get_object)
                .head(routes::head_object)
                .put(routes::put_object)
                .delete(routes::delete_object),
        )
        .with_state(state)
        .merge(health.router())
}

pub struct App {
    listener: TcpListener,
    router: Router,
    health: Health,
    retention: Option<retention::Retention>,
}

impl App {
    pub async fn build(config: StorageConfig) -> anyhow::Result<Self> {
        let backend = backend::from_url(&config.backend_url, &config.backend)?;
        let part_size = config.effective_part_size(backend.kind);
        let store = backend.store.clone();
        let health = Health::new().check(
            "object_store",
            Arc::new(move || {
                let store = store.clone();
                Box::pin(async move {
                    // A key that never exists: NotFound proves the backend answers.
                    match store
                        .head(&object_store::path::Path::from("readyz-probe"))
                        .await
                    {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                })
            }),
        );
        // The pool connects lazily so that storage serves bytes even while Postgres is away
        // (retention then retries at its next interval; attempt-bound reads get a 503).
        // Two pools: retention's sweep holds a transaction while it lists a bucket, and must
        // never keep a worker's download waiting for a connection.
        let pool = |max| -> anyhow::Result<Option<sqlx::PgPool>> {
            let Some(url) = &config.database_url else {
                return Ok(None);
            };
            Ok(Some(freeagent_shared::db::connect_lazy(
                url,
                max,
                std::time::Duration::from_secs(5),
            )?))
        };
        let db = pool(4)?;
        let state = AppState {
            store: backend.store,
            signer: Signer::new(&config.signing_secret)
                .with_previous(config.signing_previous.clone()),
            part_size,
            parts_in_flight: config.parts_in_flight.max(1),
            certs: crypt::CertsCipher::new(config.certs_key, config.certs_keys_previous.clone()),
            publish_locks: Arc::default(),
            db: db.clone(),
        };
        let retention = match (&config.retention, pool(2)?) {
            (None, _) => None,
            (Some(_), None) => {
                anyhow::bail!("retention needs the build records: set FREEAGENT_DATABASE_URL")
            }
            (Some(rc), Some(pool)) => Some(retention::Retention::new(
                pool,
                state.store.clone(),
                rc.clone(),
            )),
        };
        let listener = TcpListener::bind((config.bind.as_str(), config.port))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {}:{}: {e}; set FREEAGENT_STORAGE_PORT",
                    config.bind,
                    config.port
                )
            })?;
        Ok(Self {
            router: router(state, health.clone()),
            listener,
            health,
            retention,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown`; in-flight requests finish first.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), "storage listening");
        let retention = self
            .retention
            .map(|r| tokio::spawn(r.run(shutdown.child_token())));
        let limits = freeagent_shared::http_server::ServerLimits::from_env()?;
        let served = self
            .health
            .serve(self.listener, self.router, &limits, shutdown.clone())
            .await;
        shutdown.cancel();
        if let Some(r) = retention {
            let _ = r.await;
        }
        served?;
        Ok(())
    }
}
