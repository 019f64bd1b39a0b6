//! Everything the Free Agent processes agree on: ids, statuses, wire messages, subjects,
//! configuration helpers, errors, telemetry and token crypto. Declarations only.

pub mod api_error;
pub mod batcher;
pub mod capability;
pub mod config;
pub mod events;
pub mod exit;
pub mod ids;
pub mod metrics;
pub mod object_key;
pub mod redact;
pub mod shutdown;
pub mod status;
pub mod subjects;
pub mod team;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod wire;

#[cfg(all(feature = "db", feature = "nats"))]
pub mod announce;
#[cfg(feature = "api")]
pub mod api;
#[cfg(feature = "db")]
pub mod db;
#[cfg(feature = "nats")]
pub mod farm_log;
#[cfg(feature = "http")]
pub mod health;
#[cfg(feature = "http")]
pub mod http_server;
#[cfg(feature = "nats")]
pub mod log_budget;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "nats-auth")]
pub mod nats_auth;
#[cfg(feature = "nats")]
pub mod scheduler_client;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(all(feature = "db", feature = "nats-auth"))]
pub mod worker_credentials;
#[cfg(feature = "nats-auth")]
pub mod worker_identity;
#[cfg(all(feature = "db", feature = "nats"))]
pub mod worker_revocation;
