//! Hostile and careless clients (issue 14): slow headers, stalled and drip-fed bodies are cut
//! off, one address holds at most its share of connections, a flood from one
//! credential is refused with 429 while others are served, health does not scan per call, text
//! the database cannot store is a 400 (never an ERROR log line), and a build token retries once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::env;
use freeagent_tests::{API_KEY, Farm, FarmOpts, example};
use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `limit` passes); how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: env(&[
            ("FREEAGENT_HEADER_TIMEOUT", "1s"),
            ("FREEAGENT_BODY_IDLE_TIMEOUT", "1s"),
        ]),
        ..Default::default()
    })
    .await;
    // Headers one byte at a time, slower than the header timeout allows in all.
    let mut slow = TcpStream::connect(addr(&farm.gateway)).await.unwrap();
    let dribble = tokio::spawn(async move {
        for b in b"GET /api/builds HTTP/1.1\r\nHost: x\r\n" {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        slow
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut slow = dribble.await.unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(5))
            .await
            .is_some(),
        "a slow-header client is still connected"
    );

    // A body that stops after its first bytes, with credentials, on a JSON route.
    let mut stalled = TcpStream::connect(addr(&farm.gateway)).await.unwrap();
    let head = format!(
        "POST /api/workers/register HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let took = closed_within(&mut stalled, Duration::from_secs(10)).await;
    assert!(took.is_some(), "a stalled body kept its connection open");

    // Everyone else is served as usual.
    let r = farm
        .http
        .get(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The attack: with credentials, 10 bytes every 20 s kept a submit open past 95 s (each drop
/// came before the idle timeout). Here the grace is 1 s and the drip a few bytes every 300 ms:
/// far below the minimum rate, the request is stopped and the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentialed_drip_feed_body_is_cut_off_at_the_minimum_rate() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: env(&[
            ("FREEAGENT_BODY_IDLE_TIMEOUT", "1s"),
            ("FREEAGENT_BODY_MIN_RATE", "1KiB"),
        ]),
        ..Default::default()
    })
    .await;
    let mut drip = TcpStream::connect(addr(&farm.gateway)).await.unwrap();
    let head = format!(
        "POST /api/builds HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n\
         Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 100000000\r\n\r\n\
         --XX\r\nContent-Disposition: form-data; name=\"platform\"\r\n\r\nandroid\r\n\
         --XX\r\nContent-Disposition: form-data; name=\"source\"; filename=\"s.tar.gz\"\r\n\r\n"
    );
    drip.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = drip.into_split();
    let feeder = tokio::spawn(async move {
        // Until the server hangs up (or for a minute, which would fail the test).
        for _ in 0..200 {
            if write.write_all(b"0123456789").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut answer))
        .await
        .is_ok();
    assert!(closed, "a drip-fed body kept its request open for a minute");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty()
            || (answer.starts_with("HTTP/1.1 408") && answer.contains("FREEAGENT_BODY_MIN_RATE")),
        "{answer}"
    );
    feeder.abort();
    eprintln!("cut off after {:?}: {answer}", started.elapsed());
    // Nothing was stored as a build.
    let r = farm
        .http
        .get(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    let list: Value = r.json().await.unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}

