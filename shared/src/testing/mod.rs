//! Test harness shared by every crate's tests: a fresh Postgres database and a private
//! `nats-server` per test, both removed when the test ends, so tests run in parallel.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod db;
pub mod factory;
mod nats;
mod pg;
mod s3;
pub mod wait;

pub use db::{DEFAULT_ADMIN_URL, TestDb};
pub use nats::TestNats;
pub use pg::TestPg;
pub use s3::TestS3;

/// A free TCP port on loopback (bound then released; a rare race is retried by callers).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Installs a test log subscriber when `TEST_LOG` is set.
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("TEST_LOG_FILTER")
                    .unwrap_or_else(|_| "debug,sqlx=warn,async_nats=info".into()),
            )
            .with_test_writer()
            .try_init();
    }
}
