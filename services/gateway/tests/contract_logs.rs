//! The farm's own log lines (`GET /api/builds/:id/logs` → `logs[].message`): `Build submitted`
//! first (a retry: `Build submitted (retry of <id>)`), `Build assigned to <worker name>` on each
//! claim, then `Build completed successfully`, `Build failed: <reason>` (level `error`) or
//! `Build cancelled by user`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::Farm;

fn messages(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_build_logs_build_submitted_first() {
    let farm = Farm::start().await;
    let b = farm.submit("android").await;
    let entries = farm.logs_with(&b.id, "Build submitted").await;
    assert_eq!(
        messages(&entries).first(),
        Some(&"Build submitted"),
        "{entries:?}"
    );
    let first = &entries[0];
    assert_eq!(first["level"], "info", "{first}");
    assert!(
        first["seq"].is_u64() && first["timestamp"].is_string(),
        "{first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_build_logs_submitted_assigned_then_completed() {
    let farm = Farm::start().await;
    let w = farm.register("mac-mini-7", &["android"]).await;
    let b = farm.completed_build(&w, b"the app").await;
    let entries = farm.logs_with(&b.id, "Build completed successfully").await;
    let msgs = messages(&entries);
    assert_eq!(msgs.first(), Some(&"Build submitted"), "{msgs:?}");
    let assigned = msgs
        .iter()
        .position(|m| *m == "Build assigned to mac-mini-7");
    assert!(
        assigned.is_some_and(|i| i > 0),
        "assigned after submitted: {msgs:?}"
    );
    assert_eq!(
        msgs.last(),
        Some(&"Build completed successfully"),
        "{msgs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_logs_the_reason_at_level_error() {
    let farm = Farm::start().await;
    let w = farm.register("linux-1", &["android", "ios"]).await;

    // Through `POST /api/workers/fail`.
    let b = farm.submit("android").await;
    farm.claim(&w.auth(), &b.id).await;
    let r = farm
        .post(
            "/api/workers/fail",
            &w.auth(),
            json!({"build_id": b.id, "error": "compiler exploded"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        (&r.json()["success"], &r.json()["status"]),
        (&json!(true), &json!("failed"))
    );
    let line = "Build failed: compiler exploded";
    let entries = farm.logs_with(&b.id, line).await;
    let failed = entries.iter().find(|l| l["message"] == line).unwrap();
    assert_eq!(failed["level"], "error", "{failed}");
    assert!(
        messages(&entries).contains(&"Build assigned to linux-1"),
        "{entries:?}"
    );

    // Through a result upload with `success=false`.
    let b = farm.submit("ios").await;
    farm.claim(&w.auth(), &b.id).await;
    let form = reqwest::multipart::Form::new()
        .text("build_id", b.id.clone())
        .text("success", "false")
        .text("error_message", "tests failed");
    let r = farm.multipart("/api/workers/result", &w.auth(), form).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["status"], "failed", "{r}");
    farm.logs_with(&b.id, "Build failed: tests failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_build_logs_it_and_its_retry_names_the_original() {
    let farm = Farm::start().await;
    let b = farm.submit("android").await;
    let r = farm
        .post_empty(&format!("/api/builds/{}/cancel", b.id), &farm.key())
        .await;
    assert_eq!(r.status, 200, "{r}");
    let entries = farm.logs_with(&b.id, "Build cancelled by user").await;
    assert_eq!(
        messages(&entries).first(),
        Some(&"Build submitted"),
        "{entries:?}"
    );

    let r = farm
        .post_empty(&format!("/api/builds/{}/retry", b.id), &farm.key())
        .await;
    assert_eq!(r.status, 200, "{r}");
    let retry = r.json()["id"].as_str().unwrap().to_owned();
    let line = format!("Build submitted (retry of {})", b.id);
    let entries = farm.logs_with(&retry, &line).await;
    assert_eq!(
        messages(&entries).first(),
        Some(&line.as_str()),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_claim_logs_the_worker_it_went_to() {
    let farm = Farm::start().await;
    let first = farm.register("first-mac", &["android"]).await;
    let second = farm.register("second-mac", &["android"]).await;
    let b = farm.submit("android").await;
    farm.claim(&first.auth(), &b.id).await;
    farm.logs_with(&b.id, "Build assigned to first-mac").await;
    // The first worker gives it back; the second gets it.
    let r = farm
        .post(
            "/api/workers/abandon",
            &first.auth(),
            json!({"build_id": b.id, "reason": "disk full"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    farm.claim(&second.auth(), &b.id).await;
    let entries = farm.logs_with(&b.id, "Build assigned to second-mac").await;
    let msgs = messages(&entries);
    let at = |line: &str| msgs.iter().position(|m| *m == line);
    assert!(
        at("Build assigned to first-mac") < at("Build assigned to second-mac"),
        "{msgs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_an_http_workers_log_line_or_telemetry_is_masked() {
    let farm = Farm::start().await;
    let w = farm.register("leaky", &["android"]).await;
    let b = farm.submit("android").await;
    let auth = w.auth();
    farm.claim(&auth, &b.id).await;
    let secret = "faw_0123456789abcdefSECRET";
    let r = farm
        .post(
            &format!("/api/builds/{}/logs", b.id),
            &auth,
            json!({"level": "info", "message": format!("token {secret} end")}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = farm
        .post(
            &format!("/api/builds/{}/telemetry", b.id),
            &auth,
            json!({"type": "env", "data": {"url": format!("https://u:{secret}@host/x")}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let entries = farm.logs_with(&b.id, "token faw_[redacted] end").await;
    let text = serde_json::to_string(&entries).unwrap_or_default();
    assert!(!text.contains("0123456789abcdefSECRET"), "{text}");
    assert!(text.contains("telemetry env"), "{text}");
}
