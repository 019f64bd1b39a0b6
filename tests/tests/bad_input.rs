//! Every client mistake on submit and read gets a clear 4xx with the `{"error","code"}` shape,
//! and nothing is stored: no build row, no object.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::db;
use freeagent_tests::{API_KEY, Farm, FarmOpts, example, pack};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

async fn farm() -> Farm {
    Farm::start(FarmOpts {
        workers: 0,
        extra_env: vec![
            ("FREEAGENT_SOURCE_LIMIT".into(), "64KiB".into()),
            ("FREEAGENT_CERTS_LIMIT".into(), "1KiB".into()),
        ],
        ..Default::default()
    })
    .await
}

fn objects(farm: &Farm) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&farm.data.path().join("objects"))
}

async fn assert_nothing_stored(farm: &Farm) {
    let list = db::builds::build_list(
        &farm.db.pool,
        &db::builds::ListFilter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(list.is_empty(), "a refused submission left a build row");
    assert_eq!(objects(farm), 0, "a refused submission left an object");
}

async fn expect(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.expect("a JSON error body");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    body
}

fn source() -> Part {
    Part::bytes(pack(&example("hello"))).file_name("s.tar.gz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_that_are_wrong_are_refused_and_leave_nothing() {
    let f = farm().await;
    let url = format!("{}/api/builds", f.gateway);
    let post = || f.http.post(&url).header("x-api-key", API_KEY);

    expect(
        post()
            .json(&serde_json::json!({"platform": "android"}))
            .send()
            .await
            .unwrap(),
        400,
        "not_multipart",
    )
    .await;
    expect(
        post()
            .multipart(Form::new().text("platform", "android"))
            .send()
            .await
            .unwrap(),
        400,
        "missing_source",
    )
    .await;
    expect(
        post()
            .multipart(
                Form::new()
                    .text("platform", "windows")
                    .part("source", source()),
            )
            .send()
            .await
            .unwrap(),
        400,
        "invalid_platform",
    )
    .await;
    expect(
        post()
            .multipart(Form::new().part("source", source()))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_platform",
    )
    .await;
    expect(
        post()
            .multipart(
                Form::new()
                    .text("platform", "ios")
                    .text("metadata", "{not json")
                    .part("source", source()),
            )
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect(
        post()
            .multipart(
                Form::new()
                    .text("platform", "ios")
                    .text("priority", "high")
                    .part("source", source()),
            )
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect(
        post()
            .multipart(
                Form::new()
                    .text("platform", "ios")
                    .text("queue", "a.b>")
                    .part("source", source()),
            )
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    // Parts over their limits, found while streaming.
    let big = Part::bytes(vec![7u8; 200 * 1024]).file_name("big.tar.gz");
    expect(
        post()
            .multipart(Form::new().text("platform", "android").part("source", big))
            .send()
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    let certs = Part::bytes(vec![1u8; 4096]).file_name("certs.p12");
    expect(
        post()
            .multipart(
                Form::new()
                    .text("platform", "android")
                    .part("source", source())
                    .part("certs", certs),
            )
            .send()
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    // A body cut off mid-part.
    let cut = "--XX\r\nContent-Disposition: form-data; name=\"source\"; filename=\"a\"\r\n\r\nabc";
    let resp = post()
        .header("content-type", "multipart/form-data; boundary=XX")
        .body(cut)
        .send()
        .await
        .unwrap();
    expect(resp, 400, "malformed_multipart").await;
    // Credentials.
    let ok_form = || {
        Form::new()
            .text("platform", "android")
            .part("source", source())
    };
    expect(
        f.http.post(&url).multipart(ok_form()).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect(
        f.http
            .post(&url)
            .header("x-api-key", "fak_wrong")
            .multipart(ok_form())
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    expect(
        f.http
            .post(&url)
            .header("authorization", "Bearer fak_wrong")
            .multipart(ok_form())
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_nothing_stored(&f).await;

    // Unknown parts are ignored (old clients send Apple credentials); Bearer works.
    let form = ok_form()
        .text("appleId", "me@example.com")
        .text("applePassword", "hunter2");
    let resp = f
        .http
        .post(format!("{}/api/builds/submit", f.gateway))
        .header("authorization", format!("Bearer {API_KEY}"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(!f.log_of("gateway").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_the_right_credential_and_an_existing_build() {
    let f = farm().await;
    let a = f.submit_dir(&example("hello"), "android").await;
    let b = f.submit_dir(&example("hello"), "ios").await;
    let (a_id, b_token) = (
        a["id"].as_str().unwrap(),
        b["access_token"].as_str().unwrap(),
    );
    let get = |path: String| f.http.get(format!("{}{path}", f.gateway));

    for path in [
        format!("/api/builds/{a_id}"),
        format!("/api/builds/{a_id}/status"),
        format!("/api/builds/{a_id}/logs"),
        format!("/api/builds/{a_id}/download"),
    ] {
        expect(get(path.clone()).send().await.unwrap(), 401, "unauthorized").await;
        // Another build's token reaches only that build.
        expect(
            get(path.clone())
                .header("x-build-token", b_token)
                .send()
                .await
                .unwrap(),
            403,
            "forbidden",
        )
        .await;
        expect(
            get(path.clone())
                .header("x-api-key", "fak_wrong")
                .send()
                .await
                .unwrap(),
            403,
            "forbidden",
        )
        .await;
    }
    // Unknown and malformed ids: 404 after a valid key, never before.
    let unknown = uuid::Uuid::now_v7();
    expect(
        get(format!("/api/builds/{unknown}"))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    expect(
        get("/api/builds/not-an-id/status".into())
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    expect(
        get(format!("/api/builds/{unknown}")).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect(
        get(format!("/api/builds/{unknown}"))
            .header("x-build-token", b_token)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    // Bad query parameters.
    expect(
        get("/api/builds?status=done".into())
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect(
        get("/api/builds?limit=0".into())
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect(
        get(format!("/api/builds/{a_id}/logs?after=x"))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    // A result that does not exist yet.
    let r = expect(
        get(format!("/api/builds/{a_id}/download"))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap(),
        400,
        "build_not_completed",
    )
    .await;
    assert_eq!(r["error"], "Build not completed");
    // Huge headers are refused by the HTTP layer, not a crash.
    let huge = "x".repeat(1 << 20);
    let r = get(format!("/api/builds/{a_id}"))
        .header("x-api-key", API_KEY)
        .header("x-junk", huge)
        .send()
        .await;
    assert!(r.map(|r| r.status().is_client_error()).unwrap_or(true));
    // The gateway still answers.
    assert_eq!(
        get(format!("/api/builds/{a_id}"))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_with_a_cursor() {
    let f = farm().await;
    let mut ids = vec![];
    for _ in 0..5 {
        ids.push(
            f.submit_dir(&example("hello"), "android").await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => format!("{}/api/builds?limit=2", f.gateway),
            Some(c) => format!("{}/api/builds?limit=2&cursor={c}", f.gateway),
        };
        let resp = f
            .http
            .get(url)
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-total-count"], "5");
        // `Link: </api/builds?limit=2&cursor=<id>>; rel="next"` while more remain.
        let next = resp
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let page: Value = resp.json().await.unwrap();
        seen.extend(
            page.as_array()
                .unwrap()
                .iter()
                .map(|b| b["id"].as_str().unwrap().to_owned()),
        );
        match next {
            Some(link) => {
                assert!(link.ends_with("; rel=\"next\""), "{link}");
                let c = link.split("cursor=").nth(1).unwrap();
                cursor = Some(c.split('>').next().unwrap().to_owned());
            }
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");
}