/// One address may hold at most FREEAGENT_MAX_CONNECTIONS_PER_ADDRESS connections; past it a
/// new one is closed at once, and a slot is free again as soon as one of them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: env(&[("FREEAGENT_MAX_CONNECTIONS_PER_ADDRESS", "4")]),
        ..Default::default()
    })
    .await;
    // The farm's own client may hold an idle connection from start-up: count ours until the
    // server closes one at once.
    let mut held = Vec::new();
    let refused = loop {
        assert!(
            held.len() <= 4,
            "5 connections from one address were served"
        );
        let mut c = TcpStream::connect(addr(&farm.gateway)).await.unwrap();
        let _ = c
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buf = [0u8; 12];
        match tokio::time::timeout(Duration::from_secs(30), c.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {
                assert_eq!(&buf, b"HTTP/1.1 200");
                held.push(c);
            }
            // Closed without an answer: the address's share is taken.
            Ok(Err(_)) => break c,
            Err(_) => panic!("a connection past the cap was neither served nor closed"),
        }
    };
    assert!(!held.is_empty());
    drop(refused);
    drop(held.pop());
    // The freed slot is taken back once the server has seen the close.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    freeagent_tests::freeagent_shared::testing::wait::until(
        "a new connection is served again",
        Duration::from_secs(30),
        || async {
            fresh
                .get(format!("{}/healthz", farm.gateway))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_credential_gets_429_while_another_is_served() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: env(&[
            ("FREEAGENT_RATE_LIMIT_KEY", "5"),
            ("FREEAGENT_RATE_LIMIT_KEY_BURST", "10"),
        ]),
        ..Default::default()
    })
    .await;
    let build = farm.submit_dir(&example("hello"), "android").await;
    let (id, token) = (
        build["id"].as_str().unwrap().to_owned(),
        build["access_token"].as_str().unwrap().to_owned(),
    );
    let mut limited = None;
    for _ in 0..60 {
        let r = farm
            .http
            .get(format!("{}/api/builds/{id}", farm.gateway))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("60 quick requests from one key were never limited");
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    // The build's own token is another credential: served normally meanwhile.
    let r = farm
        .http
        .get(format!("{}/api/builds/{id}", farm.gateway))
        .header("x-build-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Probes are never limited.
    let r = farm
        .http
        .get(format!("{}/healthz", farm.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn figures_refreshes(farm: &Farm) -> f64 {
    let text = farm
        .metrics(&farm.gateway)
        .await
        .expect("the gateway's /metrics");
    freeagent_tests::metric_value(&text, "freeagent_figures_refreshes_total").unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_serves_cached_figures_instead_of_scanning_per_call() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: env(&[("FREEAGENT_FIGURES_TTL", "1h")]),
        ..Default::default()
    })
    .await;
    farm.submit_dir(&example("hello"), "android").await;
    let before = figures_refreshes(&farm).await;
    for path in ["/health", "/api/health", "/api/stats", "/public/stats"] {
        for _ in 0..10 {
            let r = farm
                .http
                .get(format!("{}{path}", farm.gateway))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let r = farm
        .http
        .get(format!("{}/api/builds/statistics", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 41 calls, at most one measurement of the farm (the first, if none ran before).
    let after = figures_refreshes(&farm).await;
    assert!(
        after - before <= 1.0,
        "{} measurements for 41 calls",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_the_database_cannot_store_is_a_400_and_never_an_error_log() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let url = |p: &str| format!("{}{p}", farm.gateway);
    let nul = "a\u{0}b";
    // Submission: metadata, queue and every text part.
    for (part, value) in [
        ("metadata", json!({"k": nul}).to_string()),
        ("metadata", json!({nul: 1}).to_string()),
        ("queue", nul.to_owned()),
        ("priority", nul.to_owned()),
    ] {
        let form = Form::new()
            .text("platform", "android")
            .part(
                "source",
                Part::bytes(freeagent_tests::pack(&example("hello"))).file_name("s.tar.gz"),
            )
            .text(part, value);
        let r = farm
            .http
            .post(url("/api/builds"))
            .header("x-api-key", API_KEY)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{part}: {body}");
        assert!(
            body["error"].is_string() && body["code"].is_string(),
            "{body}"
        );
    }
    // Registration: name and capabilities.
    for body in [
        json!({"name": nul, "capabilities": {"platforms": ["ios"]}}),
        json!({"name": "n", "capabilities": {"platforms": ["ios"], "os": nul}}),
    ] {
        let r = farm
            .http
            .post(url("/api/workers/register"))
            .header("x-api-key", API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    // A worker's reports: diagnostics, failure text.
    let w = farm.register_worker("w", &["android"]).await;
    for (path, body) in [
        (
            "/api/diagnostics/report",
            json!({"worker_id": w.worker_id, "status": "healthy", "checks": [{"name": nul}]}),
        ),
        (
            "/api/diagnostics/report",
            json!({"worker_id": w.worker_id, "status": nul}),
        ),
        (
            "/api/workers/fail",
            json!({"build_id": uuid::Uuid::now_v7(), "error": nul}),
        ),
        (
            "/api/workers/abandon",
            json!({"build_id": uuid::Uuid::now_v7(), "reason": nul}),
        ),
    ] {
        let r = farm
            .http
            .post(url(path))
            .header("x-worker-token", &w.worker_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path} {body}");
    }
    // A JSON body over the limit is 413; a method the path does not serve is a JSON 405.
    let huge = json!({"name": "x".repeat(3 << 20)});
    let r = farm
        .http
        .post(url("/api/workers/register"))
        .header("x-api-key", API_KEY)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = farm
        .http
        .put(url("/api/builds"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed", "{body}");
    let r = farm.http.get(url("/api/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    // Not one of these client mistakes reached the log as an ERROR.
    let log = farm.log_of("gateway");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "client mistakes logged at ERROR:\n{}",
        errors.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_token_retries_its_build_once_and_a_chain_of_tokens_three_times() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let build = farm.submit_dir(&example("hello"), "android").await;
    let (id, token) = (
        build["id"].as_str().unwrap().to_owned(),
        build["access_token"].as_str().unwrap().to_owned(),
    );
    let retry = |id: String, cred: (&'static str, String)| {
        let http = farm.http.clone();
        let url = format!("{}/api/builds/{id}/retry", farm.gateway);
        async move { http.post(url).header(cred.0, cred.1).send().await.unwrap() }
    };
    let first = retry(id.clone(), ("x-build-token", token.clone())).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let second = retry(id.clone(), ("x-build-token", token.clone())).await;
    assert_eq!(second.status(), 403);
    let body: Value = second.json().await.unwrap();
    assert!(
        body["hint"].as_str().unwrap().contains("own token"),
        "{body}"
    );
    // The new build's own token may retry it once in turn; an API key is not limited.
    let new_id = first["id"].as_str().unwrap().to_owned();
    let new_token = first["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    // Each new token retrying its own build once makes a chain: its tokens may retry three
    // times together (counted on the chain's root), not once each without end.
    let (mut id_n, mut token_n) = (new_id, new_token);
    for n in 2..=4 {
        let r = retry(id_n.clone(), ("x-build-token", token_n.clone())).await;
        if n == 4 {
            assert_eq!(r.status(), 403, "a fourth retry by token in one chain");
            let body: Value = r.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("chain"), "{body}");
            break;
        }
        assert_eq!(r.status(), 200, "retry {n} of the chain");
        let next: Value = r.json().await.unwrap();
        id_n = next["id"].as_str().unwrap().to_owned();
        token_n = next["access_token"].as_str().unwrap().to_owned();
    }
    // A refused retry took nothing: the API key still retries the same build.
    assert_eq!(
        retry(id_n, ("x-api-key", API_KEY.to_owned()))
            .await
            .status(),
        200
    );
    for _ in 0..3 {
        assert_eq!(
            retry(id.clone(), ("x-api-key", API_KEY.to_owned()))
                .await
                .status(),
            200
        );
    }
}

/// An upload refused before its body was read (a 429 here) reaches the client as that answer,
/// never as a connection reset mid-body, and the client's next request on its connection pool
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_early_is_answered_not_reset() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: env(&[
            ("FREEAGENT_RATE_LIMIT_KEY", "1"),
            ("FREEAGENT_RATE_LIMIT_KEY_BURST", "1"),
        ]),
        ..Default::default()
    })
    .await;
    // 4 MiB of source: far more than a socket buffer holds, so the client is still sending
    // when the refusal comes.
    let source = vec![7u8; 4 << 20];
    // Registered first: the key's bucket holds one request.
    let w = farm.register_worker("mac", &["ios"]).await;
    let mut refused = 0;
    for _ in 0..10 {
        let form = Form::new()
            .text("platform", "android")
            .part("source", Part::bytes(source.clone()).file_name("s.tar.gz"));
        let r = farm
            .http
            .post(format!("{}/api/builds", farm.gateway))
            .header("x-api-key", API_KEY)
            .multipart(form)
            .send()
            .await
            .expect("an answer, not a reset");
        if r.status() == 429 {
            refused += 1;
            assert!(r.headers().contains_key("retry-after"));
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "rate_limited", "{body}");
        }
    }
    assert!(refused >= 5, "{refused} of 10 refused");
    // The same for a worker's result upload (where the seed's fleet saw resets): refused by its
    // worker token's rate, or after authentication (the build is not its), it gets an answer.
    let mut refused = 0;
    for _ in 0..10 {
        let form = Form::new()
            .text("build_id", uuid::Uuid::now_v7().to_string())
            .text("worker_id", w.worker_id.to_string())
            .text("success", "true")
            .part("result", Part::bytes(source.clone()).file_name("app.ipa"));
        let r = farm
            .http
            .post(format!("{}/api/workers/upload", farm.gateway))
            .header("x-worker-token", &w.worker_token)
            .multipart(form)
            .send()
            .await
            .expect("an answer to a result upload, not a reset");
        if r.status() == 429 {
            refused += 1;
            assert!(r.headers().contains_key("retry-after"));
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "rate_limited", "{body}");
        }
    }
    assert!(refused >= 5, "{refused} of 10 uploads refused");
    let r = farm
        .http
        .get(format!("{}/healthz", farm.gateway))
        .send()
        .await
        .expect("the pool's next request works");
    assert_eq!(r.status(), 200);
}

/// The seed's fleet shares one API key and names each worker only inside its result form:
/// with the default limits, more result uploads than the key's burst are never refused, and the
/// submissions that share the key are not squeezed out by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_sharing_one_key_is_not_refused_its_uploads_by_default() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let w = farm.register_worker("mac", &["ios"]).await;
    let uploads = futures::stream::iter(0..1500)
        .map(|_| {
            let form = Form::new()
                .text("build_id", uuid::Uuid::now_v7().to_string())
                .text("worker_id", w.worker_id.to_string())
                .text("success", "true")
                .part("result", Part::bytes(vec![1u8; 1024]).file_name("app.ipa"));
            farm.http
                .post(format!("{}/api/workers/upload", farm.gateway))
                .header("x-api-key", API_KEY)
                .multipart(form)
                .send()
        })
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await;
    let statuses: Vec<u16> = uploads
        .into_iter()
        .map(|r| r.expect("an answer").status().as_u16())
        .collect();
    assert!(
        !statuses.contains(&429),
        "{} of 1500 uploads refused by the rate limits",
        statuses.iter().filter(|s| **s == 429).count()
    );
    // The key's own bucket is untouched: a burst of submissions passes.
    let hello = example("hello");
    let submits = futures::stream::iter(0..50)
        .map(|_| farm.submit_dir(&hello, "android"))
        .buffer_unordered(10)
        .collect::<Vec<_>>()
        .await;
    assert!(submits.iter().all(|s| s["id"].is_string()), "{submits:?}");
}
