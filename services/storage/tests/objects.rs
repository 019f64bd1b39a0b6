//! The storage service over real HTTP, each test on every backend it can run on: a local
//! directory, and private emulators of S3 (moto), Azure Blob Storage (Azurite) and Google Cloud
//! Storage (fake-gcs-server), one per test. Streaming round trips, checksums, ranges,
//! capabilities and key rotation, refused and cut-off uploads that leave nothing behind, certs
//! encrypted at rest, retention and the orphan sweep, results that are write-once (replayed and
//! racing PUTs); plus a full disk (local) and an unreachable backend (S3).
//!
//! GCS runs only the tests that need no upload through object_store: its emulator serves
//! object_store's reads, listings and deletes but refuses its writes (see `emulators`), so those
//! tests put their objects in through the emulator's own API, and one test pins the gap down.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod emulators;

use emulators::{TestAzurite, TestGcs};
use freeagent_shared::capability::{Method, PreviousSecret, Signer};
use freeagent_shared::db;
use freeagent_shared::ids::{Attempt, BuildId};
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::testing::{TestDb, TestS3, factory};
use freeagent_shared::wire::StoredObject;
use freeagent_storage::backend::{self, BackendTuning};
use freeagent_storage::retention::{Retention, RetentionConfig};
use freeagent_storage::{App, StorageConfig};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-secret-test-secret-test-secret!";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Local,
    S3,
    Azure,
    Gcs,
}

/// Each listed test runs once per listed backend, as `<name>::<backend>` (`::local`, `::s3`,
/// `::azure`, `::gcs`).
macro_rules! on_backends {
    ($backends:tt: $($name:ident),* $(,)?) => {$(
        on_backends!(@one $name $backends);
    )*};
    (@one $name:ident [$($test:ident = $kind:ident),*]) => {
        mod $name {$(
            #[tokio::test]
            async fn $test() {
                super::$name(super::Kind::$kind).await
            }
        )*}
    };
}

// Everything that uploads through the service: not on GCS, whose emulator refuses
// object_store's uploads (`gcs_uploads_the_emulator_refuses_fail_closed` pins that down).
on_backends!([local = Local, s3 = S3, azure = Azure]:
    large_object_round_trips_with_its_checksum,
    small_object_round_trips,
    capabilities_are_checked_before_any_byte,
    signing_keys_rotate_without_downtime,
    oversized_and_cut_off_uploads_leave_nothing,
    certs_are_unreadable_at_rest_and_intact_for_their_holder,
    a_replayed_result_put_is_refused_and_the_result_kept,
    two_racing_result_puts_store_exactly_one_whole,
    a_large_replayed_result_put_is_refused_and_leaves_nothing_behind,
);

// Downloads, listings and deletes, with objects put straight into the store.
on_backends!([local = Local, s3 = S3, azure = Azure, gcs = Gcs]:
    ranges_serve_first_last_middle_and_refuse_past_the_end,
    retention_deletes_what_is_old_and_nothing_else,
    orphans_are_swept_after_the_grace_period_only,
);

