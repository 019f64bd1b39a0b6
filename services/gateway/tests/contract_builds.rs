//! The submitters' routes: the list (a bare array, paged in headers), one build, the old
//! clients' status route, cancel, retry from any status, downloads (checksum, ranges), the
//! inputs' content types, statistics and active builds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Auth, Farm};

const SUMMARY: [&str; 12] = [
    "id",
    "platform",
    "status",
    "worker_id",
    "worker_name",
    "submitted_at",
    "createdAt",
    "updated_at",
    "completed_at",
    "completedAt",
    "error_message",
    "has_result",
];

/// The `rel="next"` target of a `Link` header, if any.
fn next_link(link: Option<String>) -> Option<String> {
    link?
        .split(',')
        .find(|l| l.contains(r#"rel="next""#))
        .and_then(|l| Some(l[l.find('<')? + 1..l.find('>')?].to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_a_bare_array_paged_in_headers() {
    let farm = Farm::start().await;
    let mut ids = vec![];
    for p in ["android", "ios", "android"] {
        ids.push(farm.submit(p).await.id);
    }
    let r = farm.get("/api/builds?limit=2", &farm.key()).await;
    assert_eq!(r.status, 200, "{r}");
    let page = r.json();
    let items = page
        .as_array()
        .unwrap_or_else(|| panic!("a bare array: {page}"));
    assert_eq!(items.len(), 2, "{page}");
    for item in items {
        for k in SUMMARY {
            assert!(item.get(k).is_some(), "summary key {k} in {item}");
        }
    }
    assert_eq!(
        r.header("x-total-count").as_deref(),
        Some("3"),
        "{:?}",
        r.headers
    );
    let next =
        next_link(r.header("link")).unwrap_or_else(|| panic!("a next link: {:?}", r.headers));
    assert!(next.contains("cursor="), "{next}");
    // The link may be absolute or a path.
    let path = next.strip_prefix(&farm.base).unwrap_or(&next).to_owned();
    let r = farm.get(&path, &farm.key()).await;
    assert_eq!(r.status, 200, "{r}");
    let rest = r.json();
    assert_eq!(rest.as_array().map(Vec::len), Some(1), "{rest}");
    assert_eq!(
        next_link(r.header("link")),
        None,
        "no next page after the last"
    );
    let mut seen: Vec<&str> = items
        .iter()
        .chain(rest.as_array().unwrap())
        .filter_map(|b| b["id"].as_str())
        .collect();
    seen.sort_unstable();
    ids.sort_unstable();
    assert_eq!(seen, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_build_is_failed_on_the_status_route_and_cancelled_elsewhere() {
    let farm = Farm::start().await;
    let b = farm.submit("ios").await;
    let token = Auth::BuildToken(b.token.clone());
    let r = farm
        .post_empty(&format!("/api/builds/{}/cancel", b.id), &token)
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["status"], "cancelled", "{r}");
    assert_eq!(r.json()["id"], b.id.as_str(), "{r}");

    let r = farm
        .get(&format!("/api/builds/{}/status", b.id), &token)
        .await;
    assert_eq!(r.status, 200, "{r}");
    let s = r.json();
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["error_message"], "Build cancelled by user", "{s}");
    assert_eq!(s["platform"], "ios", "{s}");
    assert!(s["submitted_at"].is_i64(), "submitted_at in epoch ms: {s}");
    assert!(s["completed_at"].is_i64(), "completed_at in epoch ms: {s}");
    assert!(s["started_at"].is_null() || s["started_at"].is_i64(), "{s}");
    assert_eq!(farm.build(&b.id).await["status"], "cancelled");

    // Twice: already finished. The DELETE spelling cancels too.
    let r = farm
        .post_empty(&format!("/api/builds/{}/cancel", b.id), &farm.key())
        .await;
    assert_eq!(r.status, 400, "{r}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already finished"),
        "{r}"
    );
    let other = farm.submit("android").await;
    let r = support::send(farm.req(
        reqwest::Method::DELETE,
        &format!("/api/builds/{}", other.id),
        &farm.key(),
    ))
    .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("cancelled")),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_can_be_retried_from_pending_completed_failed_and_cancelled() {
    let farm = Farm::start().await;
    let w = farm.register("w", &["android"]).await;
    let completed = farm.completed_build(&w, b"app").await;
    let failed = farm.submit("android").await;
    farm.claim(&w.auth(), &failed.id).await;
    let r = farm
        .post(
            "/api/workers/fail",
            &w.auth(),
            json!({"build_id": failed.id, "error": "boom"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let cancelled = farm.submit("ios").await;
    let r = farm
        .post_empty(&format!("/api/builds/{}/cancel", cancelled.id), &farm.key())
        .await;
    assert_eq!(r.status, 200, "{r}");
    let pending = farm.submit("ios").await;

    for (from, b) in [
        ("pending", &pending),
        ("completed", &completed),
        ("failed", &failed),
        ("cancelled", &cancelled),
    ] {
        let r = farm
            .post_empty(
                &format!("/api/builds/{}/retry", b.id),
                &Auth::BuildToken(b.token.clone()),
            )
            .await;
        assert_eq!(r.status, 200, "retry from {from}: {r}");
        let v = r.json();
        assert_eq!(v["status"], "pending", "{from}: {v}");
        assert_eq!(v["original_build_id"], b.id.as_str(), "{from}: {v}");
        assert!(v["submitted_at"].is_string(), "{from}: {v}");
        let id = v["id"].as_str().unwrap_or_default();
        assert!(!id.is_empty() && id != b.id, "{from}: a new build: {v}");
        // The new token reaches the new build.
        let token = Auth::BuildToken(v["access_token"].as_str().unwrap_or_default().to_owned());
        let r = farm.get(&format!("/api/builds/{id}"), &token).await;
        assert_eq!(r.status, 200, "{from}: the retry's token: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_carry_the_checksum_honour_ranges_and_wait_for_completion() {
    let farm = Farm::start().await;
    let w = farm.register("w", &["android"]).await;
    let early = farm.submit("android").await;
    let r = farm
        .get(&format!("/api/builds/{}/download", early.id), &farm.key())
        .await;
    assert_eq!(r.status, 400, "no result yet: {r}");
    assert!(r.text().contains("not completed"), "{r}");
    let r = farm
        .post_empty(&format!("/api/builds/{}/cancel", early.id), &farm.key())
        .await;
    assert_eq!(r.status, 200, "{r}");

    let artifact: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let b = farm.completed_build(&w, &artifact).await;
    let sha = hex::encode(Sha256::digest(&artifact));
    for path in [
        format!("/api/builds/{}/download", b.id),
        format!("/api/builds/{}/download/result", b.id),
    ] {
        let r = farm.get(&path, &Auth::BuildToken(b.token.clone())).await;
        assert_eq!(r.status, 200, "{path}: {r}");
        assert_eq!(r.body.as_ref(), artifact.as_slice(), "{path}");
        assert_eq!(
            r.header("x-checksum-sha256").as_deref(),
            Some(sha.as_str()),
            "{path}"
        );
        assert_eq!(
            r.header("content-length").as_deref(),
            Some("10000"),
            "{path}"
        );
        let disposition = r.header("content-disposition").unwrap_or_default();
        assert!(
            disposition.contains(&format!("filename=\"{}.apk\"", b.id)),
            "{path}: {disposition}"
        );
    }
    let r = support::send(
        farm.req(
            reqwest::Method::GET,
            &format!("/api/builds/{}/download", b.id),
            &farm.key(),
        )
        .header("range", "bytes=100-199"),
    )
    .await;
    assert_eq!(r.status, 206, "{r}");
    assert_eq!(r.body.as_ref(), &artifact[100..200]);
    assert!(
        r.header("content-range")
            .unwrap_or_default()
            .starts_with("bytes 100-199/"),
        "{:?}",
        r.headers
    );

    let r = farm
        .get(
            &format!("/api/builds/{}/download/source", b.id),
            &farm.key(),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.body.as_ref(),
        support::gzip(b"echo hello > $FREEAGENT_OUTPUT_DIR/app").as_slice()
    );

    let detail = farm.build(&b.id).await;
    for k in SUMMARY.iter().chain(&[
        "attempt",
        "priority",
        "queue",
        "metadata",
        "started_at",
        "duration_ms",
        "artifacts",
    ]) {
        assert!(detail.get(*k).is_some(), "{k} in {detail}");
    }
    let a = &detail["artifacts"][0];
    assert!(
        a["name"].is_string() && a["size"].is_u64() && a["sha256"].is_string(),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_is_served_with_the_content_type_of_its_bytes() {
    let farm = Farm::start().await;
    let cases: [(&str, Vec<u8>, &str, &[u8]); 3] = [
        (
            "app.zip",
            support::zip("build.sh", b"echo hi"),
            "application/zip",
            b"PK\x03\x04",
        ),
        (
            "app.tar.gz",
            support::gzip(b"tar bytes"),
            "application/gzip",
            b"\x1f\x8b",
        ),
        (
            "app.bin",
            b"plain bytes".to_vec(),
            "application/octet-stream",
            b"plain",
        ),
    ];
    for (i, (file, bytes, content_type, magic)) in cases.into_iter().enumerate() {
        let w = farm.register(&format!("w{i}"), &["android"]).await;
        let b = farm.submit_bytes("android", bytes.clone(), file).await;
        let job = farm.claim(&w.auth(), &b.id).await;
        let r = farm
            .get(&format!("/api/builds/{}/source", b.id), &w.auth())
            .await;
        assert_eq!(r.status, 200, "{file}: {r} (job {job})");
        assert!(r.body.starts_with(magic), "{file}");
        assert_eq!(r.body.as_ref(), bytes.as_slice(), "{file}");
        let got = r.header("content-type").unwrap_or_default();
        assert_eq!(got, content_type, "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_every_status_and_active_lists_held_builds() {
    let farm = Farm::start().await;
    let w = farm.register("w", &["android"]).await;
    let held = farm.submit("android").await;
    farm.claim(&w.auth(), &held.id).await;
    farm.submit("ios").await;

    let r = farm.get("/api/builds/statistics", &farm.key()).await;
    assert_eq!(r.status, 200, "{r}");
    let s = r.json();
    for k in [
        "total",
        "pending",
        "assigned",
        "building",
        "completed",
        "failed",
        "cancelled",
    ] {
        assert!(s[k].is_i64(), "{k} in {s}");
    }
    assert_eq!(s["total"], 2, "{s}");
    assert_eq!(s["pending"], 1, "{s}");
    assert_eq!(
        s["assigned"].as_i64().unwrap() + s["building"].as_i64().unwrap(),
        1,
        "{s}"
    );

    let r = farm.get("/api/builds/active", &farm.key()).await;
    assert_eq!(r.status, 200, "{r}");
    let a: Value = r.json();
    let builds = a["builds"].as_array().unwrap_or_else(|| panic!("{a}"));
    assert_eq!(builds.len(), 1, "{a}");
    let b = &builds[0];
    assert_eq!(b["id"], held.id.as_str(), "{a}");
    assert_eq!(b["worker_id"], w.id.as_str(), "{a}");
    for k in ["status", "platform", "started_at"] {
        assert!(b.get(k).is_some(), "{k} in {b}");
    }
}
