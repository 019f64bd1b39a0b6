//! Bounded memory on the cloud backends: an object many parts long streams through storage into
//! a private S3 (moto) or Azure (Azurite) emulator and back, and the process's peak resident
//! memory grows by about part size × (parts in flight + 1), not by the object's size. Each
//! measurement runs in a fresh process of this test binary: memory another test freed stays with
//! the allocator and would hide growth. (GCS's emulator cannot take object_store's uploads: see
//! `objects.rs`.)
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod emulators;

use freeagent_shared::capability::{Method, Signer};
use freeagent_shared::ids::BuildId;
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::testing::TestS3;
use freeagent_shared::wire::StoredObject;
use freeagent_storage::{App, StorageConfig};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-secret-test-secret-test-secret!";
const MIB: usize = 1 << 20;
/// The object: 13 parts of the smallest part size clouds allow (5 MiB).
const OBJECT_MIB: usize = 64;
/// Part size × (2 in flight + 1) is 15 MiB; the rest is slack for the HTTP stacks and the
/// allocator. Storage holding the object whole would grow by about the object.
const MAX_GROWTH_MIB: u64 = 32;
/// Set in the process that [`in_own_process`] starts.
const CHILD: &str = "FREEAGENT_TEST_MEASURE";

#[test]
fn s3_streams_a_large_object_in_bounded_memory() {
    in_own_process("measure::s3");
}

#[test]
fn azure_streams_a_large_object_in_bounded_memory() {
    in_own_process("measure::azure");
}

/// Runs the test `name` alone in a new process of this binary; its output goes into the
/// failure message, not into this run's.
fn in_own_process(name: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the measurement");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{name} did not run:\n{stdout}");
    eprintln!("{}", stderr.trim());
}

mod measure {
    use super::*;

    #[tokio::test]
    #[ignore = "a measurement: runs in a process of its own, started by the test named after it"]
    async fn s3() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let s3 = TestS3::start().await;
        let mut config = StorageConfig::new(s3.url("objects"), SECRET);
        config.backend.options = s3.options();
        round_trip_in_bounded_memory(config).await;
    }

    #[tokio::test]
    #[ignore = "a measurement: runs in a process of its own, started by the test named after it"]
    async fn azure() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let az = emulators::TestAzurite::start().await;
        let mut config = StorageConfig::new(az.url("objects"), SECRET);
        config.backend.options = az.options();
        round_trip_in_bounded_memory(config).await;
    }
}

/// Chunk `i` of the object: 1 MiB that differs from every other chunk.
fn chunk(i: usize) -> Vec<u8> {
    (0..MIB).map(|j| ((i * 7 + j) % 251) as u8).collect()
}

/// This process's resident memory now and at its peak since the last [`reset_peak`], in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let field = |f: &str| {
        status
            .lines()
            .find(|l| l.starts_with(f))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("a memory field in /proc/self/status")
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts the peak over from the current resident size (Linux: `clear_refs` mode 5).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak resident size");
}

async fn round_trip_in_bounded_memory(mut config: StorageConfig) {
    freeagent_shared::tls::install_crypto_provider();
    config.part_size = Some(5 * MIB as u64);
    let app = App::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until(stop.clone()));
    let _stop = stop.drop_guard();
    let signer = Signer::new(SECRET);
    let key = ObjectKey::Source(BuildId::new());
    let http = reqwest::Client::new();
    let far = chrono::Utc::now().timestamp() + 600;

    let mut expected = Sha256::new();
    for i in 0..OBJECT_MIB {
        expected.update(chunk(i));
    }
    let expected = hex::encode(expected.finalize());

    // Bodies are made chunk by chunk as they are sent, so the test holds none of them either.
    let body = |mib: usize| {
        let chunks = futures::stream::iter(0..mib).map(|i| Ok::<_, std::io::Error>(chunk(i)));
        reqwest::Body::wrap_stream(chunks)
    };
    // Warm up (connection pools, allocator arenas) with a multipart object of two parts and a
    // bit, so the measurement sees only what grows with the object.
    let warm = ObjectKey::Source(BuildId::new());
    let r = http
        .put(signer.url(&base, Method::Put, &warm, far, 1 << 30))
        .body(body(11))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    reset_peak();
    let (before, _) = memory();

    let r = http
        .put(signer.url(&base, Method::Put, &key, far, 1 << 30))
        .header("content-length", (OBJECT_MIB * MIB).to_string())
        .body(body(OBJECT_MIB))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let stored: StoredObject = r.json().await.unwrap();
    assert_eq!(stored.size, (OBJECT_MIB * MIB) as u64);
    assert_eq!(stored.sha256, expected);

    let r = http
        .get(signer.url(&base, Method::Get, &key, far, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = Sha256::new();
    let mut n = 0;
    let mut stream = r.bytes_stream();
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        n += c.len();
        got.update(&c);
    }
    assert_eq!(n, OBJECT_MIB * MIB);
    assert_eq!(hex::encode(got.finalize()), expected, "byte for byte");

    let (_, peak) = memory();
    let growth = peak.saturating_sub(before) / MIB as u64;
    eprintln!(
        "{OBJECT_MIB} MiB round trip: resident {} MiB before, peak growth {growth} MiB",
        before / MIB as u64
    );
    assert!(
        growth < MAX_GROWTH_MIB,
        "storage grew by {growth} MiB moving {OBJECT_MIB} MiB"
    );
}
