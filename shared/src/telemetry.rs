//! Tracing setup: JSON lines when stdout is not a terminal (or `FREEAGENT_LOG_FORMAT=json`),
//! human-readable text otherwise. `RUST_LOG` filters, defaulting to `info`.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let json = match std::env::var("FREEAGENT_LOG_FORMAT").ok().as_deref() {
        Some("json") => true,
        Some("text") => false,
        _ => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
    let _ = crate::metrics::handle();
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}
