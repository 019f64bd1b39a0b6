//! Storage through the real binaries: a 1 GiB source round-trips through the gateway in bounded
//! memory; downloads offer length, ranges and HEAD; certs are ciphertext on disk and intact for
//! the worker holding the lease; retention purges finished builds and downloads then say so.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_shared::testing::wait;
use freeagent_tests::{API_KEY, Farm, FarmOpts, pack, project};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// Chunk `i` of a deterministic, incompressible-looking payload.
fn chunk(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..MIB as usize / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn submit_form(source: reqwest::multipart::Part) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("platform", "android")
        .part("source", source.file_name("source.tar.gz"))
}

async fn submit(farm: &Farm, form: reqwest::multipart::Form) -> serde_json::Value {
    let resp = farm
        .http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", API_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_round_trips_through_the_gateway_in_bounded_memory() {
    let mib: u64 = std::env::var("FREEAGENT_BIG_OBJECT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: vec![("FREEAGENT_SOURCE_LIMIT".into(), "4GiB".into())],
        ..Default::default()
    })
    .await;
    // Warm both processes up (allocator arenas, connection pools) before the baseline.
    let warm = submit(
        &farm,
        submit_form(reqwest::multipart::Part::bytes(chunk(0).repeat(4))),
    )
    .await;
    let warm_id = warm["id"].as_str().unwrap();
    let r = farm
        .http
        .get(format!(
            "{}/api/builds/{warm_id}/download/source",
            farm.gateway
        ))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len() as u64, 4 * MIB);
    let before = [farm.memory("storage").0, farm.memory("gateway").0];

    let mut expected = Sha256::new();
    for i in 0..mib {
        expected.update(chunk(i));
    }
    let expected = hex::encode(expected.finalize());
    let body = futures::stream::iter(0..mib).map(|i| Ok::<_, std::io::Error>(chunk(i)));
    let part =
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), mib * MIB);
    let submitted = submit(&farm, submit_form(part)).await;
    let id = submitted["id"].as_str().unwrap().to_owned();
    let b = farm.get_build(&id).await;
    let source = &b["artifacts"][0];
    assert_eq!(source["size"].as_u64(), Some(mib * MIB));
    assert_eq!(source["sha256"].as_str(), Some(expected.as_str()));

    let resp = farm
        .http
        .get(format!("{}/api/builds/{id}/download/source", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-checksum-sha256"], expected.as_str());
    assert_eq!(
        resp.headers()["content-length"],
        (mib * MIB).to_string().as_str()
    );
    let mut got = Sha256::new();
    let mut n = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        n += c.len() as u64;
        got.update(&c);
    }
    assert_eq!(n, mib * MIB);
    assert_eq!(hex::encode(got.finalize()), expected, "byte for byte");

    for (name, base) in ["storage", "gateway"].into_iter().zip(before) {
        let (_, peak) = farm.memory(name);
        let growth = peak.saturating_sub(base);
        eprintln!(
            "{name}: resident {} MiB before, peak {} MiB, growth {} MiB",
            base / MIB,
            peak / MIB,
            growth / MIB
        );
        assert!(
            growth < 64 * MIB,
            "{name} grew by {} MiB moving {mib} MiB",
            growth / MIB
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_offer_length_ranges_and_head_through_the_gateway() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let submitted = submit(
        &farm,
        submit_form(reqwest::multipart::Part::bytes(data.clone())),
    )
    .await;
    let id = submitted["id"].as_str().unwrap();
    let url = format!("{}/api/builds/{id}/download/source", farm.gateway);
    let get = |range: Option<&'static str>| {
        let mut req = farm.http.get(&url).header("x-api-key", API_KEY);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.send()
    };
    let first = get(Some("bytes=0-0")).await.unwrap();
    assert_eq!(first.status(), 206);
    assert_eq!(first.headers()["content-range"], "bytes 0-0/10000");
    assert_eq!(first.bytes().await.unwrap().as_ref(), &data[..1]);
    let last = get(Some("bytes=9999-")).await.unwrap();
    assert_eq!(last.status(), 206);
    assert_eq!(last.bytes().await.unwrap().as_ref(), &data[9999..]);
    let middle = get(Some("bytes=5000-5999")).await.unwrap();
    assert_eq!(middle.headers()["content-length"], "1000");
    assert_eq!(middle.bytes().await.unwrap().as_ref(), &data[5000..6000]);
    let past = get(Some("bytes=10000-")).await.unwrap();
    assert_eq!(past.status(), 416);
    let body: serde_json::Value = past.json().await.unwrap();
    assert_eq!(body["code"], "range_not_satisfiable");

    let head = farm
        .http
        .head(&url)
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "10000");
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    assert!(head.headers().contains_key("x-checksum-sha256"));

    // Statistics per kind, in the shape old scripts read plus `kinds`.
    let health: serde_json::Value = farm
        .http
        .get(format!("{}/health", farm.gateway))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["storage"]["backend"], "local");
    assert_eq!(health["storage"]["objects"], 1);
    assert_eq!(health["storage"]["bytes"], 10_000);
    assert_eq!(health["storage"]["kinds"]["source"]["bytes"], 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_are_ciphertext_on_disk_and_intact_for_the_leased_worker() {
    let farm = Farm::start(FarmOpts::default()).await;
    let dir = project(
        "set -eu\n\
         echo \"certs sha256 $(sha256sum \"$FREEAGENT_CERTS_PATH\" | cut -d' ' -f1)\"\n\
         echo done > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
    );
    let certs = b"-----BEGIN PRIVATE KEY-----\nnot really a key, but secret\n".repeat(100);
    let form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .part(
            "source",
            reqwest::multipart::Part::bytes(pack(dir.path())).file_name("s.tar.gz"),
        )
        .part(
            "certs",
            reqwest::multipart::Part::bytes(certs.clone()).file_name("certs.p12"),
        );
    let submitted = submit(&farm, form).await;
    let id = submitted["id"].as_str().unwrap().to_owned();

    let on_disk = std::fs::read(
        farm.data
            .path()
            .join("objects/builds")
            .join(&id)
            .join("certs"),
    )
    .unwrap();
    assert!(!on_disk.windows(11).any(|w| w == b"PRIVATE KEY"));
    assert!(!on_disk.windows(6).any(|w| w == b"secret"));

    // The submitter cannot read them back, not even with the API key.
    let r = farm
        .http
        .get(format!("{}/api/builds/{id}/download/certs", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    let want = format!("certs sha256 {}", hex::encode(Sha256::digest(&certs)));
    let logs = farm.logs(&id).await;
    assert!(logs.iter().any(|l| l == &want), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_finished_builds_and_downloads_say_gone() {
    let farm = Farm::start(FarmOpts {
        extra_env: vec![
            ("FREEAGENT_RETENTION".into(), "3s".into()),
            ("FREEAGENT_RETENTION_INTERVAL".into(), "300ms".into()),
        ],
        ..Default::default()
    })
    .await;
    let dir = project("echo hi > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let submitted = farm.submit_dir(dir.path(), "android").await;
    let id = submitted["id"].as_str().unwrap().to_owned();
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    let objects = farm.data.path().join("objects/builds").join(&id);

    let purged = wait::until(
        "retention to purge the build",
        Duration::from_secs(30),
        || async {
            let b = farm.get_build(&id).await;
            (!b["purged_at"].is_null()).then_some(b)
        },
    )
    .await;
    assert_eq!(purged["status"], "completed", "the history stays");
    assert_eq!(purged["has_result"], false);
    assert_eq!(purged["artifacts"], serde_json::json!([]));
    let left: Vec<_> = std::fs::read_dir(&objects)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let r = farm
        .http
        .get(format!("{}/api/builds/{id}/download", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "gone");

    // Storage's own count of what the store holds, by kind, as of its last sweep.
    let metrics = wait::until("storage gauges", Duration::from_secs(10), || async {
        let m = farm.metrics(&farm.storage).await?;
        m.contains("freeagent_storage_objects{kind=\"source\"} 0")
            .then_some(m)
    })
    .await;
    assert!(metrics.contains("freeagent_storage_bytes{kind=\"result\"} 0"));
}

/// Bytes altered at rest (bit rot, a tampering operator) are caught where they are read: the
/// worker refuses a source that does not hash to what was recorded, and `freeagent download`
/// refuses an artifact, saving nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_objects_are_refused_by_the_worker_and_the_cli() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let objects = farm.data.path().join("objects/builds");
    let flip = |path: std::path::PathBuf| {
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    };

    // The artifact of a finished build, corrupted after the fact: the CLI refuses it.
    let mut farm = farm;
    farm.spawn_worker(0);
    let ok = farm
        .submit_dir(&freeagent_tests::example("hello"), "android")
        .await;
    let ok_id = ok["id"].as_str().unwrap().to_owned();
    let b = farm.wait_terminal(&ok_id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    flip(objects.join(&ok_id).join("attempts/1/result"));
    let target = farm.data.path().join("downloaded.apk");
    let out = std::process::Command::new(freeagent_tests::bin_dir().join("freeagent"))
        .args(["download", &ok_id, "-o", target.to_str().unwrap()])
        .env("FREEAGENT_API_KEY", API_KEY)
        .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(!target.exists(), "nothing is saved");

    // A source corrupted between submit and run: the worker refuses to build it.
    farm.kill("worker-0");
    let dir = project("echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let bad = farm.submit_dir(dir.path(), "android").await;
    let bad_id = bad["id"].as_str().unwrap().to_owned();
    flip(objects.join(&bad_id).join("source"));
    farm.restart("worker-0");
    let b = farm.wait_terminal(&bad_id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "failed", "{b}");
    assert!(
        b["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("source checksum mismatch"),
        "{b}"
    );
}

/// Local objects are the storage service's alone (directories 0700, files 0600): a build running
/// under another uid on the same machine reads no other build's source, certs, results or logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_objects_are_private_to_the_storage_service() {
    use std::os::unix::fs::PermissionsExt;
    let farm = Farm::start(FarmOpts::default()).await;
    let dir = project("echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    fn walk(p: &std::path::Path, seen: &mut Vec<(String, u32, bool)>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            let mode = meta.permissions().mode() & 0o777;
            seen.push((e.path().display().to_string(), mode, meta.is_dir()));
            if meta.is_dir() {
                walk(&e.path(), seen);
            }
        }
    }
    let root = farm.data.path().join("objects");
    let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the store's root");
    let mut seen = vec![];
    walk(&root, &mut seen);
    assert!(
        seen.iter()
            .any(|(p, _, dir)| !dir && p.ends_with("/source"))
    );
    for (path, mode, dir) in seen {
        let want = if dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{path}");
    }
}