/// The emulator a test's storage talks to, stopped (on `Drop`) when the test ends.
enum Emulator {
    // Held only to be dropped.
    S3(#[allow(dead_code)] TestS3),
    Azure(#[allow(dead_code)] TestAzurite),
    Gcs(TestGcs),
}

struct Storage {
    base: String,
    port: u16,
    signer: Signer,
    /// The same backend the service uses, for looking behind its back.
    store: Arc<dyn ObjectStore>,
    config: StorageConfig,
    dir: Option<tempfile::TempDir>,
    emulator: Option<Emulator>,
    _stop: tokio_util::sync::DropGuard,
}

async fn spawn(kind: Kind) -> Storage {
    spawn_with(kind, |_| {}).await
}

async fn spawn_with(kind: Kind, tweak: impl FnOnce(&mut StorageConfig)) -> Storage {
    // The tests' own HTTP clients need it (the app installs it only for cloud backends).
    freeagent_shared::tls::install_crypto_provider();
    let (dir, emulator, mut config) = match kind {
        Kind::Local => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("file://{}", dir.path().display());
            (Some(dir), None, StorageConfig::new(url, SECRET))
        }
        Kind::S3 => {
            let s3 = TestS3::start().await;
            let mut c = StorageConfig::new(s3.url("objects"), SECRET);
            c.backend.options = s3.options();
            (None, Some(Emulator::S3(s3)), c)
        }
        Kind::Azure => {
            let az = TestAzurite::start().await;
            let mut c = StorageConfig::new(az.url("objects"), SECRET);
            c.backend.options = az.options();
            (None, Some(Emulator::Azure(az)), c)
        }
        Kind::Gcs => {
            let gcs = TestGcs::start().await;
            let mut c = StorageConfig::new(gcs.url("objects"), SECRET);
            c.backend.options = gcs.options();
            (None, Some(Emulator::Gcs(gcs)), c)
        }
    };
    tweak(&mut config);
    serve(config, dir, emulator).await
}

/// A second storage process on `s`'s backend (as a replica would be), with `tweak` applied.
async fn spawn_beside(s: &Storage, tweak: impl FnOnce(&mut StorageConfig)) -> Storage {
    let mut config = s.config.clone();
    tweak(&mut config);
    serve(config, None, None).await
}

async fn serve(
    config: StorageConfig,
    dir: Option<tempfile::TempDir>,
    emulator: Option<Emulator>,
) -> Storage {
    let store = backend::from_url(&config.backend_url, &config.backend)
        .unwrap()
        .store;
    let app = App::build(config.clone()).await.unwrap();
    let port = app.port();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until(stop.clone()));
    Storage {
        base: format!("http://127.0.0.1:{port}"),
        port,
        signer: Signer::new(SECRET),
        store,
        config,
        dir,
        emulator,
        _stop: stop.drop_guard(),
    }
}

fn far() -> i64 {
    now() + 600
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

impl Storage {
    fn url(&self, m: Method, k: &ObjectKey, max: u64) -> String {
        self.signer.url(&self.base, m, k, far(), max)
    }

    /// Every object the backend lists, plus (on local disk) every file, staging files included:
    /// what a reader could ever see.
    async fn visible(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        if let Some(dir) = &self.dir {
            fn walk(p: &std::path::Path, out: &mut Vec<String>) {
                for e in std::fs::read_dir(p).unwrap().flatten() {
                    if e.path().is_dir() {
                        walk(&e.path(), out)
                    } else {
                        out.push(e.path().to_string_lossy().into_owned())
                    }
                }
            }
            walk(dir.path(), &mut out);
        }
        out
    }

    async fn put(&self, key: &ObjectKey, data: Vec<u8>) -> StoredObject {
        let resp = reqwest::Client::new()
            .put(self.url(Method::Put, key, 1 << 30))
            .body(data)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    }

    /// Writes `data` at `path` straight into the store, behind the service's back. On GCS through
    /// the emulator's own API (it refuses object_store's uploads), under the store's prefix.
    async fn seed(&self, path: &str, data: Vec<u8>) {
        match &self.emulator {
            Some(Emulator::Gcs(gcs)) => gcs.seed(&format!("objects/{path}"), data).await,
            _ => {
                let path = object_store::path::Path::from(path);
                self.store.put(&path, PutPayload::from(data)).await.unwrap();
            }
        }
    }

    /// An object at `key`: uploaded through the service, or seeded where the backend's
    /// emulator cannot take uploads (GCS).
    async fn put_or_seed(&self, key: &ObjectKey, data: Vec<u8>) {
        if let Some(Emulator::Gcs(_)) = &self.emulator {
            self.seed(&key.to_string(), data).await;
        } else {
            self.put(key, data).await;
        }
    }

    async fn get(&self, key: &ObjectKey) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.url(Method::Get, key, 0))
            .send()
            .await
            .unwrap()
    }
}

