//! Retry, statistics, active builds, public stats, worker stats and diagnostics, over HTTP.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::{API_KEY, Farm, FarmOpts, example, project};
use serde_json::{Value, json};
use std::time::Duration;

async fn get(farm: &Farm, path: &str) -> (u16, Value) {
    let r = farm
        .http
        .get(format!("{}{path}", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_runs_the_same_inputs_again_under_a_new_token() {
    let farm = Farm::start(FarmOpts::default()).await;
    let first = farm.submit_dir(&example("hello"), "android").await;
    let (id, token) = (
        first["id"].as_str().unwrap().to_owned(),
        first["access_token"].as_str().unwrap().to_owned(),
    );
    let original = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(original["status"], "completed");

    let r = farm
        .http
        .post(format!("{}/api/builds/{id}/retry", farm.gateway))
        .header("x-build-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let retry: Value = r.json().await.unwrap();
    assert_eq!(retry["status"], "pending");
    assert_eq!(retry["original_build_id"], id.as_str());
    assert_ne!(retry["access_token"], token.as_str());
    let new_id = retry["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    let again = farm.wait_terminal(&new_id, Duration::from_secs(60)).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(again["original_build_id"], id.as_str());
    assert_eq!(
        again["artifacts"][0]["sha256"], original["artifacts"][0]["sha256"],
        "same source"
    );
    // The old token does not reach the new build; the new one does.
    let r = farm
        .http
        .get(format!("{}/api/builds/{new_id}", farm.gateway))
        .header("x-build-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = farm
        .http
        .get(format!(
            "{}/api/builds/{new_id}/download/source",
            farm.gateway
        ))
        .header("x-build-token", retry["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A running build cannot be retried; an unknown one is 404.
    // (Sandboxed, the build cannot write to this test's files: it says it started in its log.)
    let slow = project("echo started\nexec sleep 60\n");
    let running = farm.submit_dir(slow.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait::until(
        "the slow build to start",
        Duration::from_secs(30),
        || async {
            farm.logs(&running)
                .await
                .iter()
                .any(|l| l == "started")
                .then_some(())
        },
    )
    .await;
    let r = farm
        .http
        .post(format!("{}/api/builds/{running}/retry", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    // Retry works from any status: a running build gets a sibling (cancelled here, so the
    // figures below stay exact).
    assert_eq!(r.status(), 200);
    let sibling: Value = r.json().await.unwrap();
    let r = farm
        .http
        .post(format!(
            "{}/api/builds/{}/cancel",
            farm.gateway,
            sibling["id"].as_str().unwrap()
        ))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = farm
        .http
        .post(format!(
            "{}/api/builds/{}/retry",
            farm.gateway,
            uuid::Uuid::now_v7()
        ))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Statistics, active builds and the public stats agree with what happened.
    let (code, stats) = get(&farm, "/api/builds/statistics").await;
    assert_eq!(code, 200);
    assert_eq!(
        stats,
        json!({"total": 4, "pending": 0, "assigned": 0, "building": 1, "completed": 2, "failed": 0, "cancelled": 1})
    );
    let (_, active) = get(&farm, "/api/builds/active").await;
    assert_eq!(active["builds"].as_array().unwrap().len(), 1);
    assert_eq!(active["builds"][0]["id"], running.as_str());
    for path in ["/api/stats", "/public/stats"] {
        // The seed's landing page reads them from its own site.
        let r = farm
            .http
            .get(format!("{}{path}", farm.gateway))
            .header("origin", "https://landing.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        let public: Value = r.json().await.unwrap();
        assert_eq!(public["totalBuilds"], 4);
        assert_eq!(public["buildsToday"], 4);
        assert_eq!(public["activeBuilds"], 1);
        assert_eq!(public["buildsQueued"], 0);
        assert_eq!(public["nodesOnline"], 1);
        assert!(public["totalBuildTimeMs"].as_i64().unwrap() >= 0);
        assert!(
            public["totalCpuCycles"].as_f64().unwrap() >= 0.0,
            "{public}"
        );
    }
    assert_eq!(
        farm.http
            .get(format!("{}/api/builds/statistics", farm.gateway))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // The worker's own figures.
    let (_, workers) = get(&farm, "/api/workers").await;
    let wid = workers["workers"][0]["id"].as_str().unwrap().to_owned();
    let (code, ws) = get(&farm, &format!("/api/workers/{wid}/stats")).await;
    assert_eq!(code, 200);
    assert_eq!(ws["totalBuilds"], 3);
    assert_eq!(ws["successfulBuilds"], 2);
    assert_eq!(ws["failedBuilds"], 0);
    assert_eq!(ws["workerName"], "worker-0");
    assert_eq!(
        get(
            &farm,
            &format!("/api/workers/{}/stats", uuid::Uuid::now_v7())
        )
        .await
        .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_are_stored_by_their_worker_and_read_back_by_operators() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let w = farm.register_worker("mac-1", &["ios"]).await;
    let other = farm.register_worker("mac-2", &["ios"]).await;
    let url = format!("{}/api/diagnostics/report", farm.gateway);
    let report = |status: &str| {
        json!({"worker_id": w.worker_id, "status": status, "duration_ms": 1200, "auto_fixed": false,
        "checks": [{"name": "disk", "status": "ok", "message": "80 GB free", "duration_ms": 3}]})
    };
    for status in ["healthy", "warning"] {
        let r = farm
            .http
            .post(&url)
            .header("x-worker-token", &w.worker_token)
            .json(&report(status))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "stored");
    }
    // Another worker's token, no credential, a bad status, a malformed body.
    assert_eq!(
        farm.http
            .post(&url)
            .header("x-worker-token", &other.worker_token)
            .json(&report("healthy"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        farm.http
            .post(&url)
            .json(&report("healthy"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        farm.http
            .post(&url)
            .header("x-worker-token", &w.worker_token)
            .json(&report("fine"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        farm.http
            .post(&url)
            .header("x-worker-token", &w.worker_token)
            .body("{")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    // Legacy workers: the API key plus worker_id.
    assert_eq!(
        farm.http
            .post(&url)
            .header("x-api-key", API_KEY)
            .json(&report("critical"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (code, list) = get(&farm, &format!("/api/diagnostics/{}?limit=2", w.worker_id)).await;
    assert_eq!(code, 200);
    let statuses: Vec<&str> = list["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["critical", "warning"], "newest first, limited");
    let (code, latest) = get(&farm, &format!("/api/diagnostics/{}/latest", w.worker_id)).await;
    assert_eq!(code, 200);
    assert_eq!(latest["status"], "critical");
    assert_eq!(latest["checks"][0]["name"], "disk");
    assert_eq!(
        get(
            &farm,
            &format!("/api/diagnostics/{}/latest", other.worker_id)
        )
        .await
        .0,
        404
    );
    assert_eq!(get(&farm, "/api/diagnostics/not-a-worker").await.0, 404);
    assert_eq!(
        farm.http
            .get(format!("{}/api/diagnostics/{}", farm.gateway, w.worker_id))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}
