//! Every metric name, in one place, and the process-wide Prometheus recorder behind `/metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Statements sent to Postgres, by `statement` (`<table>/<file>`, the `.sql` file's name).
pub const SQL_STATEMENTS: &str = "freeagent_sql_statements_total";
/// JetStream publishes whose acknowledgement the sender waited for, by `stream`.
pub const JETSTREAM_ACKS_AWAITED: &str = "freeagent_jetstream_acks_awaited_total";
pub const HTTP_REQUESTS: &str = "freeagent_http_requests_total";
pub const HTTP_CONNECTIONS_REFUSED: &str = "freeagent_http_connections_refused_total";
pub const HTTP_RATE_LIMITED: &str = "freeagent_http_rate_limited_total";
/// Times the gateway measured the farm figures behind /health and /api/stats (a table scan each).
pub const FIGURES_REFRESHES: &str = "freeagent_figures_refreshes_total";
pub const STORAGE_BYTES_WRITTEN: &str = "freeagent_storage_bytes_written_total";
pub const STORAGE_BYTES_READ: &str = "freeagent_storage_bytes_read_total";
pub const STORAGE_UPLOADS_REFUSED: &str = "freeagent_storage_uploads_refused_total";
/// Objects in the store by `kind` (source, certs, result, logs, other), as of the last sweep.
pub const STORAGE_OBJECTS: &str = "freeagent_storage_objects";
/// Bytes in the store by `kind`, as of the last sweep.
pub const STORAGE_BYTES: &str = "freeagent_storage_bytes";
pub const BUILDS_SUBMITTED: &str = "freeagent_builds_submitted_total";
pub const BUILDS_DISPATCHED: &str = "freeagent_builds_dispatched_total";
/// Dispatches published again because JetStream no longer held their message (lost, purged).
pub const DISPATCHES_REPUBLISHED: &str = "freeagent_dispatches_republished_total";
pub const DISPATCH_BATCH_SECONDS: &str = "freeagent_dispatch_batch_seconds";
pub const CLAIMS: &str = "freeagent_claims_total";
/// Seconds from dispatch to a granted claim.
pub const CLAIM_WAIT_SECONDS: &str = "freeagent_claim_wait_seconds";
pub const RETRIES: &str = "freeagent_retries_total";
pub const TIMEOUTS: &str = "freeagent_timeouts_total";
pub const CANCELS: &str = "freeagent_cancels_total";
pub const QUEUE_DEPTH: &str = "freeagent_queue_pending";
pub const QUEUE_LIVE_WORKERS: &str = "freeagent_queue_live_workers";
pub const BUILDS_FINISHED: &str = "freeagent_builds_finished_total";
pub const LEASES_EXPIRED: &str = "freeagent_leases_expired_total";
pub const WORKER_BUILDS: &str = "freeagent_worker_builds_total";
/// Worker requests the scheduler did not answer because their reply subject was not the
/// sender's own inbox (`subjects::reply_allowed`): a worker trying to make it publish elsewhere.
pub const REPLIES_REFUSED: &str = "freeagent_scheduler_replies_refused_total";
/// Workers whose registration the scheduler revoked, by `reason` (`connections`: more NATS
/// connections than `FREEAGENT_WORKER_MAX_CONNECTIONS`).
pub const WORKERS_REVOKED: &str = "freeagent_workers_revoked_total";
/// Worker log lines the scheduler's log gate stored on the LOGS stream.
pub const LOG_LINES_STORED: &str = "freeagent_log_lines_stored_total";
/// Worker log lines the gate turned away, by `reason`: `not_held` (not the sender's attempt),
/// `budget` (over the worker's rate; sent again later), `cap` (past the attempt's byte cap).
pub const LOG_LINES_REFUSED: &str = "freeagent_log_lines_refused_total";
/// Build logs the gateway's archiver wrote to storage and recorded.
pub const LOG_ARCHIVES: &str = "freeagent_log_archives_total";
/// Seconds to write one build's log archive, by `source`: `memory` (the gateway's live feed
/// held every line) or `stream` (read from LOGS).
pub const LOG_ARCHIVE_WRITE_SECONDS: &str = "freeagent_log_archive_write_seconds";
/// Seconds one page read of a stream took (a short-lived consumer: made, fetched, deleted), by
/// `stream`, not counting the wait for a turn among the gateway's page reads.
pub const STREAM_PAGE_SECONDS: &str = "freeagent_stream_page_seconds";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first use; later calls (several apps in one test process) share it.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render() -> String {
    handle().map(|h| h.render()).unwrap_or_default()
}
