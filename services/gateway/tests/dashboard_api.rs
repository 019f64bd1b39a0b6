//! The dashboard's server side, in process: a session cookie is the credential it was made
//! from (scopes, revocation, one build for a build token), changes need the CSRF token, undrain
//! is a guarded transition, and `/api/overview` counts what finished.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Auth, Farm, Reply, send, unknown_worker};

/// Signs in with `body`; returns the `Cookie` header value and the CSRF token.
async fn sign_in(farm: &Farm, body: Value) -> (String, String) {
    let r = send(farm.http.post(farm.url("/ui/api/sign-in")).json(&body)).await;
    assert_eq!(r.status, 200, "sign-in: {r}");
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    (cookie, r.json()["csrf_token"].as_str().unwrap().to_owned())
}

async fn with_cookie(
    farm: &Farm,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> Reply {
    let mut r = farm
        .http
        .request(method, farm.url(path))
        .header("cookie", cookie);
    if let Some(t) = csrf {
        r = r.header("x-csrf-token", t);
    }
    send(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_session_is_the_key_and_changes_need_the_csrf_token() {
    let farm = Farm::start().await;
    let b = farm.submit("android").await;
    let (cookie, csrf) = sign_in(&farm, json!({"api_key": farm.key})).await;
    let list = with_cookie(&farm, Method::GET, "/api/builds", &cookie, None).await;
    assert_eq!(list.status, 200, "{list}");
    let cancel = format!("/api/builds/{}/cancel", b.id);
    let r = with_cookie(&farm, Method::POST, &cancel, &cookie, None).await;
    assert_eq!(r.status, 403, "{r}");
    let r = with_cookie(&farm, Method::POST, &cancel, &cookie, Some("fcs_wrong")).await;
    assert_eq!(r.status, 403, "{r}");
    assert_eq!(farm.build(&b.id).await["status"], "pending");
    let r = with_cookie(&farm, Method::POST, &cancel, &cookie, Some(&csrf)).await;
    assert_eq!(r.status, 200, "{r}");

    // A read-only key's session reads, and may not cancel even with the token.
    let reader = farm.add_key("reader", &["read"]).await;
    let (rc, rt) = sign_in(&farm, json!({"api_key": reader})).await;
    let other = farm.submit("android").await;
    let r = with_cookie(
        &farm,
        Method::POST,
        &format!("/api/builds/{}/cancel", other.id),
        &rc,
        Some(&rt),
    )
    .await;
    assert_eq!(r.status, 403, "{r}");
    // Revoking the key ends its sessions.
    let keys = farm.get("/api/keys", &farm.key()).await.json();
    let id = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "reader")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = send(farm.req(Method::DELETE, &format!("/api/keys/{id}"), &farm.key())).await;
    assert_eq!(r.status, 200, "{r}");
    let r = with_cookie(&farm, Method::GET, "/api/builds", &rc, None).await;
    assert_eq!(r.status, 401, "{r}");
    // A key without the read scope cannot sign in; signing out ends the session.
    let submitter = farm.add_key("submitter", &["submit"]).await;
    let r = send(
        farm.http
            .post(farm.url("/ui/api/sign-in"))
            .json(&json!({"api_key": submitter})),
    )
    .await;
    assert_eq!(r.status, 403, "{r}");
    let r = with_cookie(
        &farm,
        Method::POST,
        "/ui/api/sign-out",
        &cookie,
        Some(&csrf),
    )
    .await;
    assert_eq!(r.status, 204, "{r}");
    let r = with_cookie(&farm, Method::GET, "/api/builds", &cookie, None).await;
    assert_eq!(r.status, 401, "{r}");
    let r = with_cookie(&farm, Method::GET, "/ui/api/session", &cookie, None).await;
    assert_eq!(r.status, 401, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_session_opens_its_build_and_nothing_else() {
    let farm = Farm::start().await;
    let mine = farm.submit("android").await;
    let other = farm.submit("android").await;
    let r = send(
        farm.http
            .post(farm.url("/ui/api/sign-in"))
            .json(&json!({"build_id": mine.id, "build_token": other.token})),
    )
    .await;
    assert_eq!(r.status, 403, "another build's token: {r}");
    let (cookie, csrf) = sign_in(
        &farm,
        json!({"build_id": mine.id, "build_token": mine.token}),
    )
    .await;
    let r = with_cookie(
        &farm,
        Method::GET,
        &format!("/api/builds/{}", mine.id),
        &cookie,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r}");
    let r = with_cookie(
        &farm,
        Method::GET,
        &format!("/api/builds/{}", other.id),
        &cookie,
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{r}");
    let r = with_cookie(&farm, Method::GET, "/api/builds", &cookie, None).await;
    assert_eq!(r.status, 401, "{r}");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = send(
        no_redirects
            .get(farm.url("/ui/workers"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location").unwrap(),
        format!("/ui/builds/{}", mine.id)
    );
    let r = with_cookie(
        &farm,
        Method::POST,
        &format!("/api/builds/{}/cancel", mine.id),
        &cookie,
        Some(&csrf),
    )
    .await;
    assert_eq!(r.status, 200, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undrain_is_a_guarded_admin_transition() {
    let farm = Farm::start().await;
    let w = farm.register("mac-1", &["ios"]).await;
    let path = format!("/api/workers/{}/undrain", w.id);
    let r = farm.post_empty(&path, &farm.key()).await;
    assert_eq!(r.status, 409, "not draining: {r}");
    let reader = Auth::Key(farm.add_key("reader", &["read"]).await);
    let r = farm.post_empty(&path, &reader).await;
    assert_eq!(r.status, 403, "{r}");
    let r = farm
        .post_empty(&format!("/api/workers/{}/drain", w.id), &farm.key())
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = farm.post_empty(&path, &farm.key()).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["status"], "idle");
    let r = farm
        .post_empty(
            &format!("/api/workers/{}/undrain", unknown_worker()),
            &farm.key(),
        )
        .await;
    assert_eq!(r.status, 404, "{r}");
    let listed = farm.get("/api/workers", &farm.key()).await.json();
    let me = &listed["workers"].as_array().unwrap()[0];
    assert_eq!(
        (&me["platforms"], &me["queues"]),
        (&json!(["ios"]), &json!(["ios"]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_what_finished_and_the_list_filters_by_queue() {
    let farm = Farm::start().await;
    let w = farm.register("linux-1", &["android"]).await;
    let done = farm.completed_build(&w, b"apk").await;
    let _pending = farm.submit("ios").await;
    let o = farm.get("/api/overview", &farm.key()).await;
    assert_eq!(o.status, 200, "{o}");
    let o = o.json();
    for window in ["hour", "day"] {
        assert_eq!(o[window]["total"]["completed"], 1, "{o}");
        assert_eq!(o[window]["total"]["success_rate"], 1.0, "{o}");
        assert_eq!(o[window]["buckets"].as_array().unwrap().len(), 1, "{o}");
    }
    assert_eq!(o["hour"]["bucket_secs"], 60);
    let list = farm.get("/api/builds?queue=android", &farm.key()).await;
    assert_eq!(list.header("x-total-count").unwrap(), "1");
    let rows = list.json();
    assert_eq!(rows[0]["id"], done.id.as_str());
    assert_eq!(
        (&rows[0]["queue"], &rows[0]["attempt"]),
        (&json!("android"), &json!(1))
    );
    assert!(rows[0].get("duration_ms").is_some(), "{rows}");
    let bad = farm
        .get("/api/builds?queue=Not%20a%20queue", &farm.key())
        .await;
    assert_eq!(bad.status, 400, "{bad}");
}
