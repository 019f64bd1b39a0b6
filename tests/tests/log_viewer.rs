//! The dashboard as people debug in it all day (issue 27), in headless Chromium against the real
//! binaries: the log viewer (ANSI colours, a section per attempt, numbered lines and `#L<n>`
//! links, search and filter, time modes, wrapping that keeps the time column, follow that pauses
//! when the reader scrolls up, the raw log); every page at a phone's width with no sideways
//! scroll; and honest states (a session the farm ended says so; a gateway gone shows
//! "disconnected since"). One farm and one browser at a time.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::browser::Browser;
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::{API_KEY, Farm, FarmOpts, bin_dir, pack, project};
use serde_json::{Value, json};
use std::time::Duration;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(90);

/// Submits a project whose build.sh is `script`, with extra form `fields`; returns its id.
async fn submit(farm: &Farm, script: &str, fields: &[(&str, &str)]) -> String {
    submit_as(farm, API_KEY, script, fields).await
}

/// The same with `key`; `fields` may name the platform.
async fn submit_as(farm: &Farm, key: &str, script: &str, fields: &[(&str, &str)]) -> String {
    let mut form = reqwest::multipart::Form::new();
    if !fields.iter().any(|(k, _)| *k == "platform") {
        form = form.text("platform", "android");
    }
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let form = form.part(
        "source",
        reqwest::multipart::Part::bytes(pack(project(script).path())).file_name("source.tar.gz"),
    );
    let resp = farm
        .http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// `GET path` with the bootstrap key, as JSON.
async fn get_json(farm: &Farm, path: &str) -> Value {
    farm.http
        .get(format!("{}{path}", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A new API key (the 201 body, its secret in `key`).
async fn make_key(farm: &Farm, name: &str, scopes: &[&str]) -> Value {
    farm.http
        .post(format!("{}/api/keys", farm.gateway))
        .header("x-api-key", API_KEY)
        .json(&json!({"name": name, "scopes": scopes}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The CLI with the farm's gateway and the bootstrap key, and nothing else of this shell.
fn cli(farm: &Farm, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin_dir().join("freeagent"))
        .args(args)
        .env_clear()
        .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
        .env("FREEAGENT_API_KEY", API_KEY)
        .output()
        .unwrap()
}

/// Waits until the log's follow toggle is `on` (the page sets it as the reader scrolls).
async fn follow_becomes(browser: &Browser, on: bool) {
    wait::until("the follow toggle", Duration::from_secs(5), || async {
        (browser
            .js("return document.getElementById('follow').checked")
            .await
            == json!(on))
        .then_some(())
    })
    .await;
}

/// Builds run on the worker's network (see dashboard.rs: Chromium aborts requests when a
/// build network changes the host's addresses).
fn opts() -> FarmOpts {
    FarmOpts {
        extra_env: vec![
            ("FREEAGENT_BUILD_NETWORK".into(), "host".into()),
            ("FREEAGENT_RETRY_BACKOFF".into(), "100ms".into()),
        ],
        ..Default::default()
    }
}

/// The first attempt fails; the second prints colours, escapes that are not colours, numbered
/// lines, two needles and a long line.
const TWO_ATTEMPTS: &str = r#"if [ "$FREEAGENT_ATTEMPT" = 1 ]; then
  printf '\033[31mred failure\033[0m plain\n'
  echo "first attempt fails"
  exit 3
fi
printf '\033[1;32mgreen bold\033[0m after\n'
echo "said on stderr" >&2
printf 'cursor\033[2Kgone\033]0;a title\007 here\n'
for i in $(seq 1 40); do echo "line $i"; done
echo "needle one"
echo "needle two"
printf 'long %0600d end\n' 0
echo built > "$FREEAGENT_OUTPUT_DIR/app.apk"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reads_as_people_debug_it() {
    let _turn = TURN.lock().await;
    let farm = Farm::start(opts()).await;
    let id = submit(
        &farm,
        TWO_ATTEMPTS,
        &[("retry_on_failure", "true"), ("max_attempts", "2")],
    )
    .await;
    let b = farm.wait_terminal(&id, WAIT).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempt"], 2);
    farm.wait_archived(&id).await;
    // The API names the stream of a stderr line, and of no other.
    let page = get_json(&farm, &format!("/api/builds/{id}/logs?after=0")).await;
    let streams: Vec<(String, Value)> = page["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l.get("stream").is_some())
        .map(|l| {
            (
                l["message"].as_str().unwrap().to_owned(),
                l["stream"].clone(),
            )
        })
        .collect();
    assert_eq!(streams, [("said on stderr".to_owned(), json!("stderr"))]);

    let browser = Browser::start().await;
    browser.sign_in(&farm.gateway, API_KEY).await;
    let page = format!("{}/ui/builds/{id}", farm.gateway);
    browser.goto(&page).await;
    browser
        .wait_text("the whole log", "#log-state", |s| s == "ended")
        .await;
    browser.screenshot("log-viewer").await;

    // One section per attempt, each line in its own.
    let sections = browser
        .js("return [...document.querySelectorAll('#log .attempt')].map(s => s.dataset.attempt)")
        .await;
    assert_eq!(sections, json!(["1", "2"]));
    let in_section = |n: u32, text: &str| {
        format!(
            "return [...document.querySelectorAll('#attempt-{n} .msg')].some(m => m.textContent === {text:?})"
        )
    };
    assert_eq!(
        browser.js(&in_section(1, "first attempt fails")).await,
        json!(true)
    );
    assert_eq!(browser.js(&in_section(2, "needle one")).await, json!(true));

    // ANSI colours as styles, other escapes dropped, never a raw escape on screen.
    assert_eq!(
        browser
            .js("return [...document.querySelectorAll('#log .msg span.ansi-fg-1')].map(s => s.textContent)")
            .await,
        json!(["red failure"])
    );
    assert_eq!(
        browser
            .js("return [...document.querySelectorAll('#log .msg span.ansi-fg-2.ansi-bold')].map(s => s.textContent)")
            .await,
        json!(["green bold"])
    );
    assert_eq!(
        browser.js(&in_section(2, "cursorgone here")).await,
        json!(true)
    );
    assert_eq!(
        browser
            .js("return [...document.querySelectorAll('#log .msg')].filter(m => /\\u001b|\\[3[0-9]m|\\[0m/.test(m.textContent)).length")
            .await,
        json!(0),
        "no raw escape shows"
    );

    // A line of the build's stderr shows as that stream, not as a warning.
    assert_eq!(
        browser
            .js("return [...document.querySelectorAll('#log .line')].filter(l => l.querySelector('.msg').textContent === 'said on stderr').map(l => [l.className, l.querySelector('.lvl').textContent])")
            .await,
        json!([["line lvl-stderr", "stderr"]])
    );

    // Lines numbered 1.. in order, each with its own anchor.
    let numbers = browser
        .js("return [...document.querySelectorAll('#log .line')].map(l => [l.id, l.querySelector('a.n').getAttribute('href'), l.querySelector('a.n').textContent])")
        .await;
    let numbers = numbers.as_array().unwrap();
    assert!(numbers.len() > 45, "{numbers:?}");
    for (i, n) in numbers.iter().enumerate() {
        let k = i + 1;
        assert_eq!(
            n,
            &json!([format!("L{k}"), format!("#L{k}"), k.to_string()])
        );
    }

    // Search marks the matches; "only matching" hides the rest.
    browser.fill("#log-search", "NEEDLE").await;
    browser
        .wait_text("two matches", "#log-matches", |s| s == "2 matches")
        .await;
    browser.click("#log-only").await;
    assert_eq!(
        browser
            .js("return [...document.querySelectorAll('#log .line')].filter(l => !l.hidden).map(l => l.querySelector('.msg').textContent)")
            .await,
        json!(["needle one", "needle two"])
    );
    browser.screenshot("log-viewer-search").await;
    browser.click("#log-only").await;
    browser.fill("#log-search", "").await;

    // Times: local by default; UTC with milliseconds; elapsed since the first line.
    let first_ts = "return document.querySelector('#log .line .ts').textContent";
    browser
        .js("const s = document.getElementById('log-time'); s.value = 'utc'; s.dispatchEvent(new Event('change'));")
        .await;
    let utc = browser.js(first_ts).await;
    let stamp = browser
        .js("return document.querySelector('#log .line .ts').title")
        .await;
    let stamp = chrono::DateTime::parse_from_rfc3339(stamp.as_str().unwrap()).unwrap();
    assert_eq!(
        utc,
        json!(
            stamp
                .with_timezone(&chrono::Utc)
                .format("%H:%M:%S%.3f")
                .to_string()
        )
    );
    browser
        .js("const s = document.getElementById('log-time'); s.value = 'elapsed'; s.dispatchEvent(new Event('change'));")
        .await;
    assert_eq!(browser.js(first_ts).await, json!("+0:00.000"));

    // The long line wraps inside its column; unwrapped, the log scrolls sideways. Either way the
    // time column stays where it is.
    let ts_lefts = "return [...document.querySelectorAll('#log .line .ts')].map(t => Math.round(t.getBoundingClientRect().left - document.getElementById('log').getBoundingClientRect().left + document.getElementById('log').scrollLeft))";
    let long =
        "[...document.querySelectorAll('#log .msg')].find(m => m.textContent.startsWith('long '))";
    let wrapped = browser
        .js(&format!("const m = {long}; return m.getClientRects().length > 1 || m.getBoundingClientRect().height > 2 * parseFloat(getComputedStyle(m).lineHeight || '16')"))
        .await;
    assert_eq!(wrapped, json!(true), "the long line wraps");
    let lefts = browser.js(ts_lefts).await;
    let lefts = lefts.as_array().unwrap();
    assert!(lefts.windows(2).all(|w| w[0] == w[1]), "{lefts:?}");
    browser.click("#log-wrap").await;
    assert_eq!(
        browser
            .js("const l = document.getElementById('log'); return [l.classList.contains('nowrap'), l.scrollWidth > l.clientWidth]")
            .await,
        json!([true, true])
    );
    let unwrapped = browser.js(ts_lefts).await;
    assert_eq!(unwrapped.as_array().unwrap(), lefts);
    browser.click("#log-wrap").await;

    // The raw log: the text log, downloadable with the session.
    let raw = browser
        .js_async(
            "const done = arguments[0]; const a = document.getElementById('log-raw'); \
             fetch(a.href).then(r => r.text().then(t => done([a.getAttribute('href'), r.status, t.includes('needle one')])))",
        )
        .await;
    assert_eq!(
        raw,
        json!([format!("/api/builds/{id}/download/logs"), 200, true])
    );

    // A link to a line opens the page at it, highlighted, with follow off.
    browser.goto(&format!("{page}#L5")).await;
    browser
        .wait_text("the log", "#log-state", |s| s == "ended")
        .await;
    browser.wait_for("line 5 highlighted", "#L5.target").await;
    assert_eq!(
        browser
            .js("return document.getElementById('follow').checked")
            .await,
        json!(false)
    );
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#log .line.target').length")
            .await,
        json!(1)
    );

    // Follow pauses when the reader scrolls up, and resumes at the bottom.
    let slow = submit(
        &farm,
        "for i in $(seq 1 150); do echo \"tick $i\"; sleep 0.1; done\n\
         echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
        &[],
    )
    .await;
    browser
        .goto(&format!("{}/ui/builds/{slow}", farm.gateway))
        .await;
    let count = "return document.querySelectorAll('#log .line').length";
    wait::until("the log to overflow its box", WAIT, || async {
        let n = browser.js(count).await.as_u64().unwrap();
        let over = browser
            .js("const l = document.getElementById('log'); return l.scrollHeight > l.clientHeight + 100")
            .await;
        (n > 0 && over == json!(true)).then_some(())
    })
    .await;
    assert_eq!(
        browser
            .js("const l = document.getElementById('log'); return [document.getElementById('follow').checked, l.scrollHeight - l.scrollTop - l.clientHeight < 8]")
            .await,
        json!([true, true]),
        "following keeps the newest line in view"
    );
    browser
        .js("document.getElementById('log').scrollTop = 0")
        .await;
    follow_becomes(&browser, false).await;
    let before = browser.js(count).await.as_u64().unwrap();
    wait::until("more lines", WAIT, || async {
        (browser.js(count).await.as_u64().unwrap() > before + 10).then_some(())
    })
    .await;
    assert_eq!(
        browser
            .js("return document.getElementById('log').scrollTop")
            .await,
        json!(0),
        "new lines do not pull a reader who scrolled up"
    );
    browser
        .js("const l = document.getElementById('log'); l.scrollTop = l.scrollHeight")
        .await;
    follow_becomes(&browser, true).await;

    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_a_phone_and_tables_become_cards() {
    let _turn = TURN.lock().await;
    let farm = Farm::start(opts()).await;
    let id = submit(
        &farm,
        "echo \"a rather long line of build output that would push a narrow page sideways if it could\"\n\
         echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
        &[("metadata", r#"{"branch":"feature/a-branch-with-a-long-name-for-a-phone"}"#)],
    )
    .await;
    farm.wait_terminal(&id, WAIT).await;
    let browser = Browser::start().await;
    browser.resize(390, 844).await;
    let width = browser.js("return window.innerWidth").await;
    assert!(width.as_u64().unwrap() <= 420, "a phone's width: {width}");
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth";

    browser.goto(&format!("{}/ui/sign-in", farm.gateway)).await;
    browser.wait_for("the sign-in form", "#key-form").await;
    assert_eq!(browser.js(fits).await, json!(true), "sign-in");
    browser.sign_in(&farm.gateway, API_KEY).await;
    for (name, path, ready) in [
        ("overview", "/ui/".to_owned(), "#window-hour"),
        (
            "builds",
            "/ui/builds".to_owned(),
            "#builds-body tr[data-build-id]",
        ),
        ("build", format!("/ui/builds/{id}"), "#log .line"),
        ("workers", "/ui/workers".to_owned(), "#workers tbody tr"),
        ("not-found", "/ui/nothing-here".to_owned(), "main .error"),
    ] {
        browser.goto(&format!("{}{path}", farm.gateway)).await;
        browser.wait_for(name, ready).await;
        // Rows drawn after the first paint (the log, live updates) count too.
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser.screenshot(&format!("phone-{name}")).await;
        let (page, view) = (
            browser
                .js("return document.documentElement.scrollWidth")
                .await,
            browser.js("return window.innerWidth").await,
        );
        assert_eq!(
            browser.js(fits).await,
            json!(true),
            "{name} scrolls sideways at a phone's width: {page} > {view}"
        );
    }

    // The overview's charts have their axes' ends and a legend.
    browser.goto(&format!("{}/ui/", farm.gateway)).await;
    browser
        .wait_for("a bar of the hour", "#window-hour svg rect.c-completed")
        .await;
    assert_eq!(
        browser
            .js("const f = document.querySelector('#window-hour figure'); return [[...f.querySelectorAll('.legend-item')].map(l => l.textContent), [...f.querySelectorAll('.x-axis span')].map(s => s.textContent), f.querySelectorAll('.y-axis span').length]")
            .await,
        json!([["completed", "failed", "cancelled"], ["60 min ago", "now"], 2])
    );

    // The builds table is cards: no header row, each cell named by its column.
    browser.goto(&format!("{}/ui/builds", farm.gateway)).await;
    browser
        .wait_for("the build's row", "#builds-body tr[data-build-id]")
        .await;
    assert_eq!(
        browser
            .js("return getComputedStyle(document.querySelector('#builds thead')).display")
            .await,
        json!("none")
    );
    let labels = browser
        .js("return [...document.querySelectorAll('#builds-body tr[data-build-id] td')].map(td => td.dataset.label || '')")
        .await;
    let heads = browser
        .js("return [...document.querySelectorAll('#builds thead th')].map(th => th.textContent.trim())")
        .await;
    assert_eq!(labels, heads, "each cell carries its column's name");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_farm_ended_and_a_gateway_gone_are_said_plainly() {
    let _turn = TURN.lock().await;
    let mut farm = Farm::start(opts()).await;
    // A key of its own, revoked while its session is open.
    let made = make_key(&farm, "reader", &["read"]).await;
    let browser = Browser::start().await;
    browser
        .sign_in(&farm.gateway, made["key"].as_str().unwrap())
        .await;
    browser.goto(&format!("{}/ui/builds", farm.gateway)).await;
    browser.wait_for("the builds page", "#builds-body").await;
    let revoked = farm
        .http
        .delete(format!(
            "{}/api/keys/{}",
            farm.gateway,
            made["id"].as_str().unwrap()
        ))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    browser.goto(&format!("{}/ui/builds", farm.gateway)).await;
    let said = browser
        .wait_text("the sign-in page to say why", "#sign-in-error", |s| {
            !s.is_empty()
        })
        .await;
    assert!(said.contains("session ended"), "{said}");
    assert!(browser.path().await.starts_with("/ui/sign-in"));
    browser.screenshot("session-ended").await;

    // Never signed in (no cookie): the sign-in page, with nothing to explain.
    let fresh = Browser::start().await;
    fresh.goto(&format!("{}/ui/builds", farm.gateway)).await;
    fresh.wait_for("the sign-in form", "#key-form").await;
    assert_eq!(fresh.text("#sign-in-error").await.unwrap_or_default(), "");
    fresh.close().await;

    // The gateway goes away under a live page: the header says since when it is disconnected.
    browser.sign_in(&farm.gateway, API_KEY).await;
    browser.goto(&format!("{}/ui/builds", farm.gateway)).await;
    browser
        .wait_text("the page to be live", "#live-state", |s| s == "live")
        .await;
    // A hung gateway (SIGSTOP): the connection stays open, nothing comes, not even the
    // keep-alive; the header stops saying "live" and says since when it heard nothing.
    let gateway = nix::unistd::Pid::from_raw(farm.pid("gateway").unwrap() as i32);
    nix::sys::signal::kill(gateway, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stalled = browser
        .wait_text("the header to see the stall", "#live-state", |s| {
            s.starts_with("disconnected since")
        })
        .await;
    browser.screenshot("stalled").await;
    nix::sys::signal::kill(gateway, nix::sys::signal::Signal::SIGCONT).unwrap();
    browser
        .wait_text("the page to be live after the stall", "#live-state", |s| {
            s == "live"
        })
        .await;
    assert!(stalled.contains("polling"), "{stalled}");
    farm.kill("gateway");
    let state = browser
        .wait_text("the header to say disconnected", "#live-state", |s| {
            s.starts_with("disconnected since")
        })
        .await;
    browser.screenshot("disconnected").await;
    assert!(state.contains("polling"), "{state}");
    farm.restart("gateway");
    browser
        .wait_text("the page to be live again", "#live-state", |s| s == "live")
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_are_told_apart_and_a_waiting_build_says_why() {
    let _turn = TURN.lock().await;
    let farm = Farm::start(opts()).await;
    let made = make_key(&farm, "ci-bot", &["submit", "read"]).await;
    let bot = made["key"].as_str().unwrap();
    let ok = "echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n";
    let nightly = submit_as(
        &farm,
        bot,
        ok,
        &[(
            "metadata",
            r#"{"name":"nightly","branch":"main","commit":"0123456789abcdef0123"}"#,
        )],
    )
    .await;
    let feature = submit_as(
        &farm,
        API_KEY,
        ok,
        &[(
            "metadata",
            r#"{"git_branch":"feature/x","git_commit":"fedcba9876543210"}"#,
        )],
    )
    .await;
    // No worker serves its queue: it waits, and says why.
    let waiting = submit_as(&farm, bot, ok, &[("queue", "nobody")]).await;
    farm.wait_terminal(&nightly, WAIT).await;
    farm.wait_terminal(&feature, WAIT).await;

    // The API names them.
    let list = get_json(&farm, "/api/builds").await;
    let of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap()
            .clone()
    };
    let n = of(&nightly);
    assert_eq!(
        [
            &n["name"],
            &n["branch"],
            &n["commit"],
            &n["submitted_by_name"]
        ],
        [
            &json!("nightly"),
            &json!("main"),
            &json!("0123456789abcdef0123"),
            &json!("ci-bot")
        ]
    );
    let f = of(&feature);
    assert_eq!(
        [
            &f["name"],
            &f["branch"],
            &f["commit"],
            &f["submitted_by_name"]
        ],
        [
            &Value::Null,
            &json!("feature/x"),
            &json!("fedcba9876543210"),
            &json!("bootstrap")
        ]
    );

    // So does the CLI's list.
    let out = cli(&farm, &["list"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    // --mine: the builds of the key that asks, and no other's.
    let mine = std::process::Command::new(bin_dir().join("freeagent"))
        .args(["list", "--mine", "--json"])
        .env_clear()
        .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
        .env("FREEAGENT_API_KEY", bot)
        .output()
        .unwrap();
    let mine: Value = serde_json::from_slice(&mine.stdout).unwrap();
    let mine: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(mine, [waiting.as_str(), nightly.as_str()], "newest first");
    let line = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line(&nightly).contains("ci-bot"), "{table}");
    assert!(
        line(&nightly).ends_with("nightly  main@0123456789"),
        "{table}"
    );
    assert!(line(&feature).ends_with("feature/x@fedcba9876"), "{table}");

    // And the dashboard: the list, the summary above it, the build's page.
    let browser = Browser::start().await;
    browser.sign_in(&farm.gateway, API_KEY).await;
    browser.goto(&format!("{}/ui/builds", farm.gateway)).await;
    let what = browser
        .wait_text(
            "the nightly build's label",
            &format!("tr[data-build-id=\"{nightly}\"] td div.what"),
            |s| !s.is_empty(),
        )
        .await;
    assert!(what.contains("nightly"), "{what}");
    assert!(what.contains("main@0123456789"), "{what}");
    assert!(what.contains("by ci-bot"), "{what}");
    // Counts up to 2 s old (FREEAGENT_FIGURES_TTL), redrawn as the page refreshes.
    let summary = browser
        .wait_text("the summary", "#summary", |s| s.contains("1 waiting"))
        .await;
    assert!(summary.contains("1 worker online"), "{summary}");
    browser.screenshot("builds-told-apart").await;

    browser
        .goto(&format!("{}/ui/builds/{waiting}", farm.gateway))
        .await;
    browser.wait_for("the facts", "#facts dd").await;
    let facts = browser.text("#facts").await.unwrap();
    assert!(
        facts.contains("no live worker serves queue nobody"),
        "{facts}"
    );
    assert!(facts.contains("position 1"), "{facts}");
    assert!(facts.contains("ci-bot"), "{facts}");
    // A build behind a busy slot: why, and a guess at when it starts (from the queue's recent
    // runs), in the API and the CLI.
    let blocker = submit(&farm, "exec sleep 600\n", &[]).await;
    wait::until("the blocker to run", WAIT, || async {
        (farm.get_build(&blocker).await["status"] == "building").then_some(())
    })
    .await;
    let queued = submit(&farm, ok, &[]).await;
    let b = farm.get_build(&queued).await;
    assert_eq!(
        b["waiting"]["reason"], "1 of 1 worker slots of queue android busy",
        "{b}"
    );
    assert!(b["waiting"]["eta_secs"].as_i64().unwrap() >= 1, "{b}");
    // The list says it of every pending build on the page.
    let list = get_json(&farm, "/api/builds").await;
    let of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap()["waiting"]
            .clone()
    };
    assert_eq!(
        of(&queued)["reason"],
        "1 of 1 worker slots of queue android busy"
    );
    assert_eq!(of(&queued)["position"], 1);
    assert_eq!(of(&waiting)["reason"], "no live worker serves queue nobody");
    assert_eq!(of(&nightly), Value::Null, "only pending builds wait");
    let out = cli(&farm, &["status", &queued]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("starts in: about "), "{said}");
    // `watch` says it too when the build is pending (then gives up at its timeout: 124).
    let out = cli(&farm, &["watch", &queued, "--timeout", "3s"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{said}");
    assert!(
        said.contains(&format!(
            "build {queued}: waiting: 1 of 1 worker slots of queue android busy (position 1); starts in about "
        )),
        "{said}"
    );
    browser
        .goto(&format!("{}/ui/builds/{queued}", farm.gateway))
        .await;
    let facts = browser
        .wait_text("the wait's guess", "#facts", |s| {
            s.contains("starts in about")
        })
        .await;
    assert!(facts.contains("position 1"), "{facts}");
    browser.goto(&format!("{}/ui/builds", farm.gateway)).await;
    let note = browser
        .wait_text(
            "the list's note of the wait",
            &format!("tr[data-build-id=\"{queued}\"] .waiting"),
            |s| !s.is_empty(),
        )
        .await;
    assert!(
        note.starts_with("#1 · 1 of 1 worker slots of queue android busy · starts in about"),
        "{note}"
    );
    browser.close().await;
}
