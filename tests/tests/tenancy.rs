//! Tenancy (teams) against the real binaries. The attack it replays: any key with submit+read
//! read, followed, downloaded (source included), cancelled and retried another key's builds, and
//! a retry reused the victim's certs and handed the attacker the new build's token. Now a key
//! that is not an admin's sees and acts on its own team's builds only — every route answers
//! another team's build as unknown (404) — lists, counts and the event stream show its team's
//! builds, admin keys see every team, and a build token still opens exactly its build.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::sse::SseReader;
use freeagent_tests::{API_KEY, Farm, FarmOpts, bin_dir, metric_value, project};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

async fn call(farm: &Farm, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let url = format!("{}{path}", farm.gateway);
    let mut req = match method {
        "get" => farm.http.get(url),
        "post" => farm.http.post(url),
        "delete" => farm.http.delete(url),
        other => panic!("no method {other}"),
    };
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn create_key(farm: &Farm, body: Value) -> (String, String) {
    let r = farm
        .http
        .post(format!("{}/api/keys", farm.gateway))
        .header("x-api-key", API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

/// Submits `dir` with `key` and signing certs; returns (id, build token).
async fn submit(farm: &Farm, key: &str, dir: &std::path::Path) -> (String, String) {
    let form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .part(
            "source",
            reqwest::multipart::Part::bytes(freeagent_tests::pack(dir)).file_name("s.tar.gz"),
        )
        .part(
            "certs",
            reqwest::multipart::Part::bytes(b"victim's signing key".to_vec())
                .file_name("certs.p12"),
        );
    let r = farm
        .http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["access_token"].as_str().unwrap().to_owned(),
    )
}

async fn list(farm: &Farm, key: &str, query: &str) -> (u16, Vec<String>, Option<u64>) {
    let r = farm
        .http
        .get(format!("{}/api/builds{query}", farm.gateway))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let total = r
        .headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body: Value = r.json().await.unwrap();
    let ids = body
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| b["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    (status, ids, total)
}

async fn events(farm: &Farm, key: &str) -> SseReader {
    let resp = farm
        .http
        .get(format!("{}/api/events", farm.gateway))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    SseReader::new(resp)
}

/// The build ids of the build events read until `last` completes.
async fn builds_seen_until_completed(r: &mut SseReader, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let e = r
            .next(Duration::from_secs(90))
            .await
            .unwrap_or_else(|| panic!("the event stream stopped before {last} completed"));
        if e.event != "build" {
            continue;
        }
        let id = e.data["build_id"].as_str().unwrap_or_default().to_owned();
        let done = id == last && e.data["event"] == "completed";
        seen.push(id);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sees_and_acts_on_its_own_teams_builds_only() {
    let farm = Farm::start(FarmOpts::default()).await;
    let (alpha_id, alpha) = create_key(
        &farm,
        json!({"name": "alpha ci", "scopes": ["submit", "read"], "team": "alpha"}),
    )
    .await;
    let (_, beta) = create_key(
        &farm,
        json!({"name": "beta ci", "scopes": ["submit", "read"], "team": "beta"}),
    )
    .await;
    // A key made without a team, like every key from before teams, is of team `default`, as is
    // the bootstrap key.
    let (_, plain) = create_key(
        &farm,
        json!({"name": "old style", "scopes": ["submit", "read"]}),
    )
    .await;
    let mut alpha_events = events(&farm, &alpha).await;
    let mut beta_events = events(&farm, &beta).await;

    let dir = project("echo secret-source-line\necho built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let (victim, victim_token) = submit(&farm, &alpha, dir.path()).await;
    let (by_admin, _) = submit(&farm, API_KEY, dir.path()).await;
    for id in [&victim, &by_admin] {
        assert_eq!(
            farm.wait_terminal(id, Duration::from_secs(90)).await["status"],
            "completed"
        );
    }
    let (_, b) = call(
        &farm,
        "get",
        &format!("/api/builds/{victim}"),
        &[("x-api-key", &alpha)],
    )
    .await;
    assert_eq!(b["team"], "alpha");
    assert_eq!(b["submitted_by"], alpha_id.as_str());

    // The attack, route by route: beta's key gets 404 for alpha's build, as for a missing one.
    let as_beta = [("x-api-key", beta.as_str())];
    for (method, path) in [
        ("get", format!("/api/builds/{victim}")),
        ("get", format!("/api/builds/{victim}/status")),
        ("get", format!("/api/builds/{victim}/logs")),
        ("get", format!("/api/builds/{victim}/logs?follow=true")),
        ("get", format!("/api/builds/{victim}/download")),
        ("get", format!("/api/builds/{victim}/download/source")),
        ("post", format!("/api/builds/{victim}/cancel")),
        ("delete", format!("/api/builds/{victim}")),
        ("post", format!("/api/builds/{victim}/retry")),
    ] {
        let (status, body) = call(&farm, method, &path, &as_beta).await;
        assert_eq!(status, 404, "{method} {path} as another team: {body}");
        assert!(
            !body.to_string().contains("access_token"),
            "{method} {path}: {body}"
        );
    }
    // Lists and counts: beta has nothing yet; naming alpha is refused.
    let (status, ids, total) = list(&farm, &beta, "").await;
    assert_eq!((status, ids.len(), total), (200, 0, Some(0)));
    assert_eq!(list(&farm, &beta, "?team=alpha").await.0, 403);
    let (_, overview) = call(&farm, "get", "/api/overview", &as_beta).await;
    assert_eq!(overview["hour"]["total"]["completed"], 0, "{overview}");
    let (_, active) = call(&farm, "get", "/api/builds/active", &as_beta).await;
    assert_eq!(active["builds"].as_array().map(Vec::len), Some(0));

    // Beta's own build: beta sees it, alpha does not.
    let (mine, _) = submit(&farm, &beta, dir.path()).await;
    assert_eq!(
        farm.wait_terminal(&mine, Duration::from_secs(90)).await["status"],
        "completed"
    );
    assert_eq!(list(&farm, &beta, "").await.1, vec![mine.clone()]);
    assert_eq!(
        call(
            &farm,
            "get",
            &format!("/api/builds/{mine}"),
            &[("x-api-key", &alpha)]
        )
        .await
        .0,
        404
    );
    let (_, overview) = call(&farm, "get", "/api/overview", &as_beta).await;
    assert_eq!(overview["hour"]["total"]["completed"], 1, "{overview}");

    // The event streams: beta's carries its build and never alpha's; alpha's the reverse.
    let beta_saw = builds_seen_until_completed(&mut beta_events, &mine).await;
    assert!(
        !beta_saw.contains(&victim) && !beta_saw.contains(&by_admin),
        "{beta_saw:?}"
    );
    let alpha_saw = builds_seen_until_completed(&mut alpha_events, &victim).await;
    assert!(
        !alpha_saw.contains(&by_admin) && !alpha_saw.contains(&mine),
        "{alpha_saw:?}"
    );

    // Alpha retries its own build: the new build stays alpha's and names alpha's key.
    let (status, retried) = call(
        &farm,
        "post",
        &format!("/api/builds/{victim}/retry"),
        &[("x-api-key", &alpha)],
    )
    .await;
    assert_eq!(status, 200, "{retried}");
    let again = retried["id"].as_str().unwrap().to_owned();
    let (_, b) = call(
        &farm,
        "get",
        &format!("/api/builds/{again}"),
        &[("x-api-key", API_KEY)],
    )
    .await;
    assert_eq!(
        (b["team"].as_str(), b["submitted_by"].as_str()),
        (Some("alpha"), Some(alpha_id.as_str()))
    );
    farm.wait_terminal(&again, Duration::from_secs(90)).await;

    // The `default` team: the bootstrap key's build, seen by a key made without a team.
    let (_, ids, _) = list(&farm, &plain, "").await;
    assert_eq!(ids, vec![by_admin.clone()]);

    // Admin keys see every team, and may pick one.
    let (_, ids, total) = list(&farm, API_KEY, "").await;
    assert_eq!((ids.len(), total), (4, Some(4)));
    assert_eq!(
        list(&farm, API_KEY, "?team=beta").await.1,
        vec![mine.clone()]
    );
    assert_eq!(
        call(
            &farm,
            "get",
            &format!("/api/builds/{mine}"),
            &[("x-api-key", API_KEY)]
        )
        .await
        .0,
        200
    );

    // A build token still opens exactly its build, whatever the team.
    let as_token = [("x-build-token", victim_token.as_str())];
    assert_eq!(
        call(&farm, "get", &format!("/api/builds/{victim}"), &as_token)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&farm, "get", &format!("/api/builds/{mine}"), &as_token)
            .await
            .0,
        403
    );

    // Submissions are counted per team.
    let metrics = farm.metrics(&farm.gateway).await.unwrap();
    assert_eq!(
        metric_value(&metrics, "freeagent_builds_submitted_total{team=\"alpha\"}"),
        Some(1.0),
        "{metrics}"
    );

    // The CLI: a key of a new team made with `keys create --team`, listed with its team; its
    // `list` shows nothing of the others.
    let cli = |key: &str, args: &[&str]| {
        let out = Command::new(bin_dir().join("freeagent"))
            .args(args)
            .env_remove("FREEAGENT_BUILD_TOKEN")
            .env("FREEAGENT_API_KEY", key)
            .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let created: Value = serde_json::from_str(&cli(
        API_KEY,
        &[
            "keys", "create", "--name", "gamma", "--scope", "read", "--team", "gamma", "--json",
        ],
    ))
    .unwrap();
    assert_eq!(created["team"], "gamma");
    assert!(cli(API_KEY, &["keys", "list"]).contains("gamma"));
    let gamma = created["key"].as_str().unwrap();
    assert_eq!(cli(gamma, &["list", "--json"]).trim(), "[]");
    assert!(cli(API_KEY, &["list", "--team", "beta"]).contains(&mine));
}