async fn large_object_round_trips_with_its_checksum(kind: Kind) {
    let s = spawn(kind).await;
    let key = ObjectKey::Source(BuildId::new());
    // Larger than a part on either backend: a multipart upload.
    let data = pattern(12 * 1024 * 1024);
    let stored = s.put(&key, data.clone()).await;
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
    assert!(
        s.signer
            .verify_receipt(&key, stored.size, &stored.sha256, &stored.receipt)
    );

    let got = s.get(&key).await;
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());

    let http = reqwest::Client::new();
    let head = http.head(s.url(Method::Get, &key, 0)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(head.headers()["accept-ranges"], "bytes");

    let del = http
        .delete(s.url(Method::Delete, &key, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(s.get(&key).await.status(), 404);
    assert!(s.visible().await.is_empty());
}

async fn small_object_round_trips(kind: Kind) {
    let s = spawn(kind).await;
    let key = ObjectKey::Source(BuildId::new());
    for data in [vec![], b"hello".to_vec()] {
        let stored = s.put(&key, data.clone()).await;
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(s.get(&key).await.bytes().await.unwrap().as_ref(), &data[..]);
    }
}

async fn ranges_serve_first_last_middle_and_refuse_past_the_end(kind: Kind) {
    let s = spawn(kind).await;
    let key = ObjectKey::Source(BuildId::new());
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    s.put_or_seed(&key, data.clone()).await;
    let http = reqwest::Client::new();
    let get = |r: &'static str| {
        let url = s.url(Method::Get, &key, 0);
        let http = http.clone();
        async move { http.get(url).header("range", r).send().await.unwrap() }
    };
    let first = get("bytes=0-0").await;
    assert_eq!(first.status(), 206);
    assert_eq!(first.headers()["content-range"], "bytes 0-0/1000");
    assert_eq!(first.headers()["content-length"], "1");
    assert_eq!(first.bytes().await.unwrap().as_ref(), &data[0..1]);
    let last = get("bytes=-1").await;
    assert_eq!(last.status(), 206);
    assert_eq!(last.headers()["content-range"], "bytes 999-999/1000");
    assert_eq!(last.bytes().await.unwrap().as_ref(), &data[999..]);
    let tail = get("bytes=990-").await;
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &data[990..]);
    let middle = get("bytes=100-199").await;
    assert_eq!(middle.headers()["content-range"], "bytes 100-199/1000");
    assert_eq!(middle.bytes().await.unwrap().as_ref(), &data[100..200]);
    let past = get("bytes=1000-").await;
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], "bytes */1000");
}

