//! The storage service: streams object bytes in and out of an object store, computes SHA-256 and
//! size on the way, and trusts only capability URLs signed by the gateway or scheduler. It holds
//! no user or build state.

pub mod backend;
pub mod config;
pub mod error;
pub mod routes;

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
}

impl App {
    pub async fn build(config: StorageConfig) -> anyhow::Result<Self> {
        let backend = backend::from_url(&config.backend_url)?;
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
        let state = AppState {
            store: backend.store,
            signer: Signer::new(&config.signing_secret),
            part_size: usize::try_from(config.part_size)
                .unwrap_or(usize::MAX)
                .max(5 << 20),
            parts_in_flight: config.parts_in_flight.max(1),
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
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown`; in-flight requests finish first.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), "storage listening");
        self.health
            .serve(self.listener, self.router, shutdown)
            .await?;
        Ok(())
    }
}
