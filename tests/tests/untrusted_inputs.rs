//! A build is untrusted input (issue 12): metadata, archives and logs are bounded, the farm (not
//! the worker) enforces a worker's capacity, and no capability signature reaches a build's error
//! message or log. Each against the real binaries.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::env;
use freeagent_tests::freeagent_shared::testing::{free_port, wait};
use freeagent_tests::{API_KEY, Farm, FarmOpts, project};
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// Submits `archive` (a file part named `file_name`) with extra text parts; the reply.
async fn submit_archive(
    farm: &Farm,
    archive: Vec<u8>,
    file_name: &str,
    parts: &[(&str, String)],
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .part(
            "source",
            reqwest::multipart::Part::bytes(archive).file_name(file_name.to_owned()),
        );
    for (k, v) in parts {
        form = form.text((*k).to_owned(), v.clone());
    }
    farm.http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", API_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

fn tar_gz(entries: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>)) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut b = tar::Builder::new(gz);
    entries(&mut b);
    b.into_inner().unwrap().finish().unwrap()
}

fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

/// Bytes of regular files under `dir`.
fn bytes_under(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_capped_well_below_the_nats_message_limit() {
    let farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    let dir = project("echo ok > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let archive = freeagent_tests::pack(dir.path());
    // {"k":"xxx…"} of exactly 64 KiB, then one byte more.
    let at_cap = format!("{{\"k\":\"{}\"}}", "x".repeat(65_536 - 8));
    assert_eq!(at_cap.len(), 65_536);
    let over = format!("{{\"k\":\"{}\"}}", "x".repeat(65_536 - 7));
    let r = submit_archive(&farm, archive.clone(), "s.tar.gz", &[("metadata", over)]).await;
    assert_eq!(r.status(), 413, "{}", r.text().await.unwrap_or_default());
    let body: Value = r.json().await.unwrap_or_default();
    assert!(body.is_null() || body["error"].is_string());
    let r = submit_archive(&farm, archive, "s.tar.gz", &[("metadata", at_cap)]).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_bombs_fail_with_a_clear_message_and_leave_no_files() {
    let farm = Farm::start(FarmOpts {
        workers: 1,
        extra_env: env(&[
            ("FREEAGENT_UNPACK_LIMIT", "16MiB"),
            ("FREEAGENT_UNPACK_ENTRIES", "1000"),
        ]),
        ..Default::default()
    })
    .await;
    let big = 64u64 << 20;
    // A tar.gz of a few hundred KiB that unpacks to 64 MiB of zeros.
    let tar_bomb = tar_gz(|b| {
        b.append_data(
            &mut file_header(big),
            "zeros.bin",
            std::io::repeat(0).take_bytes(big),
        )
        .unwrap();
    });
    // 5,000 empty files.
    let entry_bomb = tar_gz(|b| {
        for i in 0..5_000 {
            b.append_data(&mut file_header(0), format!("f/{i}"), std::io::empty())
                .unwrap();
        }
    });
    // A zip whose one entry inflates to 64 MiB.
    let zip_bomb = {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        z.start_file(
            "zeros.bin",
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        let block = vec![0u8; 1 << 20];
        for _ in 0..64 {
            z.write_all(&block).unwrap();
        }
        z.finish().unwrap().into_inner()
    };
    assert!(tar_bomb.len() < 1 << 20 && zip_bomb.len() < 1 << 20);
    let work = farm.data.path().join("work");
    for (archive, name, expect) in [
        (tar_bomb, "bomb.tar.gz", "FREEAGENT_UNPACK_LIMIT"),
        (entry_bomb, "files.tar.gz", "FREEAGENT_UNPACK_ENTRIES"),
        (zip_bomb, "bomb.zip", "FREEAGENT_UNPACK_LIMIT"),
    ] {
        let r = submit_archive(&farm, archive, name, &[("max_attempts", "1".into())]).await;
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let done = farm.wait_terminal(&id, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "failed", "{name}: {done}");
        let message = done["error_message"].as_str().unwrap_or_default();
        assert!(message.contains(expect), "{name}: {message}");
        // The worker's disk is back where it was: nothing of the archive is left.
        wait::until(
            "the workspace to be removed",
            Duration::from_secs(10),
            || async { (bytes_under(&work) == 0).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_stops_at_its_cap_and_spares_another_builds_log() {
    let farm = Farm::start(FarmOpts {
        workers: 2,
        extra_env: env(&[("FREEAGENT_LOG_MAX_BYTES", "20000")]),
        ..Default::default()
    })
    .await;
    let flood = project(
        "seq 1 100000 | sed 's/^/flood line /'\necho done > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
    );
    let quiet = project(
        "i=1; while [ $i -le 50 ]; do echo \"quiet $i\"; i=$((i+1)); sleep 0.02; done\n\
         echo done > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
    );
    let (a, b) = tokio::join!(
        farm.submit_dir(flood.path(), "android"),
        farm.submit_dir(quiet.path(), "android"),
    );
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    for id in [&a, &b] {
        let done = farm.wait_terminal(id, Duration::from_secs(120)).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let flood_log = farm.all_logs(&a).await;
    let flood_lines = flood_log
        .iter()
        .filter(|l| l.starts_with("flood line"))
        .count();
    assert!(flood_lines < 100_000, "the flood was not capped");
    let cut = flood_log
        .iter()
        .position(|l| l.contains("log truncated"))
        .unwrap_or_else(|| panic!("no truncation line in {} lines", flood_log.len()));
    // Past the cap only the flood's last lines are kept (where a compiler prints its error),
    // behind the note that says how many were dropped and where.
    let after: Vec<&String> = flood_log[cut + 1..]
        .iter()
        .filter(|l| l.starts_with("flood line"))
        .collect();
    // (The last 1,000 lines of the attempt: the flood's, and the worker's own after it.)
    let first_kept = 100_001 - after.len();
    assert!(after.len() >= 990, "{}", after.len());
    let last: Vec<String> = (first_kept..=100_000)
        .map(|i| format!("flood line {i}"))
        .collect();
    assert_eq!(
        after,
        last.iter().collect::<Vec<_>>(),
        "the flood's last lines"
    );
    assert!(
        flood_log[cut].contains("log lines dropped here (lines "),
        "{}",
        flood_log[cut]
    );
    let quiet_log = farm.all_logs(&b).await;
    let quiet_lines: Vec<&String> = quiet_log
        .iter()
        .filter(|l| l.starts_with("quiet"))
        .collect();
    assert_eq!(quiet_lines.len(), 50, "{quiet_log:?}");
    for (i, l) in quiet_lines.iter().enumerate() {
        assert_eq!(**l, format!("quiet {}", i + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_polls_from_a_one_build_worker_get_exactly_one_job() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let r: Value = farm
        .http
        .post(format!("{}/api/workers/register", farm.gateway))
        .header("x-api-key", API_KEY)
        .json(&serde_json::json!({
            "name": "mac",
            "capabilities": {"platforms": ["ios"], "max_concurrent_builds": 1},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = r["access_token"].as_str().unwrap().to_owned();
    let dir = project("true\n");
    let ids = farm.submit_many(dir.path(), "ios", 10, 4, &[]).await;
    let pool = farm.db.pool.clone();
    wait::until(
        "every build dispatched",
        Duration::from_secs(30),
        || async {
            let mut all = true;
            for id in &ids {
                let b = freeagent_tests::freeagent_shared::db::builds::build_get(
                    &pool,
                    id.parse().unwrap(),
                )
                .await
                .unwrap()
                .unwrap();
                all &= b.dispatched_at.is_some();
            }
            all.then_some(())
        },
    )
    .await;
    let polls = (0..10).map(|_| {
        let (http, url, token) = (
            farm.http.clone(),
            format!("{}/api/workers/poll?wait=5", farm.gateway),
            token.clone(),
        );
        async move {
            let v: Value = http
                .get(url)
                .header("x-worker-token", token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["job"]["id"].as_str().map(str::to_owned)
        }
    });
    // A poll that comes after the claim gets the job the worker holds again (the seed's
    // protocol); what matters is that only one build was handed out.
    let jobs: std::collections::HashSet<String> = futures::future::join_all(polls)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(jobs.len(), 1, "one worker of capacity 1 got {jobs:?}");
    let held = ids.len()
        - futures::future::join_all(ids.iter().map(|id| farm.get_build(id)))
            .await
            .iter()
            .filter(|b| b["status"] == "pending")
            .count();
    assert_eq!(held, 1, "builds taken by a worker of capacity 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_download_leaves_no_signature_in_the_error_message() {
    // The scheduler signs URLs for a storage nobody listens on: the worker's download fails
    // with an error that would name the URL.
    let closed = free_port().unwrap();
    let farm = Farm::start(FarmOpts {
        workers: 1,
        scheduler_env: env(&[(
            "FREEAGENT_STORAGE_ENDPOINT",
            &format!("http://127.0.0.1:{closed}"),
        )]),
        ..Default::default()
    })
    .await;
    let dir = project("true\n");
    let r = submit_archive(
        &farm,
        freeagent_tests::pack(dir.path()),
        "s.tar.gz",
        &[("max_attempts", "1".into())],
    )
    .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The worker tries the download for a minute (storage may be restarting) before it fails
    // the build: wait well past that.
    let done = farm.wait_terminal(&id, Duration::from_secs(150)).await;
    assert_eq!(done["status"], "failed", "{done}");
    let message = done["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("download"), "{message}");
    assert!(!message.contains("sig="), "a signature leaked: {message}");
    for line in farm.logs(&id).await {
        assert!(
            !line.contains("sig="),
            "a signature leaked into the log: {line}"
        );
    }
    let worker_log = farm.log_of("worker-0");
    assert!(
        !worker_log.contains("sig="),
        "a signature leaked into the worker's own log"
    );
}

/// `std::io::Read::take` on a repeat, spelled for readability above.
trait TakeBytes: std::io::Read + Sized {
    fn take_bytes(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeBytes for R {}