async fn capabilities_are_checked_before_any_byte(kind: Kind) {
    let s = spawn(kind).await;
    let key = ObjectKey::Source(BuildId::new());
    let other = ObjectKey::Certs(BuildId::new());
    let http = reqwest::Client::new();
    let put = |url: String, body: Vec<u8>| {
        let http = http.clone();
        async move {
            http.put(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let hello = || b"hello".to_vec();
    // Expired.
    let expired = s.signer.url(&s.base, Method::Put, &key, now() - 1, 100);
    assert_eq!(put(expired, hello()).await, 403);
    // Signed for another key.
    let moved = s
        .signer
        .url(&s.base, Method::Put, &other, far(), 100)
        .replace(&other.to_string(), &key.to_string());
    assert_eq!(put(moved, hello()).await, 403);
    // Signed for another method.
    assert_eq!(put(s.url(Method::Get, &key, 100), hello()).await, 403);
    // A raised size limit, a later expiry, an altered signature.
    let url = s.url(Method::Put, &key, 100);
    assert_eq!(
        put(url.replace("max=100", "max=100000"), hello()).await,
        403
    );
    let exp = far().to_string();
    let later = (far() + 3600).to_string();
    assert_eq!(put(url.replace(&exp, &later), hello()).await, 403);
    let sig_at = url.find("sig=").unwrap() + 4;
    let mut altered = url.clone();
    let flip = if &url[sig_at..sig_at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    altered.replace_range(sig_at..sig_at + 1, flip);
    assert_eq!(put(altered, hello()).await, 403);
    // Signed by someone else; no capability at all.
    let forged =
        Signer::new("another-secret-another-secret-!!").url(&s.base, Method::Put, &key, far(), 100);
    assert_eq!(put(forged, hello()).await, 403);
    assert_eq!(put(format!("{}/objects/{key}", s.base), hello()).await, 403);
    // Over the size limit the capability carries.
    assert_eq!(put(s.url(Method::Put, &key, 4), hello()).await, 413);
    // Hostile keys.
    let bad = format!(
        "{}/objects/builds/not-a-uuid/source?exp=1&max=1&sig=00",
        s.base
    );
    assert_eq!(put(bad, hello()).await, 400);
    let traversal = format!(
        "{}/objects/builds/%2E%2E/%2E%2E/etc?exp=1&max=1&sig=00",
        s.base
    );
    assert!([400, 404].contains(&put(traversal, hello()).await));
    // Reads are checked the same way.
    let r = http
        .get(s.signer.url(&s.base, Method::Get, &key, now() - 1, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(s.visible().await.is_empty(), "{:?}", s.visible().await);
}

async fn signing_keys_rotate_without_downtime(kind: Kind) {
    let old = Signer::new("the-old-secret-the-old-secret-!!!");
    let key = ObjectKey::Source(BuildId::new());
    let s = spawn_with(kind, |c| {
        c.signing_previous = Some(PreviousSecret {
            secret: "the-old-secret-the-old-secret-!!!".into(),
            until: None,
        })
    })
    .await;
    // A URL signed just before the rotation still works; so does one signed after it.
    let before = old.url(&s.base, Method::Put, &key, far(), 100);
    let r = reqwest::Client::new()
        .put(before)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.get(&key).await.status(), 200);

    // Once the grace period is over, the old secret is refused.
    let closed = spawn_beside(&s, |c| {
        c.signing_previous = Some(PreviousSecret {
            secret: "the-old-secret-the-old-secret-!!!".into(),
            until: Some(now() - 1),
        })
    })
    .await;
    let r = reqwest::Client::new()
        .get(old.url(&closed.base, Method::Get, &key, far(), 0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

async fn oversized_and_cut_off_uploads_leave_nothing(kind: Kind) {
    let s = spawn(kind).await;
    let key = ObjectKey::Source(BuildId::new());
    let http = reqwest::Client::new();
    // Declared too large: refused up front.
    let r = http
        .put(s.url(Method::Put, &key, 10))
        .body(vec![0u8; 11])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Chunked, so the size is only discovered mid-stream, after parts were uploaded.
    let chunks =
        futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![7u8; 1 << 20])));
    let r = http
        .put(s.url(Method::Put, &key, 15 << 20))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // Cut off: promise 20 MiB, send 10 MiB (parts are in flight by then), hang up.
    let url = s.url(Method::Put, &key, 1 << 30);
    let path = url.trim_start_matches(&s.base).to_owned();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 20971520\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..10 {
        tcp.write_all(&[1u8; 1 << 20]).await.unwrap();
    }
    tcp.shutdown().await.unwrap();
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink).await;
    freeagent_shared::testing::wait::until(
        "aborted upload cleaned up",
        Duration::from_secs(10),
        || async { s.visible().await.is_empty().then_some(()) },
    )
    .await;
    assert_eq!(s.get(&key).await.status(), 404);
}

async fn certs_are_unreadable_at_rest_and_intact_for_their_holder(kind: Kind) {
    let s = spawn(kind).await;
    let key = ObjectKey::Certs(BuildId::new());
    let mut certs = b"-----BEGIN PRIVATE KEY----- secret signing identity ".repeat(4000);
    certs.extend(pattern(300_000));
    let stored = s.put(&key, certs.clone()).await;
    assert_eq!(stored.size, certs.len() as u64);
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&certs)));

    // Behind the service's back: ciphertext, with no trace of the plaintext.
    let raw = s
        .store
        .get(&object_store::path::Path::from(key.to_string()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_ne!(raw.as_ref(), certs.as_slice());
    assert!(!raw.windows(27).any(|w| w == b"-----BEGIN PRIVATE KEY-----"));
    if let Some(dir) = &s.dir {
        let path = dir.path().join(key.to_string());
        assert_eq!(std::fs::read(path).unwrap(), raw.as_ref());
    }

    // Through a capability: the exact bytes, and HEAD tells their length.
    let got = s.get(&key).await;
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.headers()["content-length"],
        certs.len().to_string().as_str()
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), certs.as_slice());
    let head = reqwest::Client::new()
        .head(s.url(Method::Get, &key, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["content-length"],
        certs.len().to_string().as_str()
    );

    // A service with another key cannot read them: a 500 before any byte of the body, with an
    // error that names no secret; never a 200 whose body breaks off.
    let other = spawn_beside(&s, |c| c.certs_key = [9; 32]).await;
    let r = reqwest::Client::new()
        .get(s.signer.url(&other.base, Method::Get, &key, far(), 0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: serde_json::Value = r.json().await.expect("a whole JSON error body");
    assert_eq!(body["code"], "internal", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cannot be decrypted"),
        "{body}"
    );
}

/// A PUT of `data` to `key` through a fresh capability: status and body.
async fn put_status(s: &Storage, key: &ObjectKey, data: Vec<u8>) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .put(s.url(Method::Put, key, 1 << 30))
        .body(data)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The object at `key` is exactly `data`, served with its length.
async fn assert_stored(s: &Storage, key: &ObjectKey, data: &[u8]) {
    let got = s.get(key).await;
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.headers()["content-length"],
        data.len().to_string().as_str()
    );
    let body = got.bytes().await.unwrap();
    assert!(body.as_ref() == data, "stored bytes differ");
}

/// The backend holds `key` and nothing else (no provisional upload left behind).
async fn assert_only(s: &Storage, key: &ObjectKey) {
    let mut visible = s.visible().await;
    visible.retain(|p| !p.ends_with(&key.to_string()));
    assert!(visible.is_empty(), "left behind: {visible:?}");
}

fn assert_conflict(status: u16, body: &serde_json::Value) {
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "conflict");
    assert!(body["error"].as_str().unwrap().contains("never replaced"));
    assert!(body["hint"].as_str().unwrap().contains("new attempt"));
}

/// A result capability replayed after the upload succeeded (the same URL, other bytes) is
/// refused with 409; the stored result and its checksum are the first upload's.
async fn a_replayed_result_put_is_refused_and_the_result_kept(kind: Kind) {
    let s = spawn(kind).await;
    let key = ObjectKey::Result(BuildId::new(), Attempt::new(1).unwrap());
    let url = s.url(Method::Put, &key, 1 << 20);
    let http = reqwest::Client::new();
    let original = pattern(10_000);
    let first = http.put(&url).body(original.clone()).send().await.unwrap();
    assert_eq!(first.status(), 201);
    let stored: StoredObject = first.json().await.unwrap();
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&original)));

    for replay in [vec![0xEE; 10_000], original.clone(), vec![]] {
        let r = http.put(&url).body(replay).send().await.unwrap();
        let status = r.status().as_u16();
        assert_conflict(status, &r.json().await.unwrap());
    }
    assert_stored(&s, &key, &original).await;
    let got = s.get(&key).await.bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&got)), stored.sha256);
    assert_only(&s, &key).await;

    // Source keys keep their behaviour: the gateway may write them again.
    let source = ObjectKey::Source(BuildId::new());
    s.put(&source, b"one".to_vec()).await;
    s.put(&source, b"two".to_vec()).await;
    assert_stored(&s, &source, b"two").await;
}

