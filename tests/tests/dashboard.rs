//! The web dashboard (issue 16) in a real browser (headless Chromium over WebDriver) against the
//! real binaries: sign-in, live builds list, a build's live log and artifact, cancel, drain,
//! hostile text shown as text with no script run, CSRF and sign-in redirects. Each test saves
//! screenshots under `<target>/dashboard-screenshots`. The tests take turns (one farm and one
//! browser at a time): a two-core CI machine runs them without starving any.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::browser::Browser;
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::{API_KEY, Farm, FarmOpts, pack, project};
use serde_json::{Value, json};
use std::time::Duration;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(90);
/// Lines the slow build prints, one each half second.
const LINES: usize = 20;

/// Submits a project whose build.sh is `script`, with `metadata`; returns the 201 body.
async fn submit(farm: &Farm, script: &str, metadata: Value) -> Value {
    let dir = project(script);
    let form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .text("metadata", metadata.to_string())
        .part(
            "source",
            reqwest::multipart::Part::bytes(pack(dir.path())).file_name("source.tar.gz"),
        );
    let resp = farm
        .http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", API_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

/// The dashboard's farms run builds on the worker's network: a build network of its own adds
/// and removes host addresses (a veth per build), and Chromium aborts the requests in flight at
/// every such change (net::ERR_NETWORK_CHANGED), which left a page at its "Loading…" shell.
fn opts() -> FarmOpts {
    FarmOpts {
        extra_env: vec![("FREEAGENT_BUILD_NETWORK".into(), "host".into())],
        ..Default::default()
    }
}

fn row(id: &str) -> String {
    format!("tr[data-build-id=\"{id}\"]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_appears_runs_and_completes_live_with_its_log_and_checksum() {
    let _turn = TURN.lock().await;
    let farm = Farm::start(opts()).await;
    let browser = Browser::start().await;
    browser.sign_in(&farm.gateway, API_KEY).await;
    browser.screenshot("overview-empty").await;
    browser.goto(&format!("{}/ui/builds", farm.gateway)).await;
    browser.wait_for("the builds table", "#builds-body").await;
    // Each page names itself in the tab; dark mode follows the system's setting.
    assert_eq!(
        browser.js("return document.title").await,
        json!("Builds · Free Agent")
    );
    assert_eq!(
        browser
            .js(
                "return [...document.styleSheets].some(s => [...s.cssRules].some(r => \
                 r.media && r.media.mediaText.includes('prefers-color-scheme: dark')))"
            )
            .await,
        json!(true),
        "the stylesheet has dark colours for a dark system setting"
    );

    // Lines come slowly (10 s in all, time for a slow machine to open the page), so the page
    // must show them while the build runs.
    let script = format!(
        "for i in $(seq 1 {LINES}); do echo \"line $i\"; sleep 0.5; done\n\
         echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n"
    );
    let id = submit(&farm, &script, json!({"branch": "main"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The row appears and reaches `completed` with no reload.
    browser
        .wait_text(
            "the new build's row",
            &format!("{} td.status", row(&id)),
            |_| true,
        )
        .await;
    browser.js("window.__sameDocument = true;").await;
    browser
        .wait_text(
            "the row to show the build running",
            &format!("{} td.status", row(&id)),
            |s| s == "assigned" || s == "building" || s == "completed",
        )
        .await;
    browser.screenshot("builds").await;
    browser
        .wait_text(
            "the row to show completed",
            &format!("{} td.status", row(&id)),
            |s| s == "completed",
        )
        .await;
    assert_eq!(
        browser.js("return window.__sameDocument === true").await,
        json!(true),
        "the list updated without a reload"
    );
    let worker = browser
        .text(&format!("{} td.worker", row(&id)))
        .await
        .unwrap();
    assert_eq!(worker, "worker-0");
    assert_eq!(
        browser
            .text(&format!("{} td.attempt", row(&id)))
            .await
            .unwrap(),
        "1"
    );

    // A second build, watched from its own page: the log grows line by line.
    let id = submit(&farm, &script, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    browser
        .goto(&format!("{}/ui/builds/{id}", farm.gateway))
        .await;
    browser.wait_for("the build's page", "#build-id").await;
    let tab = browser.js("return document.title").await;
    assert!(
        tab.as_str()
            .is_some_and(|t| t.starts_with("Build ") && t.ends_with(" · Free Agent")),
        "the build page's title: {tab}"
    );
    let lines = || async {
        browser
            .texts("#log .line .msg")
            .await
            .into_iter()
            .filter(|l| l.starts_with("line "))
            .collect::<Vec<_>>()
    };
    let partial = wait::until("some but not all lines", WAIT, || async {
        let l = lines().await;
        (!l.is_empty() && l.len() < LINES).then_some(l)
    })
    .await;
    assert_eq!(partial[0], "line 1");
    browser.screenshot("build-running").await;
    wait::until("every line", WAIT, || async {
        (lines().await.len() == LINES).then_some(())
    })
    .await;
    let shown = lines().await;
    let expected: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(shown, expected, "each line once, in order");
    browser
        .wait_text("the page to show completed", "#build-status", |s| {
            s == "completed"
        })
        .await;
    let b = farm.get_build(&id).await;
    let artifact = b["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] != "source")
        .unwrap()
        .clone();
    let sha = browser
        .wait_text(
            "the artifact's SHA-256",
            &format!(
                "tr.artifact[data-name=\"{}\"] code.sha256",
                artifact["name"].as_str().unwrap()
            ),
            |s| !s.is_empty(),
        )
        .await;
    assert_eq!(sha, artifact["sha256"].as_str().unwrap());
    browser.screenshot("build").await;

    // The overview draws the figures of the builds that finished.
    browser.goto(&format!("{}/ui/", farm.gateway)).await;
    browser
        .wait_text(
            "the hour's success rate",
            "#window-hour .figure:nth-child(2) .big",
            |s| s == "100.0 %",
        )
        .await;
    browser
        .wait_for("a bar of the hour", "#window-hour svg rect.c-completed")
        .await;
    browser.screenshot("overview").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_build_is_cancelled_from_its_page_and_the_worker_stops_it() {
    let _turn = TURN.lock().await;
    let farm = Farm::start(opts()).await;
    let browser = Browser::start().await;
    browser.sign_in(&farm.gateway, API_KEY).await;
    let id = submit(&farm, "echo started\nsleep 300\n", json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    browser
        .goto(&format!("{}/ui/builds/{id}", farm.gateway))
        .await;
    browser
        .wait_text("the build to start", "#log", |t| t.contains("started"))
        .await;
    browser
        .wait_text("the page to show building", "#build-status", |s| {
            s == "building"
        })
        .await;
    // Cancel asks for a second click.
    browser.click("#cancel").await;
    browser.click("#cancel").await;
    browser
        .wait_text("the page to show cancelled", "#build-status", |s| {
            s == "cancelled"
        })
        .await;
    // The worker stopped it: it holds no build, and the attempt ended.
    wait::until("the worker to let the build go", WAIT, || async {
        let w: Value = farm
            .http
            .get(format!("{}/api/workers", farm.gateway))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let held = w["workers"][0]["builds"].as_array()?.len();
        (held == 0).then_some(())
    })
    .await;
    wait::until(
        "the worker's log to say it stopped the build",
        WAIT,
        || async {
            farm.log_of("worker-0")
                .contains("build cancelled")
                .then_some(())
        },
    )
    .await;
    browser
        .wait_text("the log's closing line", "#log", |t| {
            t.contains("Build cancelled by user")
        })
        .await;
    browser.screenshot("build-cancelled").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_drained_from_the_workers_page_gets_no_new_build() {
    let _turn = TURN.lock().await;
    let farm = Farm::start(FarmOpts {
        workers: 2,
        ..opts()
    })
    .await;
    let browser = Browser::start().await;
    browser.sign_in(&farm.gateway, API_KEY).await;
    browser.goto(&format!("{}/ui/workers", farm.gateway)).await;
    let w0 = "tr[data-worker-name=\"worker-0\"]";
    browser
        .wait_text("worker-0 to be idle", &format!("{w0} td.status"), |s| {
            s == "idle"
        })
        .await;
    browser
        .wait_for("worker-1", "tr[data-worker-name=\"worker-1\"]")
        .await;
    browser.click(&format!("{w0} button.drain")).await;
    browser
        .wait_text(
            "worker-0 to show draining",
            &format!("{w0} td.status"),
            |s| s == "draining",
        )
        .await;
    browser.screenshot("workers").await;
    // Every build now runs on worker-1.
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(
            submit(
                &farm,
                "echo ok > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
                json!({}),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for id in &ids {
        let b = farm.wait_terminal(id, WAIT).await;
        assert_eq!(b["status"], "completed");
        assert_eq!(
            b["worker_name"], "worker-1",
            "a drained worker took build {id}"
        );
    }
    // The page counts worker-1's builds, none for worker-0.
    browser
        .wait_text(
            "worker-1's count",
            "tr[data-worker-name=\"worker-1\"] td.done",
            |s| s == "3 / 3",
        )
        .await;
    assert_eq!(
        browser.text(&format!("{w0} td.done")).await.unwrap(),
        "0 / 0"
    );
    // Undrain: it takes builds again.
    browser.click(&format!("{w0} button.undrain")).await;
    browser
        .wait_text(
            "worker-0 to take builds again",
            &format!("{w0} td.status"),
            |s| s == "idle" || s == "building",
        )
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_metadata_log_lines_and_names_show_as_text_and_run_nothing() {
    let _turn = TURN.lock().await;
    let farm = Farm::start(opts()).await;
    let script_tag = "<script>window.__pwned = 'script'</script>";
    let img = "\"><img src=x onerror=\"window.__pwned = 'img'\">";
    // A worker named like an attack, registered over HTTP (it never polls).
    farm.register_worker(img, &["ios"]).await;
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let script = format!(
        "echo {}\necho {}\necho ok > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
        quote(script_tag),
        quote(img)
    );
    let id = submit(
        &farm,
        &script,
        json!({"note": script_tag, "title": img, img: [script_tag]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    farm.wait_terminal(&id, WAIT).await;
    let browser = Browser::start().await;
    browser.sign_in(&farm.gateway, API_KEY).await;
    let _ = browser.console().await;
    browser
        .goto(&format!("{}/ui/builds/{id}", farm.gateway))
        .await;
    let log = browser
        .wait_text("the hostile lines", "#log", |t| t.contains("onerror"))
        .await;
    assert!(log.contains(script_tag), "{log}");
    assert!(log.contains(img), "{log}");
    let meta = browser
        .wait_text("the metadata", "#metadata", |t| t.contains("note"))
        .await;
    assert!(meta.contains(script_tag) && meta.contains(img), "{meta}");
    browser.screenshot("build-hostile").await;
    browser.goto(&format!("{}/ui/workers", farm.gateway)).await;
    let names = browser
        .wait_text("the worker list", "#workers-body", |t| {
            t.contains("onerror")
        })
        .await;
    assert!(names.contains(img), "{names}");
    browser.goto(&format!("{}/ui/builds", farm.gateway)).await;
    browser.wait_for("the list", &row(&id)).await;
    // Nothing ran and nothing was parsed as markup.
    assert_eq!(
        browser.js("return typeof window.__pwned").await,
        json!("undefined")
    );
    let console = browser.console().await;
    for (level, message) in &console {
        assert!(
            !message.contains("pwned") && !message.contains("Content Security Policy"),
            "console {level}: {message}"
        );
    }
    browser
        .goto(&format!("{}/ui/builds/{id}", farm.gateway))
        .await;
    browser
        .wait_text("the lines again", "#log", |t| t.contains("onerror"))
        .await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('main script, main img').length")
            .await,
        json!(0)
    );
    assert_eq!(
        browser.js("return typeof window.__pwned").await,
        json!("undefined")
    );
    let console = browser.console().await;
    assert!(
        console
            .iter()
            .all(|(_, m)| !m.contains("pwned") && !m.contains("Content Security Policy")),
        "{console:?}"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_without_the_csrf_token_are_refused_and_pages_need_a_session() {
    let _turn = TURN.lock().await;
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..opts()
    })
    .await;
    let submitted = submit(&farm, "true\n", json!({})).await;
    let id = submitted["id"].as_str().unwrap().to_owned();
    let build_token = submitted["access_token"].as_str().unwrap().to_owned();
    let browser = Browser::start().await;

    // Without a session every page goes to the sign-in page, and comes back after it.
    browser.goto(&format!("{}/ui/workers", farm.gateway)).await;
    browser.wait_for("the sign-in form", "#api-key").await;
    assert_eq!(browser.path().await, "/ui/sign-in?next=%2Fui%2Fworkers");
    browser.screenshot("sign-in").await;
    browser.goto(&format!("{}/", farm.gateway)).await;
    browser.wait_for("the sign-in form", "#api-key").await;
    assert!(browser.path().await.starts_with("/ui/sign-in"));
    // A wrong key is refused on the page.
    browser.fill("#api-key", "fak_not-a-key").await;
    browser.click("#sign-in").await;
    browser
        .wait_text("the refusal", "#sign-in-error", |t| !t.is_empty())
        .await;
    browser.goto(&format!("{}/ui/workers", farm.gateway)).await;
    browser.fill("#api-key", API_KEY).await;
    browser.click("#sign-in").await;
    browser.wait_for("the workers page", "#workers-body").await;
    assert_eq!(browser.path().await, "/ui/workers");

    // The session cookie is HttpOnly: scripts cannot read it.
    assert_eq!(browser.js("return document.cookie").await, json!(""));
    // With the cookie but without the token, a change is refused; with the token it is made.
    let without = browser
        .js_async(&format!(
            "const done = arguments[0]; fetch('/api/builds/{id}/cancel', {{method: 'POST'}})\
             .then(r => done(r.status), e => done(String(e)));"
        ))
        .await;
    assert_eq!(without, json!(403));
    assert_eq!(farm.get_build(&id).await["status"], "pending");
    let with = browser
        .js_async(&format!(
            "const done = arguments[0]; fetch('/ui/api/session').then(r => r.json()).then(s => \
             fetch('/api/builds/{id}/cancel', {{method: 'POST', headers: {{'X-CSRF-Token': s.csrf_token}}}}))\
             .then(r => done(r.status), e => done(String(e)));"
        ))
        .await;
    assert_eq!(with, json!(200));

    // The same over plain HTTP: a session cookie alone changes nothing.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/ui/builds", farm.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(
        page.headers()["location"],
        "/ui/sign-in?next=%2Fui%2Fbuilds"
    );
    let signed = http
        .post(format!("{}/ui/api/sign-in", farm.gateway))
        .json(&json!({"api_key": API_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let csrf = signed.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = submit(&farm, "true\n", json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/api/builds/{other}/retry", farm.gateway);
    let refused = http
        .post(&url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let wrong = http
        .post(&url)
        .header("cookie", &cookie)
        .header("x-csrf-token", "fcs_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let allowed = http
        .post(&url)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    // Reads need no token; the security headers are on every dashboard response.
    let read = http
        .get(format!("{}/ui/builds", farm.gateway))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let csp = read.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(read.headers()["x-content-type-options"], "nosniff");
    // Signed out, the cookie is worth nothing.
    let out = http
        .post(format!("{}/ui/api/sign-out", farm.gateway))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let after = http
        .get(format!("{}/api/builds", farm.gateway))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);

    // A build token opens that build's page, and nothing else.
    browser.click("#sign-out").await;
    browser.wait_for("the sign-in form", "#build-token").await;
    browser.fill("#build-id", &id).await;
    browser.fill("#build-token", &build_token).await;
    browser.click("#open-build").await;
    browser
        .wait_text("the build's page", "#build-id", |t| t == id)
        .await;
    browser.goto(&format!("{}/ui/builds", farm.gateway)).await;
    browser
        .wait_text("the build's page again", "#build-id", |t| t == id)
        .await;
    assert_eq!(browser.path().await, format!("/ui/builds/{id}"));
    let listed = browser
        .js_async("const done = arguments[0]; fetch('/api/builds').then(r => done(r.status));")
        .await;
    assert_eq!(listed, json!(401));
    browser.close().await;
}
