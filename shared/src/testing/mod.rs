//! Test harness shared by every crate's tests: a fresh Postgres database and a private
//! `nats-server` per test, both removed when the test ends, so tests run in parallel.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod db;
pub mod factory;
mod nats;
mod pg;
mod s3;
pub mod sse;
pub mod wait;

pub use db::{DEFAULT_ADMIN_URL, TestDb};
pub use nats::{NodePlace, TestNats};
pub use pg::TestPg;
pub use s3::TestS3;

/// Postgres connections each process of a test may hold (`FREEAGENT_DATABASE_POOL` for the
/// services a test starts, and the test's own pool). The machine's Postgres admits 100 clients by
/// default and fails the rest with "too many clients": a test holds at most about 20 (three
/// scheduler replicas and the test itself), so four tests at once, two suites side by side, fit.
pub const TEST_DATABASE_POOL: u32 = 4;

/// A free TCP port on loopback that no other caller in this process has been given.
///
/// Ports are handed to child processes before they bind, so two things must not happen: the same
/// port given twice (the kernel's `bind(0)` can hand a just-released port straight back), and a
/// port taken meanwhile by someone's outgoing connection. So ports come from below the kernel's
/// ephemeral range (which outgoing connections and `bind(0)` draw from), start at an offset drawn
/// from the process id (test binaries running side by side rarely meet), are never repeated within
/// a process, and are checked free by binding.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000; // 10000..32000, below Linux's default ephemeral range (32768..)
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = std::process::id().wrapping_mul(7_919) % COUNT;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..COUNT {
        let port = FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT;
        let port = u16::try_from(port).map_err(std::io::Error::other)?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port in 10000..32000"))
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