/// Two uploads race for one result key, small (single PUTs) and multipart-sized: one gets 201,
/// the other 409, and the stored object is exactly the winner's bytes.
async fn two_racing_result_puts_store_exactly_one_whole(kind: Kind) {
    let s = spawn_with(kind, |c| c.part_size = Some(64 << 10)).await;
    let large = s.config.effective_part_size(backend_kind(kind)) + 300_000;
    for (round, len) in [1_000, large].into_iter().enumerate() {
        let key = ObjectKey::Result(BuildId::new(), Attempt::new(round as i32 + 1).unwrap());
        let a: Vec<u8> = pattern(len);
        let b: Vec<u8> = pattern(len).into_iter().map(|x| !x).collect();
        let ((sa, ba), (sb, bb)) = tokio::join!(
            put_status(&s, &key, a.clone()),
            put_status(&s, &key, b.clone())
        );
        let (winner, body, loser_status, loser_body) = match (sa, sb) {
            (201, 409) => (&a, ba, sb, bb),
            (409, 201) => (&b, bb, sa, ba),
            other => panic!("expected one 201 and one 409 for {len} bytes, got {other:?}"),
        };
        assert_conflict(loser_status, &loser_body);
        let stored: StoredObject = serde_json::from_value(body).unwrap();
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(winner)));
        assert_stored(&s, &key, winner).await;
        assert_only(&s, &key).await;
        // Clear the way for the next round's single-object check.
        s.store
            .delete(&object_store::path::Path::from(key.to_string()))
            .await
            .unwrap();
    }
}

