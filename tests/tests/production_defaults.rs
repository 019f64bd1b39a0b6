//! Production-safe defaults (issue 14): a service that listens beyond loopback refuses the
//! development signing secret and a certs key derived from the signing secret, and says what to
//! set; certs stay readable when the signing secret rotates, with a derived key (through
//! `FREEAGENT_SIGNING_SECRET_PREVIOUS`) and with a key of their own; certs that cannot be
//! decrypted are a 5xx before any body byte, and storage's log says which object and why.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_shared::capability::{Method, Signer};
use freeagent_shared::config::DEV_SIGNING_SECRET;
use freeagent_shared::ids::BuildId;
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::testing::{free_port, wait};
use freeagent_tests::{API_KEY, Farm, FarmOpts, SECRET, bin_dir, pack, project};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const NEW_SECRET: &str = "rotated-signing-secret-rotated-signing-secret";
/// 32 bytes as hex, as `openssl rand -hex 32` prints them.
const CERTS_KEY: &str = "5f1c0e2a9b7d4c3e8f6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60";
const OTHER_CERTS_KEY: &str = "0badc0ffee0badc0ffee0badc0ffee0badc0ffee0badc0ffee0badc0ffee0bad";

fn certs_bytes() -> Vec<u8> {
    b"-----BEGIN PRIVATE KEY-----\nrotation test identity, still secret\n".repeat(2000)
}

/// Starts a service binary with only `env` (plus PATH/HOME), its output into `log`.
fn start(bin: &str, env: &[(String, String)], log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(bin_dir().join(bin))
        .env_clear()
        .envs(
            ["PATH", "HOME", "TMPDIR"]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
        )
        .env("FREEAGENT_LOG_FORMAT", "text")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"))
}

/// The exit status within `timeout`, or `None` if the process still runs.
fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs a service that must refuse to start; returns everything it printed.
fn refused(bin: &str, env: &[(String, String)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let mut child = start(bin, env, &log);
    let status = exit_within(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("{bin} started with {env:?}:\n{out}"));
    assert!(!status.success(), "{bin} exited 0 with {env:?}:\n{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_bound_beyond_loopback_refuse_development_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects").display().to_string();
    // What each service needs to get as far as its secrets; nothing is ever contacted.
    let base: Vec<(&str, &str)> = vec![
        ("FREEAGENT_API_KEY", API_KEY),
        ("FREEAGENT_STORAGE_URL", &objects),
        ("FREEAGENT_RETENTION", "off"),
        ("FREEAGENT_GATEWAY_PORT", "0"),
        ("FREEAGENT_STORAGE_PORT", "0"),
        ("FREEAGENT_SCHEDULER_PORT", "0"),
    ];
    let with = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        base.iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };

    // No signing secret at all (the development one), on every service, on v4 and v6.
    for (bin, bind) in [
        ("freeagent-gateway", "0.0.0.0"),
        ("freeagent-scheduler", "0.0.0.0"),
        ("freeagent-storage", "0.0.0.0"),
        ("freeagent-gateway", "::"),
    ] {
        let out = refused(bin, &with(&[("FREEAGENT_BIND", bind)]));
        for needle in [
            "FREEAGENT_SIGNING_SECRET",
            "openssl rand -hex 32",
            &format!("FREEAGENT_BIND={bind}"),
        ] {
            assert!(
                out.contains(needle),
                "{bin} on {bind}: no {needle:?} in\n{out}"
            );
        }
        if bin == "freeagent-storage" {
            // Both fixes at once: storage also derives its certs key.
            assert!(out.contains("FREEAGENT_CERTS_KEY"), "{out}");
        }
    }

    // The development secret set by name is no better.
    let out = refused(
        "freeagent-scheduler",
        &with(&[
            ("FREEAGENT_BIND", "10.1.2.3"),
            ("FREEAGENT_SIGNING_SECRET", DEV_SIGNING_SECRET),
        ]),
    );
    assert!(out.contains("FREEAGENT_SIGNING_SECRET"), "{out}");
    assert!(
        !out.contains(DEV_SIGNING_SECRET),
        "a secret is never printed:\n{out}"
    );

    // A secret of its own, but certs encrypted with a key derived from it.
    let out = refused(
        "freeagent-storage",
        &with(&[
            ("FREEAGENT_BIND", "0.0.0.0"),
            ("FREEAGENT_SIGNING_SECRET", NEW_SECRET),
        ]),
    );
    assert!(
        out.contains("FREEAGENT_CERTS_KEY") && out.contains("openssl rand -hex 32"),
        "{out}"
    );
    assert!(
        !out.contains(NEW_SECRET),
        "a secret is never printed:\n{out}"
    );

    // With both set, storage serves on every address.
    let port = free_port().unwrap().to_string();
    let log = dir.path().join("storage-ok.log");
    let mut ok = start(
        "freeagent-storage",
        &with(&[
            ("FREEAGENT_BIND", "0.0.0.0"),
            ("FREEAGENT_STORAGE_PORT", &port),
            ("FREEAGENT_SIGNING_SECRET", NEW_SECRET),
            ("FREEAGENT_CERTS_KEY", CERTS_KEY),
        ]),
        &log,
    );
    healthy(&format!("http://127.0.0.1:{port}"), &mut ok, &log).await;
    let _ = ok.kill();
    let _ = ok.wait();

    // On loopback the development defaults still work (`freeagent dev`, the tests), with a
    // warning for each.
    let port = free_port().unwrap().to_string();
    let log = dir.path().join("storage-dev.log");
    let mut dev = start(
        "freeagent-storage",
        &with(&[
            ("FREEAGENT_BIND", "127.0.0.1"),
            ("FREEAGENT_STORAGE_PORT", &port),
        ]),
        &log,
    );
    healthy(&format!("http://127.0.0.1:{port}"), &mut dev, &log).await;
    let _ = dev.kill();
    let _ = dev.wait();
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(
        out.contains("WARN") && out.contains("FREEAGENT_SIGNING_SECRET is not set"),
        "{out}"
    );
    assert!(out.contains("FREEAGENT_CERTS_KEY is not set"), "{out}");
}

