//! Public and operational routes, and the operator's view of workers: `/health` (one key named
//! `pending`), `/api/stats`, `/healthz`, `/readyz`, `/metrics`, the worker registry, drain,
//! worker stats and diagnostics reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{Auth, Farm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_pending_once_and_reports_queue_and_storage() {
    let farm = Farm::start().await;
    // With builds waiting, so that per-queue figures (if any) exist too.
    farm.submit("android").await;
    farm.submit("ios").await;
    for path in ["/health", "/api/health"] {
        let r = farm.get(path, &Auth::None).await;
        assert_eq!(r.status, 200, "{path}: {r}");
        let text = r.text();
        assert_eq!(
            text.matches("\"pending\"").count(),
            1,
            "{path}: one key named pending: {text}"
        );
        let v = r.json();
        assert!(v["status"].is_string(), "{v}");
        assert_eq!(v["queue"]["pending"], 2, "{path}: {v}");
        assert!(v["queue"]["active"].is_i64(), "{path}: {v}");
        assert_eq!(v["storage"]["backend"], "local", "{path}: {v}");
        assert!(
            v["storage"]["objects"].is_i64() && v["storage"]["bytes"].is_i64(),
            "{path}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_stats_have_the_old_keys_and_measured_numbers() {
    let farm = Farm::start().await;
    let w = farm.register("w", &["android"]).await;
    farm.completed_build(&w, b"app").await;
    farm.submit("ios").await;
    for path in ["/api/stats", "/public/stats"] {
        let r = farm.get(path, &Auth::None).await;
        assert_eq!(r.status, 200, "{path}: {r}");
        let v = r.json();
        for k in [
            "nodesOnline",
            "buildsQueued",
            "activeBuilds",
            "buildsToday",
            "totalBuilds",
            "totalBuildTimeMs",
        ] {
            assert!(v[k].is_number(), "{path}: {k} in {v}");
        }
        assert_eq!(v["totalBuilds"], 2, "{path}: {v}");
        assert_eq!(v["buildsQueued"], 1, "{path}: {v}");
        assert_eq!(v["activeBuilds"], 0, "{path}: {v}");
        assert_eq!(v["nodesOnline"], 1, "{path}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_readiness_and_metrics_answer_anyone() {
    let farm = Farm::start().await;
    for path in ["/healthz", "/readyz"] {
        let r = farm.get(path, &Auth::None).await;
        assert_eq!(r.status, 200, "{path}: {r}");
    }
    let r = farm.get("/metrics", &Auth::None).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "{:?}",
        r.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_lists_workers_with_their_builds_and_stats() {
    let farm = Farm::start().await;
    let busy = farm.register("busy", &["android"]).await;
    let idle = farm.register("idle", &["ios"]).await;
    let b = farm.submit("android").await;
    farm.claim(&busy.auth(), &b.id).await;

    let r = farm.get("/api/workers", &farm.key()).await;
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    let workers = v["workers"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(workers.len(), 2, "{v}");
    for w in workers {
        for k in [
            "id",
            "name",
            "status",
            "capabilities",
            "last_seen_at",
            "builds",
        ] {
            assert!(w.get(k).is_some(), "{k} in {w}");
        }
    }
    let find = |id: &str| workers.iter().find(|w| w["id"] == id).unwrap();
    assert_eq!(find(&busy.id)["name"], "busy");
    assert_eq!(find(&idle.id)["capabilities"]["platforms"], json!(["ios"]));
    assert!(
        find(&busy.id)["builds"].to_string().contains(&b.id),
        "the held build is listed: {v}"
    );

    let r = farm
        .get(&format!("/api/workers/{}/stats", busy.id), &farm.key())
        .await;
    assert_eq!(r.status, 200, "{r}");
    let s = r.json();
    for k in [
        "totalBuilds",
        "successfulBuilds",
        "failedBuilds",
        "status",
        "uptime",
    ] {
        assert!(s.get(k).is_some(), "{k} in {s}");
    }
    assert_eq!(s["workerName"], "busy", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_gets_no_new_job() {
    let farm = Farm::start().await;
    let w = farm.register("w", &["android"]).await;
    let r = farm
        .post_empty(&format!("/api/workers/{}/drain", w.id), &farm.key())
        .await;
    assert_eq!(r.status, 200, "{r}");
    let b = farm.submit("android").await;
    let r = farm.poll(&w.auth(), Some(2)).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(
        r.json()["job"].is_null(),
        "a draining worker got a job: {r}"
    );
    assert_eq!(farm.build(&b.id).await["status"], "pending");
    let r = farm
        .post_empty(
            &format!("/api/workers/{}/drain", support::unknown_worker()),
            &farm.key(),
        )
        .await;
    assert_eq!(r.status, 404, "an unknown worker: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_reports_are_stored_and_read_back_with_run_at_in_epoch_ms() {
    let farm = Farm::start().await;
    let w = farm.register("mac", &["ios"]).await;
    let mut ids = vec![];
    for status in ["warning", "healthy"] {
        let report = json!({
            "worker_id": w.id,
            "status": status,
            "duration_ms": 120,
            "auto_fixed": false,
            "checks": [{"name": "disk", "status": status, "message": "ok", "duration_ms": 3}],
        });
        let r = farm
            .post("/api/diagnostics/report", &w.auth(), report)
            .await;
        assert_eq!(r.status, 200, "{r}");
        let v = r.json();
        assert_eq!(v["status"], "stored", "{v}");
        assert!(v["id"].is_string() || v["id"].is_number(), "{v}");
        ids.push(v["id"].clone());
    }
    let r = farm
        .get(&format!("/api/diagnostics/{}?limit=10", w.id), &farm.key())
        .await;
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    assert_eq!(v["worker_id"], w.id.as_str(), "{v}");
    let reports = v["reports"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(reports.len(), 2, "{v}");
    for report in reports {
        assert!(report["run_at"].is_i64(), "run_at in epoch ms: {report}");
    }
    let r = farm
        .get(&format!("/api/diagnostics/{}/latest", w.id), &farm.key())
        .await;
    assert_eq!(r.status, 200, "{r}");
    let latest = r.json();
    assert!(latest["run_at"].is_i64(), "run_at in epoch ms: {latest}");
    assert_eq!(latest["status"], "healthy", "the newest report: {latest}");
}