/// A result larger than a part (a multipart upload to a provisional key) replayed: 409, the
/// original intact, and the replay's provisional object deleted.
async fn a_large_replayed_result_put_is_refused_and_leaves_nothing_behind(kind: Kind) {
    let s = spawn_with(kind, |c| c.part_size = Some(64 << 10)).await;
    let part = s.config.effective_part_size(backend_kind(kind));
    let key = ObjectKey::Result(BuildId::new(), Attempt::new(2).unwrap());
    let original = pattern(part * 2 + 12_345);
    let stored = s.put(&key, original.clone()).await;
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&original)));
    assert_only(&s, &key).await;

    let (status, body) = put_status(&s, &key, vec![0x55; part * 3]).await;
    assert_conflict(status, &body);
    // A small replay of a large result is refused the same way.
    let (status, body) = put_status(&s, &key, b"tiny".to_vec()).await;
    assert_conflict(status, &body);
    assert_stored(&s, &key, &original).await;
    assert_only(&s, &key).await;
}

fn backend_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Local => "local",
        Kind::S3 => "s3",
        Kind::Azure => "azure",
        Kind::Gcs => "gcs",
    }
}

async fn put_raw(s: &Storage, path: &str, n: usize) {
    s.seed(path, vec![1u8; n]).await;
}

fn retention(s: &Storage, db: &TestDb, orphan_grace: Duration) -> Retention {
    Retention::new(
        db.pool.clone(),
        s.store.clone(),
        RetentionConfig {
            max_age: Duration::from_secs(30 * 24 * 3600),
            orphan_grace,
            interval: Duration::from_secs(3600),
        },
    )
}

async fn retention_deletes_what_is_old_and_nothing_else(kind: Kind) {
    let s = spawn(kind).await;
    let tdb = TestDb::new().await;
    let pool = &tdb.pool;
    let old = factory::build(pool, Default::default()).await;
    let young = factory::build(pool, Default::default()).await;
    let old_running = factory::build(pool, Default::default()).await;
    for id in [old, young] {
        db::builds::build_cancel(pool, id).await.unwrap();
    }
    let month = Duration::from_secs(31 * 24 * 3600);
    for id in [old, old_running] {
        db::builds::retention_backdate(pool, id, month)
            .await
            .unwrap();
    }
    for id in [old, young, old_running] {
        put_raw(&s, &format!("builds/{id}/source"), 100).await;
        put_raw(&s, &format!("builds/{id}/attempts/1/result"), 1000).await;
    }
    // The archived log of the old build goes with it.
    put_raw(&s, &format!("builds/{old}/logs"), 10).await;

    let report = retention(&s, &tdb, Duration::from_secs(3600))
        .run_once()
        .await
        .unwrap();
    assert_eq!(report.builds_purged, 1);
    assert_eq!(
        report.objects_deleted, 3,
        "source, result and the log archive"
    );
    assert_eq!(report.orphans_deleted, 0);
    let mut left = s.visible().await;
    left.retain(|p| !p.contains(&old.to_string()));
    assert_eq!(s.visible().await.len(), left.len(), "old objects are gone");
    assert_eq!(
        s.store
            .list(None)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len(),
        4,
        "young and unfinished builds keep theirs"
    );
    let rec = db::builds::build_get(pool, old).await.unwrap().unwrap();
    assert!(rec.purged_at.is_some(), "the record says so");
    for id in [young, old_running] {
        let rec = db::builds::build_get(pool, id).await.unwrap().unwrap();
        assert!(rec.purged_at.is_none());
    }
    let stats = report.stats.unwrap();
    assert_eq!(stats["source"].objects, 2);
    assert_eq!(stats["result"].bytes, 2000);

    // A second run finds nothing more to do.
    let again = retention(&s, &tdb, Duration::from_secs(3600))
        .run_once()
        .await
        .unwrap();
    assert_eq!(again.builds_purged + again.orphans_deleted, 0);
}

