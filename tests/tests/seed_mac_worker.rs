//! The seed's macOS worker app and its VM scripts, replayed call for call: the app registers
//! with its one API key and no NATS key, polls with `?worker_id=`, downloads the source with
//! `X-Worker-Id`; the VM's bootstrap fetches `certs-secure` with `X-Worker-Id` and
//! `X-Build-Id`, and its monitor posts telemetry every 30 s; the app uploads the outcome as a
//! multipart form naming the worker inside it. The app never calls a heartbeat route.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::{API_KEY, Farm, FarmOpts, REGISTRATION_KEY, example, pack};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

/// The app's registration: `X-API-Key`, `{name, capabilities}`, 200 expected, `id` kept.
async fn register_like_the_app(farm: &Farm, name: &str) -> String {
    register_with(farm, API_KEY, name).await
}

async fn register_with(farm: &Farm, key: &str, name: &str) -> String {
    let r = farm
        .http
        .post(format!("{}/api/workers/register", farm.gateway))
        .header("x-api-key", key)
        .json(&json!({
            "name": name,
            "capabilities": {"platforms": ["ios"], "maxConcurrentBuilds": 1, "maxMemoryGB": 8,
                             "maxCPUPercent": 80, "xcode_version": "15.0"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the app treats anything else as a failure");
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The app's poll (no wait: it polls on its own timer), until a job comes.
async fn poll_like_the_app(farm: &Farm, worker: &str) -> Value {
    poll_with(farm, API_KEY, worker).await
}

async fn poll_with(farm: &Farm, key: &str, worker: &str) -> Value {
    wait::until("a job for the app", Duration::from_secs(60), || async {
        let r = farm
            .http
            .get(format!(
                "{}/api/workers/poll?worker_id={worker}",
                farm.gateway
            ))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        (!v["job"].is_null()).then(|| v["job"].clone())
    })
    .await
}

/// The VM's request for its certs, as `free-agent-vm-bootstrap` sends it.
async fn certs_secure(
    farm: &Farm,
    build: &str,
    worker: &str,
    named: Option<&str>,
) -> reqwest::Response {
    certs_secure_with(farm, API_KEY, build, worker, named).await
}

async fn certs_secure_with(
    farm: &Farm,
    key: &str,
    build: &str,
    worker: &str,
    named: Option<&str>,
) -> reqwest::Response {
    let mut r = farm
        .http
        .get(format!("{}/api/builds/{build}/certs-secure", farm.gateway))
        .header("x-api-key", key)
        .header("x-worker-id", worker)
        .header("accept", "application/json");
    if let Some(named) = named {
        r = r.header("x-build-id", named);
    }
    r.send().await.unwrap()
}

/// The app's source download: the key and `X-Worker-Id`, at the job's `source_url`.
async fn download_like_the_app(
    farm: &Farm,
    key: &str,
    worker: &str,
    job: &Value,
) -> reqwest::Response {
    farm.http
        .get(format!(
            "{}{}",
            farm.gateway,
            job["source_url"].as_str().unwrap()
        ))
        .header("x-api-key", key)
        .header("x-worker-id", worker)
        .send()
        .await
        .unwrap()
}

/// `vm-monitor.sh`'s heartbeat telemetry.
async fn telemetry_like_the_vm(
    farm: &Farm,
    key: &str,
    build: &str,
    worker: &str,
    data: Value,
) -> reqwest::Response {
    farm.http
        .post(format!("{}/api/builds/{build}/telemetry", farm.gateway))
        .header("x-api-key", key)
        .header("x-worker-id", worker)
        .header("x-build-id", build)
        .json(&json!({"type": "heartbeat", "timestamp": "2026-12-05T00:00:00Z", "data": data}))
        .send()
        .await
        .unwrap()
}

/// The app's upload: the key header, the worker named inside the form.
async fn upload_like_the_app(
    farm: &Farm,
    key: &str,
    build: &str,
    worker: &str,
) -> reqwest::Response {
    let form = Form::new()
        .text("build_id", build.to_owned())
        .text("worker_id", worker.to_owned())
        .text("success", "true")
        .part("result", Part::bytes(b"ipa".to_vec()).file_name("app.ipa"));
    farm.http
        .post(format!("{}/api/workers/upload", farm.gateway))
        .header("x-api-key", key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

fn certs_zip() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in [
        ("dist.p12", &b"PKCS12 bytes"[..]),
        ("password.txt", b"hunter2\n"),
        ("app.mobileprovision", b"profile bytes"),
    ] {
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

async fn submit_ios(farm: &Farm, certs: Option<Vec<u8>>) -> String {
    let mut form = Form::new().text("platform", "ios").part(
        "source",
        Part::bytes(pack(&example("hello"))).file_name("source.tar.gz"),
    );
    if let Some(c) = certs {
        form = form.part("certs", Part::bytes(c).file_name("certs.zip"));
    }
    let r = farm
        .http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", API_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn farm_opts() -> FarmOpts {
    FarmOpts {
        workers: 0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_bootstrap_gets_the_certs_as_the_seed_served_them() {
    let farm = Farm::start(farm_opts()).await;
    let id = submit_ios(&farm, Some(certs_zip())).await;
    let mac = register_like_the_app(&farm, "mac-1").await;
    let job = poll_like_the_app(&farm, &mac).await;
    assert_eq!(job["id"], id.as_str());

    let r = certs_secure(&farm, &id, &mac, Some(&id)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let c: Value = r.json().await.unwrap();
    // The keys the bootstrap requires, with the bundle's contents.
    assert_eq!(
        B64.decode(c["p12"].as_str().unwrap()).unwrap(),
        b"PKCS12 bytes"
    );
    assert_eq!(c["p12Password"], "hunter2");
    assert!(c["keychainPassword"].as_str().unwrap().len() >= 32);
    let profiles = c["provisioningProfiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 1);
    assert_eq!(
        B64.decode(profiles[0].as_str().unwrap()).unwrap(),
        b"profile bytes"
    );

    // The seed's refusals: no X-Build-Id 401, another build's id 403, not the holder 403.
    assert_eq!(certs_secure(&farm, &id, &mac, None).await.status(), 401);
    let other_id = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        certs_secure(&farm, &id, &mac, Some(&other_id))
            .await
            .status(),
        403
    );
    let stranger = register_like_the_app(&farm, "mac-2").await;
    assert_eq!(
        certs_secure(&farm, &id, &stranger, Some(&id))
            .await
            .status(),
        403
    );
    // Without a key, nothing.
    let r = farm
        .http
        .get(format!("{}/api/builds/{id}/certs-secure", farm.gateway))
        .header("x-worker-id", &mac)
        .header("x-build-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A build without certs: 404, as the seed answered.
    let bare = submit_ios(&farm, None).await;
    let job = poll_like_the_app(&farm, &stranger).await;
    assert_eq!(job["id"], bare.as_str());
    assert_eq!(
        certs_secure(&farm, &bare, &stranger, Some(&bare))
            .await
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_whose_only_traffic_is_its_own_keeps_its_build_past_many_nats_leases() {
    // NATS workers' lease 2 s; HTTP workers' 10 s. The build below lasts 25 s, during which
    // only the app's own traffic arrives: telemetry and log lines, never a heartbeat.
    let farm = Farm::start(FarmOpts {
        lease: "2s",
        scheduler_env: vec![("FREEAGENT_HTTP_LEASE".into(), "10s".into())],
        ..farm_opts()
    })
    .await;
    let id = submit_ios(&farm, None).await;
    let mac = register_like_the_app(&farm, "mac").await;
    let job = poll_like_the_app(&farm, &mac).await;
    assert_eq!(job["id"], id.as_str());
    let src = download_like_the_app(&farm, API_KEY, &mac, &job).await;
    assert_eq!(src.status(), 200);
    // Several NATS leases pass with no report at all (the VM boots): the build stays held.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(25) {
        n += 1;
        let data = json!({"cpu_percent": 50, "memory_mb": 900});
        let r = telemetry_like_the_vm(&farm, API_KEY, &id, &mac, data).await;
        assert_eq!(
            r.status(),
            200,
            "telemetry {n}: {}",
            r.text().await.unwrap()
        );
        let r = farm
            .http
            .post(format!("{}/api/builds/{id}/logs", farm.gateway))
            .header("x-api-key", API_KEY)
            .header("x-worker-id", &mac)
            .json(&json!({"level": "info", "message": format!("line {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The menu bar's active builds and the Statistics window, in the types Swift decodes:
    // `started_at: Int64?` (milliseconds), `uptime: String?` ("1m 23s").
    let active: Value = farm
        .http
        .get(format!("{}/api/builds/active", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let started = active["builds"][0]["started_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("{active}"));
    assert!(
        started > 1_700_000_000_000,
        "milliseconds since the epoch: {started}"
    );
    for k in ["id", "status", "platform"] {
        assert!(active["builds"][0][k].is_string(), "{k}: {active}");
    }
    let stats: Value = farm
        .http
        .get(format!("{}/api/workers/{mac}/stats", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uptime = stats["uptime"]
        .as_str()
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(uptime.ends_with('s') || uptime.ends_with('m'), "{uptime}");
    for k in ["totalBuilds", "successfulBuilds", "failedBuilds"] {
        assert!(stats[k].is_i64(), "{k}: {stats}");
    }
    for k in ["workerName", "status"] {
        assert!(stats[k].is_string(), "{k}: {stats}");
    }

    let r = upload_like_the_app(&farm, API_KEY, &id, &mac).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let b = farm.get_build(&id).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempt"], 1, "the lease never lapsed: {b}");
}

/// The issue's own scenario at the app's own pace and the farm's default leases (30 s for NATS
/// workers, 2 minutes for HTTP ones): a 100 s build during which only the app's traffic arrives
/// — the poll and source download, 40 s of VM boot in silence, the VM's certs fetch, then its
/// telemetry and a log line every 30 s — uploads (200) and completes on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_s_build_at_the_apps_pace_completes_on_the_default_leases() {
    let farm = Farm::start(farm_opts()).await;
    let id = submit_ios(&farm, Some(certs_zip())).await;
    let mac = register_like_the_app(&farm, "mac").await;
    let job = poll_like_the_app(&farm, &mac).await;
    assert_eq!(job["id"], id.as_str());
    let started = std::time::Instant::now();
    let src = download_like_the_app(&farm, API_KEY, &mac, &job).await;
    assert_eq!(src.status(), 200);
    // The app's pace, not a wait for a condition: the VM boots, then reports every 30 s.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let certs = certs_secure(&farm, &id, &mac, Some(&id)).await;
    assert_eq!(certs.status(), 200, "{}", certs.text().await.unwrap());
    let mut n = 0;
    loop {
        n += 1;
        let data = json!({"cpu_percent": 50, "memory_mb": 900});
        let r = telemetry_like_the_vm(&farm, API_KEY, &id, &mac, data).await;
        assert_eq!(
            r.status(),
            200,
            "telemetry {n}: {}",
            r.text().await.unwrap()
        );
        let r = farm
            .http
            .post(format!("{}/api/builds/{id}/logs", farm.gateway))
            .header("x-api-key", API_KEY)
            .header("x-worker-id", &mac)
            .json(&json!({"level": "info", "message": format!("line {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        if started.elapsed() >= Duration::from_secs(100) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let r = upload_like_the_app(&farm, API_KEY, &id, &mac).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let b = farm.get_build(&id).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempt"], 1, "the lease never lapsed: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_mac_loses_its_build_after_the_http_lease() {
    let farm = Farm::start(FarmOpts {
        lease: "2s",
        scheduler_env: vec![("FREEAGENT_HTTP_LEASE".into(), "4s".into())],
        ..farm_opts()
    })
    .await;
    let id = submit_ios(&farm, None).await;
    let mac = register_like_the_app(&farm, "mac").await;
    poll_like_the_app(&farm, &mac).await;
    // No report: the build goes back to the queue for its next attempt.
    wait::until(
        "the build to be requeued",
        Duration::from_secs(60),
        || async {
            let b = farm.get_build(&id).await;
            (b["attempt"].as_i64() >= Some(2) || b["status"] == "pending").then_some(())
        },
    )
    .await;
}

/// A Mac holds one key of its own, with the `worker` scope: configured with it alone, it
/// registers, takes and runs builds, fetches its certs, shows its menu bar and Statistics
/// window, and uploads; it sees no other machine's workers or builds. The fleet's shared
/// registration-only key registers and nothing more: polling with it is a 403 that says which
/// key to use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_with_its_own_worker_key_does_all_it_needs_and_no_more() {
    let farm = Farm::start(farm_opts()).await;
    let created: Value = farm
        .http
        .post(format!("{}/api/keys", farm.gateway))
        .header("x-api-key", API_KEY)
        .json(&json!({"name": "mac-mini-1", "scopes": ["worker"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mac_key = created["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let key = mac_key.as_str();
    let get = |path: String| {
        farm.http
            .get(format!("{}{path}", farm.gateway))
            .header("x-api-key", key)
            .send()
    };
    // The registration-only key: registers, then a poll says what to use instead.
    let shared = register_with(&farm, REGISTRATION_KEY, "shared-key-mac").await;
    let r = farm
        .http
        .get(format!(
            "{}/api/workers/poll?worker_id={shared}",
            farm.gateway
        ))
        .header("x-api-key", REGISTRATION_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("'worker' scope"),
        "{body}"
    );

    // Another machine (registered with the farm's own key) holds a build first.
    let theirs = submit_ios(&farm, None).await;
    let other = register_like_the_app(&farm, "other-mac").await;
    assert_eq!(
        poll_like_the_app(&farm, &other).await["id"],
        theirs.as_str()
    );

    let id = submit_ios(&farm, Some(certs_zip())).await;
    let mac = register_with(&farm, key, "mac").await;
    let job = poll_with(&farm, key, &mac).await;
    assert_eq!(job["id"], id.as_str());
    let r = download_like_the_app(&farm, key, &mac, &job).await;
    assert_eq!(r.status(), 200);
    let r = certs_secure_with(&farm, key, &id, &mac, Some(&id)).await;
    assert_eq!(r.status(), 200);
    let r = telemetry_like_the_vm(&farm, key, &id, &mac, json!({})).await;
    assert_eq!(r.status(), 200);

    // Its menu bar: its own active build only. Its Statistics window: its own worker only.
    let r = get("/api/builds/active".into()).await.unwrap();
    assert_eq!(r.status(), 200);
    let active: Value = r.json().await.unwrap();
    let ids: Vec<&str> = active["builds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "{active}");
    assert_eq!(
        get(format!("/api/workers/{mac}/stats"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(format!("/api/workers/{other}/stats"))
            .await
            .unwrap()
            .status(),
        403
    );
    // It still reads no build, and acts for no worker it did not register.
    assert_eq!(
        get(format!("/api/builds/{id}")).await.unwrap().status(),
        403
    );
    let r = farm
        .http
        .get(format!(
            "{}/api/workers/poll?worker_id={other}",
            farm.gateway
        ))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let r = upload_like_the_app(&farm, key, &id, &mac).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(farm.get_build(&id).await["status"], "completed");
}

/// The seed's scripts read `/health` right after a submit. After an idle spell the first call
/// must not answer from the figures measured before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_right_after_a_submit_counts_it_even_after_an_idle_spell() {
    let farm = Farm::start(FarmOpts {
        extra_env: vec![("FREEAGENT_FIGURES_TTL".into(), "1s".into())],
        ..farm_opts()
    })
    .await;
    let pending = || async {
        let h: Value = farm
            .http
            .get(format!("{}/health", farm.gateway))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        h["queue"]["pending"]
            .as_i64()
            .unwrap_or_else(|| panic!("{h}"))
    };
    assert_eq!(pending().await, 0);
    // Idle for longer than the figures' TTL: what was measured is now too old to serve.
    tokio::time::sleep(Duration::from_secs(3)).await;
    submit_ios(&farm, None).await;
    assert_eq!(pending().await, 1);
}
