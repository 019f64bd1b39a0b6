//! One thin handler per operation: parse, authorise, call, shape the reply.

pub mod builds;
pub mod cancel;
pub mod certs_secure;
pub mod diagnostics;
pub mod download;
pub mod events;
pub mod health;
pub mod keys;
pub mod log_follow;
pub mod logs;
pub mod openapi;
pub mod reports;
pub mod retry;
pub mod submit;
pub mod table;
pub mod worker_protocol;
pub mod worker_reports;
pub mod worker_result;
pub mod workers;