async fn orphans_are_swept_after_the_grace_period_only(kind: Kind) {
    let s = spawn(kind).await;
    let tdb = TestDb::new().await;
    let known = factory::build(&tdb.pool, Default::default()).await;
    let orphan = BuildId::new();
    put_raw(&s, &format!("builds/{known}/source"), 10).await;
    put_raw(&s, &format!("builds/{orphan}/source"), 10).await;
    put_raw(&s, &format!("builds/{orphan}/certs"), 10).await;

    // Within the grace period (an upload whose build is being recorded right now): kept.
    let r = retention(&s, &tdb, Duration::from_secs(3600))
        .run_once()
        .await
        .unwrap();
    assert_eq!(r.orphans_deleted, 0);
    assert_eq!(r.stats.unwrap()["source"].objects, 2);

    // Past it: the orphan goes, the recorded build's object stays.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = retention(&s, &tdb, Duration::from_secs(1))
        .run_once()
        .await
        .unwrap();
    assert_eq!(r.orphans_deleted, 2);
    let left: Vec<String> = s
        .store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(left, vec![format!("builds/{known}/source")]);
}

/// Two replicas running retention at once split the expired builds: each is purged exactly
/// once, every object goes, and neither fails.
#[tokio::test]
async fn retention_on_two_replicas_purges_each_build_once() {
    let s = spawn(Kind::Local).await;
    let tdb = TestDb::new().await;
    let pool = &tdb.pool;
    let month = Duration::from_secs(31 * 24 * 3600);
    let mut ids = vec![];
    for _ in 0..250 {
        let id = factory::build(pool, Default::default()).await;
        db::builds::build_cancel(pool, id).await.unwrap();
        db::builds::retention_backdate(pool, id, month)
            .await
            .unwrap();
        put_raw(&s, &format!("builds/{id}/source"), 10).await;
        ids.push(id);
    }
    let (a, b) = (
        retention(&s, &tdb, Duration::from_secs(3600)),
        retention(&s, &tdb, Duration::from_secs(3600)),
    );
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.builds_purged + rb.builds_purged, 250, "{ra:?} {rb:?}");
    assert!(s.visible().await.is_empty());
    for id in ids {
        let rec = db::builds::build_get(pool, id).await.unwrap().unwrap();
        assert!(rec.purged_at.is_some());
    }
}

/// A full disk: a tmpfs of 4 MiB takes a 16 MiB upload. The client hears 507 and what to do;
/// nothing is left behind. Needs root (to mount); skipped with a note otherwise.
#[tokio::test]
async fn a_full_disk_is_a_clear_error_and_leaves_nothing() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.path().to_owned());
    let url = format!("file://{}", mnt.path().display());
    let s = spawn_with(Kind::Local, |c| c.backend_url = url.clone()).await;
    let key = ObjectKey::Source(BuildId::new());
    let r = reqwest::Client::new()
        .put(s.url(Method::Put, &key, 1 << 30))
        .body(pattern(16 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "storage_full");
    assert!(body["hint"].as_str().unwrap().contains("free space"));
    let left: Vec<_> = std::fs::read_dir(mnt.path()).unwrap().flatten().collect();
    let files: Vec<_> = walk_files(mnt.path());
    assert!(
        files.is_empty(),
        "left behind: {files:?} ({} entries)",
        left.len()
    );
    // Space freed, the same upload works.
    let small = pattern(1 << 20);
    s.put(&key, small.clone()).await;
    assert_eq!(
        s.get(&key).await.bytes().await.unwrap().as_ref(),
        &small[..]
    );
}