/// Waits until a service started by `start` answers `/healthz`; fails if it exits.
async fn healthy(base: &str, child: &mut Child, log: &Path) {
    freeagent_shared::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the service exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{base} never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn submit_with_certs(farm: &Farm, dir: &Path, certs: &[u8]) -> String {
    let form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .part(
            "source",
            reqwest::multipart::Part::bytes(pack(dir)).file_name("s.tar.gz"),
        )
        .part(
            "certs",
            reqwest::multipart::Part::bytes(certs.to_vec()).file_name("certs.p12"),
        );
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
    let v: Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// Restarts the three services that hold the signing secret with `env`, storage first (it
/// checks what the others sign), and waits until the farm is ready again.
async fn restart_services(farm: &mut Farm, env: &[(&str, &str)]) {
    for name in ["storage", "scheduler-0", "gateway"] {
        farm.restart_with(name, env);
    }
    ready(farm).await;
}

async fn ready(farm: &Farm) {
    for base in [&farm.storage, &farm.scheduler, &farm.gateway] {
        let url = format!("{base}/readyz");
        wait::until(&url.clone(), Duration::from_secs(30), || {
            let (http, url) = (farm.http.clone(), url.clone());
            async move {
                http.get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
    }
}

/// An HTTP worker (the seed's protocol) that holds build `id`: registered, and polled until
/// the build is its job. Returns its token.
async fn hold(farm: &Farm, id: &str) -> String {
    let w = farm.register_worker("certs-reader", &["android"]).await;
    let r: Value = farm
        .http
        .get(format!("{}/api/workers/poll?wait=20", farm.gateway))
        .header("x-worker-token", &w.worker_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["job"]["id"], id, "{r}");
    assert_eq!(
        r["job"]["certs_url"],
        format!("/api/builds/{id}/certs"),
        "{r}"
    );
    r["access_token"]
        .as_str()
        .unwrap_or(&w.worker_token)
        .to_owned()
}

/// The certs of build `id` as the worker holding it reads them through the gateway.
async fn worker_certs(farm: &Farm, token: &str, id: &str) -> reqwest::Response {
    farm.http
        .get(format!("{}/api/builds/{id}/certs", farm.gateway))
        .header("x-worker-token", token)
        .send()
        .await
        .unwrap()
}

async fn assert_certs_read(farm: &Farm, token: &str, id: &str, certs: &[u8], when: &str) {
    let r = worker_certs(farm, token, id).await;
    assert_eq!(r.status(), 200, "{when}: {}", r.text().await.unwrap());
    let sha = hex::encode(Sha256::digest(certs));
    assert_eq!(r.headers()["x-checksum-sha256"], sha.as_str(), "{when}");
    let body = r.bytes().await.unwrap();
    assert!(body.as_ref() == certs, "{when}: the certs differ");
}

/// Storage's log lines at ERROR that name the certs of build `id`.
fn decrypt_errors(farm: &Farm, id: &str) -> Vec<String> {
    farm.log_of("storage")
        .lines()
        .filter(|l| {
            l.contains("ERROR")
                && l.contains(&format!("builds/{id}/certs"))
                && l.contains("cannot be decrypted")
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_signing_secret_keeps_certs_under_a_derived_key_readable() {
    // No FREEAGENT_CERTS_KEY: certs are encrypted with a key derived from SECRET.
    let mut farm = Farm::start(FarmOpts {
        workers: 0,
        lease: "300s",
        ..Default::default()
    })
    .await;
    let certs = certs_bytes();
    let dir = project("echo hi > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let id = submit_with_certs(&farm, dir.path(), &certs).await;

    // Rotated without the old secret: the derived key is gone, so storage cannot open the
    // certs. The worker gets a 503 (never a 200 that breaks off), storage's log says why.
    restart_services(&mut farm, &[("FREEAGENT_SIGNING_SECRET", NEW_SECRET)]).await;
    let token = hold(&farm, &id).await;
    let r = worker_certs(&farm, &token, &id).await;
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    assert!(
        !decrypt_errors(&farm, &id).is_empty(),
        "{}",
        farm.log_of("storage")
    );

    // As docs/storage.md says: the old secret as the previous one. Storage derives the previous
    // certs key from it and reads the certs again.
    restart_services(
        &mut farm,
        &[
            ("FREEAGENT_SIGNING_SECRET", NEW_SECRET),
            ("FREEAGENT_SIGNING_SECRET_PREVIOUS", SECRET),
        ],
    )
    .await;
    assert_certs_read(&farm, &token, &id, &certs, "after the rotation").await;

    // Past `_PREVIOUS_UNTIL` old URLs are refused, but the derived key still decrypts: certs
    // live as long as their build.
    let past = (chrono::Utc::now().timestamp() - 60).to_string();
    farm.restart_with(
        "storage",
        &[("FREEAGENT_SIGNING_SECRET_PREVIOUS_UNTIL", &past)],
    );
    ready(&farm).await;
    assert_certs_read(&farm, &token, &id, &certs, "past the URL deadline").await;
    let old = storage_url(&farm, SECRET, &id);
    assert_eq!(farm.http.get(old).send().await.unwrap().status(), 403);

    // Certs submitted now are encrypted with the key derived from the new secret. Then the
    // farm moves to a key of its own: what either derived key wrote still opens.
    let later = submit_with_certs(&farm, dir.path(), b"later certs").await;
    farm.restart_with("storage", &[("FREEAGENT_CERTS_KEY", CERTS_KEY)]);
    ready(&farm).await;
    assert_certs_read(&farm, &token, &id, &certs, "with a certs key of its own").await;
    let r = farm
        .http
        .get(storage_url(&farm, NEW_SECRET, &later))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"later certs");
}

/// A URL to read build `id`'s certs straight from storage, signed with `secret`.
fn storage_url(farm: &Farm, secret: &str, id: &str) -> String {
    Signer::new(secret).url(
        &farm.storage,
        Method::Get,
        &ObjectKey::Certs(id.parse::<BuildId>().unwrap()),
        chrono::Utc::now().timestamp() + 600,
        0,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_signing_secret_leaves_certs_under_their_own_key_alone() {
    let mut farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: vec![("FREEAGENT_CERTS_KEY".into(), CERTS_KEY.into())],
        ..Default::default()
    })
    .await;
    let certs = certs_bytes();
    let dir = project(
        "set -eu\n\
         echo \"certs sha256 $(sha256sum \"$FREEAGENT_CERTS_PATH\" | cut -d' ' -f1)\"\n\
         echo done > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
    );
    let id = submit_with_certs(&farm, dir.path(), &certs).await;

    // A new secret and no previous one: capabilities change, the certs key does not.
    restart_services(&mut farm, &[("FREEAGENT_SIGNING_SECRET", NEW_SECRET)]).await;

    // The reference worker reads them over its own path (a URL in its grant, signed by the
    // scheduler with the new secret) and the build sees exactly what was submitted.
    farm.spawn_worker(0);
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    let want = format!("certs sha256 {}", hex::encode(Sha256::digest(&certs)));
    let logs = farm.logs(&id).await;
    assert!(logs.iter().any(|l| l == &want), "{logs:?}");
    assert!(decrypt_errors(&farm, &id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_under_a_key_storage_lacks_are_a_5xx_before_any_body_byte() {
    let mut farm = Farm::start(FarmOpts {
        workers: 0,
        lease: "300s",
        extra_env: vec![("FREEAGENT_CERTS_KEY".into(), CERTS_KEY.into())],
        ..Default::default()
    })
    .await;
    let certs = certs_bytes();
    let dir = project("echo hi > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let id = submit_with_certs(&farm, dir.path(), &certs).await;
    let token = hold(&farm, &id).await;
    assert_certs_read(&farm, &token, &id, &certs, "with the right key").await;

    // Storage comes back with another key (a mistyped rotation).
    farm.restart_with("storage", &[("FREEAGENT_CERTS_KEY", OTHER_CERTS_KEY)]);
    ready(&farm).await;

    // Straight from storage: a 500 with a whole JSON error, no Content-Length of certs.
    let r = farm
        .http
        .get(storage_url(&farm, SECRET, &id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.expect("a whole error body");
    assert_eq!(body["code"], "internal", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cannot be decrypted"),
        "{body}"
    );
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("FREEAGENT_CERTS_KEY"),
        "{body}"
    );

    // Through the worker path: the gateway answers 503 before any byte, too.
    let r = worker_certs(&farm, &token, &id).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("a whole error body");
    assert_eq!(body["code"], "unavailable", "{body}");

    // Storage's log says which object and why, at ERROR, and names no secret.
    let errors = decrypt_errors(&farm, &id);
    assert!(errors.len() >= 2, "{}", farm.log_of("storage"));
    assert!(errors[0].contains("FREEAGENT_CERTS_KEY"), "{errors:?}");
    let log = farm.log_of("storage");
    for secret in [CERTS_KEY, OTHER_CERTS_KEY, SECRET] {
        assert!(!log.contains(secret), "the storage log shows a secret");
    }
}
