//! Workers over HTTP, as the contract says: result uploads with parts in any order and legacy
//! credentials, refused uploads that change nothing, registration answered with exactly 200,
//! job URLs that are paths, polls without `wait`, telemetry and unregistration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Auth, Farm};

/// The outcome parts of an old mock worker: the file first, then the fields.
fn file_first(id: &str, worker_id: &str, artifact: &[u8]) -> Form {
    Form::new()
        .part(
            "result",
            Part::bytes(artifact.to_vec()).file_name("app.apk"),
        )
        .text("build_id", id.to_owned())
        .text("worker_id", worker_id.to_owned())
        .text("success", "true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_with_the_file_first_and_legacy_credentials_completes_the_build() {
    let farm = Farm::start().await;
    let w = farm.register("legacy-mac", &["android"]).await;
    let legacy = Auth::Legacy {
        key: farm.key.clone(),
        worker: w.id.clone(),
    };
    for path in ["/api/workers/result", "/api/workers/upload"] {
        let b = farm.submit("android").await;
        farm.claim(&legacy, &b.id).await;
        let artifact = format!("artifact via {path}").into_bytes();
        // Only the key in a header: the worker names itself in the `worker_id` field.
        let r = farm
            .multipart(path, &farm.key(), file_first(&b.id, &w.id, &artifact))
            .await;
        assert_eq!(r.status, 200, "{path}: {r}");
        let v = r.json();
        assert_eq!(
            (&v["success"], &v["status"]),
            (&json!(true), &json!("completed")),
            "{path}: {v}"
        );
        let done = farm.build(&b.id).await;
        assert_eq!(done["status"], "completed", "{path}: {done}");
        let sha = hex::encode(Sha256::digest(&artifact));
        assert!(
            done["artifacts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["sha256"] == sha.as_str()),
            "{path}: the uploaded artifact is recorded: {done}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_409_and_changes_nothing_and_a_replay_gets_the_same_reply() {
    let farm = Farm::start().await;
    let holder = farm.register("holder", &["android"]).await;
    let stranger = farm.register("stranger", &["android"]).await;
    let b = farm.submit("android").await;
    farm.claim(&holder.auth(), &b.id).await;
    let before = farm.build(&b.id).await;

    // Another worker, with its token, and with the legacy key and the file first.
    let r = farm
        .upload(&stranger.auth(), &b.id, true, b"forged".to_vec())
        .await;
    assert_eq!(r.status, 409, "a stranger's upload: {r}");
    let r = farm
        .multipart(
            "/api/workers/result",
            &farm.key(),
            file_first(&b.id, &stranger.id, b"forged"),
        )
        .await;
    assert_eq!(r.status, 409, "a stranger's legacy upload: {r}");
    let after = farm.build(&b.id).await;
    for field in ["status", "worker_id", "attempt", "artifacts", "has_result"] {
        assert_eq!(
            before[field], after[field],
            "{field} changed: {before} → {after}"
        );
    }

    // A pending build nobody holds stays pending.
    let pending = farm.submit("ios").await;
    let r = farm
        .upload(&holder.auth(), &pending.id, true, b"x".to_vec())
        .await;
    assert_eq!(r.status, 409, "an upload for a build nobody holds: {r}");
    assert_eq!(farm.build(&pending.id).await["status"], "pending");

    // The holder still can; the same outcome twice gets the same reply.
    let first = farm
        .upload(&holder.auth(), &b.id, true, b"app".to_vec())
        .await;
    let again = farm
        .upload(&holder.auth(), &b.id, true, b"app".to_vec())
        .await;
    assert_eq!(
        (first.status, again.status),
        (200, 200),
        "{first} / {again}"
    );
    assert_eq!(first.json()["status"], again.json()["status"]);
    assert_eq!(farm.build(&b.id).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_answers_exactly_200_new_or_again() {
    let farm = Farm::start().await;
    let body =
        json!({"name": "mac", "capabilities": {"platforms": ["ios"], "max_concurrent_builds": 1}});
    let r = farm.register_with(&farm.key, body.clone()).await;
    assert_eq!(r.status, 200, "a new registration: {r}");
    let v = r.json();
    assert_eq!(v["status"], "registered", "{v}");
    for field in ["id", "access_token", "expires_at"] {
        assert!(v[field].is_string(), "{field} in {v}");
    }
    let r = farm
        .register_with(
            support::REGISTRATION_KEY,
            json!({"name": "m2", "capabilities": {"platforms": ["android"]}}),
        )
        .await;
    assert_eq!(
        r.status, 200,
        "a registration with the registration key: {r}"
    );

    // Again with its id: with its own token, and with the key that registered it.
    let mut again = body.clone();
    again["id"] = v["id"].clone();
    let r = support::send(
        farm.req(reqwest::Method::POST, "/api/workers/register", &farm.key())
            .header("x-worker-token", v["access_token"].as_str().unwrap())
            .json(&again),
    )
    .await;
    assert_eq!(r.status, 200, "re-registration with its token: {r}");
    assert_eq!(r.json()["status"], "re-registered");
    assert_eq!(r.json()["id"], v["id"]);
    let r = farm.register_with(&farm.key, again).await;
    assert_eq!(r.status, 200, "re-registration with the key: {r}");
    assert_eq!(r.json()["status"], "re-registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_names_its_inputs_by_path_and_the_paths_serve_them() {
    let farm = Farm::start().await;
    let w = farm.register("mac", &["ios"]).await;
    let form = Form::new()
        .text("platform", "ios")
        .part(
            "source",
            Part::bytes(support::gzip(b"src")).file_name("s.tar.gz"),
        )
        .part(
            "certs",
            Part::bytes(b"p12 bytes".to_vec()).file_name("certs.p12"),
        );
    let r = farm.multipart("/api/builds", &farm.key(), form).await;
    assert_eq!(r.status, 201, "{r}");
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let job = farm.claim(&w.auth(), &id).await;
    assert_eq!(
        job["source_url"],
        format!("/api/builds/{id}/source"),
        "{job}"
    );
    assert_eq!(job["certs_url"], format!("/api/builds/{id}/certs"), "{job}");
    assert_eq!(job["platform"], "ios");
    assert_eq!(job["attempt"], 1);
    assert!(job["submitted_at"].is_string(), "{job}");
    // Old workers append the path to their controller URL.
    for (url, want) in [
        ("source_url", support::gzip(b"src")),
        ("certs_url", b"p12 bytes".to_vec()),
    ] {
        let path = job[url].as_str().unwrap_or_default();
        let r = farm.get(path, &w.auth()).await;
        assert_eq!(r.status, 200, "{url} {path}: {r}");
        assert_eq!(r.body.as_ref(), want.as_slice(), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_without_wait_answers_with_a_job_or_null() {
    let farm = Farm::start().await;
    let w = farm.register("mac", &["android"]).await;
    let check = |v: &Value| {
        assert!(v["job"].is_null() || v["job"]["id"].is_string(), "{v}");
        assert!(v.get("access_token").is_some(), "{v}");
    };
    let r = farm.poll(&w.auth(), None).await;
    assert_eq!(r.status, 200, "{r}");
    check(&r.json());
    farm.submit("android").await;
    let r = farm.poll(&w.auth(), None).await;
    assert_eq!(r.status, 200, "{r}");
    check(&r.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_from_the_holder_is_kept_as_a_debug_log_line() {
    let farm = Farm::start().await;
    let w = farm.register("vm-host", &["android"]).await;
    let stranger = farm.register("stranger", &["android"]).await;
    let b = farm.submit("android").await;
    farm.claim(&w.auth(), &b.id).await;
    let body = json!({"type": "vm", "timestamp": 1_700_000_000_000_i64, "data": {"cpu": 42, "memory": 1024, "stage": "compile"}});
    let path = format!("/api/builds/{}/telemetry", b.id);
    let r = farm.post(&path, &w.auth(), body.clone()).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["success"], true, "{r}");
    let r = farm.post(&path, &stranger.auth(), body).await;
    assert_eq!(
        r.status, 409,
        "telemetry from a worker that does not hold the build: {r}"
    );
    let logs = support::wait::until("the telemetry line", support::PATIENCE, || async {
        let r = farm
            .get(&format!("/api/builds/{}/logs", b.id), &farm.key())
            .await;
        let logs = r.json()["logs"].as_array().cloned().unwrap_or_default();
        logs.iter().any(|l| l["level"] == "debug").then_some(logs)
    })
    .await;
    assert!(!logs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistering_hands_held_builds_back_and_counts_them() {
    let farm = Farm::start().await;
    let busy = farm.register("busy", &["android"]).await;
    let idle = farm.register("idle", &["android"]).await;
    let b = farm.submit("android").await;
    farm.claim(&busy.auth(), &b.id).await;

    let r = farm
        .post_empty(
            &format!("/api/workers/{}/unregister", busy.id),
            &busy.auth(),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(
        (&v["success"], &v["builds_reassigned"]),
        (&json!(true), &json!(1)),
        "{v}"
    );
    farm.wait_status(&b.id, "pending").await;

    let r = farm
        .post_empty("/api/workers/unregister", &idle.auth())
        .await;
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(
        (&v["success"], &v["builds_reassigned"]),
        (&json!(true), &json!(0)),
        "{v}"
    );
}