fn walk_files(p: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(p).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk_files(&e.path()));
        } else {
            out.push(e.path().to_string_lossy().into_owned());
        }
    }
    out
}

/// The known gap on GCS: fake-gcs-server refuses object_store's writes (an XML `PUT` it only
/// takes from signed URLs, multipart uploads, copies), so no upload can be tested there. Storage
/// must still fail closed: a clear 503 for a source (one PUT or multipart) and for a result (the
/// conditional PUT or the multipart upload before the create-only copy), and nothing visible.
/// Should this start to fail because the emulator took the upload, run the whole suite on GCS.
#[tokio::test]
async fn gcs_uploads_the_emulator_refuses_fail_closed() {
    let s = spawn(Kind::Gcs).await;
    let build = BuildId::new();
    let result = ObjectKey::Result(build, Attempt::new(1).unwrap());
    let large = s.config.effective_part_size("gcs") + 1;
    for (key, len) in [
        (ObjectKey::Source(build), 1_000),
        (ObjectKey::Source(build), large),
        (result, 1_000),
        (result, large),
    ] {
        let (status, body) = put_status(&s, &key, pattern(len)).await;
        assert_eq!(status, 503, "{key} ({len} bytes): {body}");
        assert_eq!(body["code"], "unavailable", "{body}");
        assert_eq!(s.get(&key).await.status(), 404);
    }
    assert!(s.visible().await.is_empty(), "{:?}", s.visible().await);
}

/// A backend that refuses connections, and one that accepts and never answers: the client gets
/// a 503 that says to retry, after the service's own bounded retries and timeouts, and
/// `/readyz` reports the object store as down.
#[tokio::test]
async fn an_unreachable_backend_is_a_clear_503() {
    let refused = freeagent_shared::testing::free_port().unwrap();
    backend_failure_is_a_clear_503(refused).await;
}

#[tokio::test]
async fn a_backend_that_hangs_times_out_with_a_clear_503() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    // Accepts and holds connections, never replies.
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    backend_failure_is_a_clear_503(port).await;
}

async fn backend_failure_is_a_clear_503(dead: u16) {
    let s = spawn_with(Kind::Local, |c| {
        c.backend_url = "s3://nowhere/objects".into();
        c.backend = BackendTuning {
            timeout: Duration::from_millis(500),
            retry_timeout: Duration::from_secs(1),
            max_retries: 2,
            options: TestS3Opts::dead(dead),
        };
    })
    .await;
    let key = ObjectKey::Source(BuildId::new());
    for (method, body) in [(reqwest::Method::PUT, "small"), (reqwest::Method::GET, "")] {
        let m = if method == reqwest::Method::PUT {
            Method::Put
        } else {
            Method::Get
        };
        let r = reqwest::Client::new()
            .request(method, s.url(m, &key, 100))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let b: serde_json::Value = r.json().await.unwrap();
        assert_eq!(b["code"], "unavailable");
        assert!(b["hint"].as_str().unwrap().contains("retry"));
    }
    let ready = reqwest::get(format!("{}/readyz", s.base)).await.unwrap();
    assert_eq!(ready.status(), 503);
}

struct TestS3Opts;

impl TestS3Opts {
    fn dead(port: u16) -> Vec<(String, String)> {
        [
            ("aws_endpoint", format!("http://127.0.0.1:{port}")),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", "k".into()),
            ("aws_secret_access_key", "s".into()),
            ("aws_region", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}
