//! The storage service over real HTTP on a local directory: streaming round trips, checksums,
//! ranges, capabilities, and refused uploads that leave nothing behind.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_shared::capability::{Method, Signer};
use freeagent_shared::ids::BuildId;
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::wire::StoredObject;
use freeagent_storage::{App, StorageConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-secret-test-secret-test-secret!";

struct Storage {
    base: String,
    port: u16,
    signer: Signer,
    dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

async fn spawn() -> Storage {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        bind: "127.0.0.1".into(),
        port: 0,
        backend_url: dir.path().to_string_lossy().into_owned(),
        signing_secret: SECRET.into(),
        part_size: 5 << 20,
        parts_in_flight: 2,
    };
    let app = App::build(config).await.unwrap();
    let port = app.port();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until(stop.clone()));
    Storage {
        base: format!("http://127.0.0.1:{port}"),
        port,
        signer: Signer::new(SECRET),
        dir,
        _stop: stop.drop_guard(),
    }
}

fn far() -> i64 {
    chrono_now() + 600
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Storage {
    fn url(&self, m: Method, k: &ObjectKey, max: u64) -> String {
        self.signer.url(&self.base, m, k, far(), max)
    }

    /// Files under the backend directory (staging files included), to prove nothing was left.
    fn files(&self) -> Vec<String> {
        fn walk(p: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out)
                } else {
                    out.push(e.path().to_string_lossy().into_owned())
                }
            }
        }
        let mut out = vec![];
        walk(self.dir.path(), &mut out);
        out
    }
}

#[tokio::test]
async fn large_object_round_trips_with_its_checksum() {
    let s = spawn().await;
    let key = ObjectKey::Source(BuildId::new());
    let data: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let http = reqwest::Client::new();
    let resp = http
        .put(s.url(Method::Put, &key, 1 << 30))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let stored: StoredObject = resp.json().await.unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
    assert!(
        s.signer
            .verify_receipt(&key, stored.size, &stored.sha256, &stored.receipt)
    );

    let got = http.get(s.url(Method::Get, &key, 0)).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());

    let head = http.head(s.url(Method::Get, &key, 0)).send().await.unwrap();
    assert_eq!(
        head.headers()["content-length"],
        data.len().to_string().as_str()
    );

    let del = http
        .delete(s.url(Method::Delete, &key, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let gone = http.get(s.url(Method::Get, &key, 0)).send().await.unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn ranges_serve_first_last_middle_and_refuse_past_the_end() {
    let s = spawn().await;
    let key = ObjectKey::Source(BuildId::new());
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let http = reqwest::Client::new();
    http.put(s.url(Method::Put, &key, 10_000))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let get = |r: &'static str| {
        let url = s.url(Method::Get, &key, 0);
        let http = http.clone();
        async move { http.get(url).header("range", r).send().await.unwrap() }
    };
    let first = get("bytes=0-0").await;
    assert_eq!(first.status(), 206);
    assert_eq!(first.headers()["content-range"], "bytes 0-0/1000");
    assert_eq!(first.bytes().await.unwrap().as_ref(), &data[0..1]);
    let last = get("bytes=-1").await;
    assert_eq!(last.headers()["content-range"], "bytes 999-999/1000");
    assert_eq!(last.bytes().await.unwrap().as_ref(), &data[999..]);
    let middle = get("bytes=100-199").await;
    assert_eq!(middle.bytes().await.unwrap().as_ref(), &data[100..200]);
    let past = get("bytes=1000-").await;
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], "bytes */1000");
}

#[tokio::test]
async fn capabilities_are_checked_before_any_byte() {
    let s = spawn().await;
    let key = ObjectKey::Source(BuildId::new());
    let other = ObjectKey::Certs(BuildId::new());
    let http = reqwest::Client::new();
    let put = |url: String| {
        let http = http.clone();
        async move {
            http.put(url)
                .body("hello")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Expired, for another key, another method, tampered, no capability, hostile key.
    assert_eq!(
        put(s
            .signer
            .url(&s.base, Method::Put, &key, chrono_now() - 1, 100))
        .await,
        403
    );
    assert_eq!(
        put(s
            .signer
            .url(&s.base, Method::Put, &other, far(), 100)
            .replace(&other.to_string(), &key.to_string()))
        .await,
        403
    );
    assert_eq!(put(s.url(Method::Get, &key, 100)).await, 403);
    assert_eq!(
        put(s
            .url(Method::Put, &key, 100)
            .replace("max=100", "max=100000"))
        .await,
        403
    );
    assert_eq!(put(format!("{}/objects/{key}", s.base)).await, 403);
    assert_eq!(
        put(format!(
            "{}/objects/builds/not-a-uuid/source?exp=1&max=1&sig=00",
            s.base
        ))
        .await,
        400
    );
    assert!(
        [400, 404].contains(
            &put(format!(
                "{}/objects/builds/%2E%2E/%2E%2E/etc?exp=1&max=1&sig=00",
                s.base
            ))
            .await
        )
    );
    assert!(s.files().is_empty(), "{:?}", s.files());
}

#[tokio::test]
async fn oversized_and_cut_off_uploads_leave_nothing() {
    let s = spawn().await;
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
    // Chunked, so the size is only discovered mid-stream.
    let chunks =
        futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![7u8; 1 << 20])));
    let r = http
        .put(s.url(Method::Put, &key, 5 << 20))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // Cut off: promise 1 MiB, send 1 KiB, hang up.
    let url = s.url(Method::Put, &key, 1 << 30);
    let path = url.trim_start_matches(&s.base).to_owned();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&[1u8; 1024]).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink).await;
    // Give the server a moment to observe the hang-up and abort.
    freeagent_shared::testing::wait::until(
        "aborted upload cleaned up",
        std::time::Duration::from_secs(5),
        || async { s.files().is_empty().then_some(()) },
    )
    .await;
    let gone = http.get(s.url(Method::Get, &key, 0)).send().await.unwrap();
    assert_eq!(gone.status(), 404);
}
