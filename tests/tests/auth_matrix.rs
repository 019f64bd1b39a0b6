//! Every route against every kind of caller: no credential (401), a wrong API key, another build's
//! token, another worker's token (403 where the credential does not grant the request, 409 where
//! a worker does not hold the build), and the right one. Nothing a stranger sends changes a build.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::{API_KEY, Farm, FarmOpts, example};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Cred<'a> {
    None,
    WrongKey,
    BuildToken(&'a str),
    WorkerToken(&'a str),
    Key,
}

fn with(req: reqwest::RequestBuilder, c: Cred) -> reqwest::RequestBuilder {
    match c {
        Cred::None => req,
        Cred::WrongKey => req.header("x-api-key", "fak_not-a-real-key-not-a-real-key-00"),
        Cred::BuildToken(t) => req.header("x-build-token", t),
        Cred::WorkerToken(t) => req.header("x-worker-token", t),
        Cred::Key => req.header("x-api-key", API_KEY),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_kind_of_caller_as_the_contract_says() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let a = farm.submit_dir(&example("hello"), "android").await;
    let b = farm.submit_dir(&example("hello"), "ios").await;
    let (a_id, a_tok) = (
        a["id"].as_str().unwrap().to_owned(),
        a["access_token"].as_str().unwrap().to_owned(),
    );
    let b_tok = b["access_token"].as_str().unwrap().to_owned();
    let holder = farm.register_worker("holder", &["android"]).await;
    let stranger = farm.register_worker("stranger", &["android"]).await;
    let polled: Value = farm
        .http
        .get(format!("{}/api/workers/poll?wait=20", farm.gateway))
        .header("x-worker-token", &holder.worker_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(polled["job"]["id"], a_id.as_str());
    let (h, s) = (holder.worker_token.as_str(), stranger.worker_token.as_str());
    let wid = holder.worker_id.to_string();

    // (method, path, body, [none, wrong key, other build's token, other worker's token, right credential] -> expected status)
    type Row<'a> = (&'a str, String, Option<Value>, [u16; 5], Cred<'a>);
    let rows: Vec<Row> = vec![
        // Submitters and operators: API key, or this build's token where the page allows it.
        (
            "get",
            format!("/api/builds/{a_id}"),
            None,
            [401, 403, 403, 403, 200],
            Cred::BuildToken(&a_tok),
        ),
        (
            "get",
            format!("/api/builds/{a_id}/status"),
            None,
            [401, 403, 403, 403, 200],
            Cred::BuildToken(&a_tok),
        ),
        (
            "get",
            format!("/api/builds/{a_id}/logs"),
            None,
            [401, 403, 403, 403, 200],
            Cred::BuildToken(&a_tok),
        ),
        (
            "get",
            format!("/api/builds/{a_id}/download"),
            None,
            [401, 403, 403, 403, 400],
            Cred::BuildToken(&a_tok),
        ),
        (
            "get",
            format!("/api/builds/{a_id}/download/source"),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "post",
            format!("/api/builds/{a_id}/retry"),
            None,
            [401, 403, 403, 403, 200],
            Cred::BuildToken(&a_tok),
        ),
        (
            "get",
            "/api/builds".into(),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "get",
            "/api/builds/statistics".into(),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "get",
            "/api/builds/active".into(),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "get",
            "/api/workers".into(),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "get",
            format!("/api/workers/{wid}/stats"),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "get",
            format!("/api/diagnostics/{wid}"),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "post",
            "/api/workers/register".into(),
            Some(json!({"name": "n", "capabilities": {"platforms": ["ios"]}})),
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        // Workers: their own token; a stranger's token is a 409 on a build it does not hold.
        (
            "get",
            format!("/api/builds/{a_id}/source"),
            None,
            [401, 403, 403, 409, 200],
            Cred::WorkerToken(h),
        ),
        (
            "post",
            format!("/api/builds/{a_id}/logs"),
            Some(json!({"message": "hi"})),
            [401, 403, 403, 409, 200],
            Cred::WorkerToken(h),
        ),
        (
            "post",
            format!("/api/builds/{a_id}/heartbeat"),
            Some(json!({})),
            [401, 403, 403, 409, 200],
            Cred::WorkerToken(h),
        ),
        (
            "post",
            "/api/workers/heartbeat".into(),
            Some(json!({"build_id": a_id})),
            [401, 403, 403, 200, 200],
            Cred::WorkerToken(h),
        ),
        (
            "post",
            "/api/workers/abandon".into(),
            Some(json!({"build_id": a_id})),
            [401, 403, 403, 409, 0],
            Cred::WorkerToken(h),
        ),
        (
            "post",
            "/api/workers/fail".into(),
            Some(json!({"build_id": a_id, "error": "x"})),
            [401, 403, 403, 409, 0],
            Cred::WorkerToken(h),
        ),
        (
            "post",
            "/api/diagnostics/report".into(),
            Some(json!({"worker_id": wid, "status": "healthy"})),
            [401, 403, 403, 403, 200],
            Cred::WorkerToken(h),
        ),
        (
            "post",
            format!("/api/workers/{}/drain", stranger.worker_id),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "post",
            format!("/api/workers/{}/approve", stranger.worker_id),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "get",
            "/api/keys".into(),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "post",
            "/api/keys".into(),
            Some(json!({"name": "matrix", "scopes": ["read"]})),
            [401, 403, 403, 403, 201],
            Cred::Key,
        ),
        (
            "get",
            format!("/api/diagnostics/{wid}/latest"),
            None,
            [401, 403, 403, 403, 200],
            Cred::Key,
        ),
        (
            "get",
            format!("/api/builds/{a_id}/certs"),
            None,
            [401, 403, 403, 409, 404],
            Cred::WorkerToken(h),
        ),
        (
            "get",
            "/api/workers/poll".into(),
            None,
            [401, 403, 403, 200, 200],
            Cred::WorkerToken(h),
        ),
        (
            "post",
            "/api/workers/result".into(),
            Some(json!({})),
            [401, 403, 403, 400, 400],
            Cred::WorkerToken(h),
        ),
        (
            "post",
            "/api/workers/upload".into(),
            Some(json!({})),
            [401, 403, 403, 400, 400],
            Cred::WorkerToken(h),
        ),
        // Anyone.
        (
            "get",
            "/api/health".into(),
            None,
            [200, 200, 200, 200, 200],
            Cred::None,
        ),
        (
            "get",
            "/public/stats".into(),
            None,
            [200, 200, 200, 200, 200],
            Cred::None,
        ),
        (
            "get",
            "/healthz".into(),
            None,
            [200, 200, 200, 200, 200],
            Cred::None,
        ),
        (
            "get",
            "/readyz".into(),
            None,
            [200, 200, 200, 200, 200],
            Cred::None,
        ),
        (
            "get",
            "/metrics".into(),
            None,
            [200, 200, 200, 200, 200],
            Cred::None,
        ),
        (
            "get",
            "/health".into(),
            None,
            [200, 200, 200, 200, 200],
            Cred::None,
        ),
        (
            "get",
            "/api/stats".into(),
            None,
            [200, 200, 200, 200, 200],
            Cred::None,
        ),
        (
            "get",
            "/api/openapi.json".into(),
            None,
            [200, 200, 200, 200, 200],
            Cred::None,
        ),
    ];
    for (method, path, body, expected, right) in rows {
        let creds = [
            Cred::None,
            Cred::WrongKey,
            Cred::BuildToken(&b_tok),
            Cred::WorkerToken(s),
            right,
        ];
        for (cred, want) in creds.into_iter().zip(expected) {
            if want == 0 {
                continue; // The right credential would change the build; covered elsewhere.
            }
            let url = format!("{}{path}", farm.gateway);
            let mut req = match method {
                "get" => farm.http.get(&url),
                _ => farm.http.post(&url),
            };
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = with(req, cred).send().await.unwrap();
            let got = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            assert_eq!(got, want, "{method} {path} with {cred:?}: {text}");
            if got >= 400 {
                let e: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{method} {path}: not the error shape: {text}"));
                assert!(
                    e["error"].is_string() && e["code"].is_string(),
                    "{method} {path}: {e}"
                );
                assert!(
                    !text.contains("sqlx") && !text.contains("SELECT") && !text.contains("/tmp"),
                    "{method} {path} leaked detail: {text}"
                );
            }
        }
    }
    // Cancel last: strangers cannot, the build's own token can.
    for cred in [
        Cred::None,
        Cred::WrongKey,
        Cred::BuildToken(&b_tok),
        Cred::WorkerToken(s),
    ] {
        let r = with(
            farm.http
                .post(format!("{}/api/builds/{a_id}/cancel", farm.gateway)),
            cred,
        )
        .send()
        .await
        .unwrap();
        assert!(
            matches!(r.status().as_u16(), 401 | 403),
            "cancel with {cred:?}: {}",
            r.status()
        );
    }
    assert_eq!(
        farm.get_build(&a_id).await["status"],
        "building",
        "nothing a stranger sent changed the build"
    );
    let r = with(
        farm.http
            .post(format!("{}/api/builds/{a_id}/cancel", farm.gateway)),
        Cred::BuildToken(&a_tok),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registering_a_worker_needs_proof_of_owning_it() {
    use freeagent_tests::freeagent_shared::{db, ids::ApiKeyId, token};
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let w = farm.register_worker("mac", &["ios"]).await;
    // A second key that may register workers, but did not register this one.
    let other_key = "fak_second-worker-key-second-worker-key-01";
    db::api_keys::api_key_ensure(
        &farm.db.pool,
        ApiKeyId::new(),
        "second",
        &token::hash(other_key),
        &["worker"],
    )
    .await
    .unwrap();
    let body = json!({"id": w.worker_id, "name": "hijack", "capabilities": {"platforms": ["ios"]}});
    let url = format!("{}/api/workers/register", farm.gateway);
    let r = farm
        .http
        .post(&url)
        .header("x-api-key", other_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another key must not take over the worker");
    // With the worker's own token it may.
    let r = farm
        .http
        .post(&url)
        .header("x-api-key", other_key)
        .header("x-worker-token", &w.worker_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "re-registered");
    assert_ne!(v["access_token"], w.worker_token.as_str());
    // The registering key itself (admin here) may too; a new id is a plain registration.
    let r = farm
        .http
        .post(&url)
        .header("x-api-key", API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let fresh =
        json!({"id": uuid::Uuid::now_v7(), "name": "new", "capabilities": {"platforms": ["ios"]}});
    assert_eq!(
        farm.http
            .post(&url)
            .header("x-api-key", other_key)
            .json(&fresh)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
