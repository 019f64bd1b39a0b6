//! A real browser for the dashboard's tests: Debian's headless Chromium driven over WebDriver
//! (`chromedriver` on a free port, `fantoccini` as the client). Waits poll the page's DOM with
//! generous deadlines (a loaded two-core CI machine is slow), never a fixed sleep. The browser's
//! console is kept (`goog:loggingPrefs`) so a test can check what scripts did.

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use freeagent_shared::testing::{free_port, wait};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page may take to show what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub struct Browser {
    pub client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
    /// Where screenshots go: `<target>/dashboard-screenshots`.
    pub shots: PathBuf,
}

/// chromedriver, killed when dropped: also when `Browser::start` fails half-way.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `POST /session/{id}/se/log {"type": "browser"}`: the console messages since the last call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        for p in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(p).exists(),
                "{p} is missing: `apt-get install chromium chromium-driver` (.ci/run does)"
            );
        }
        let port = free_port().expect("a free port");
        freeagent_shared::tls::install_crypto_provider();
        let driver = Driver(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait::until("chromedriver to answer", Duration::from_secs(30), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(format!("{url}/status"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        let profile = tempfile::tempdir().expect("browser profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        let shots = crate::bin_dir()
            .parent()
            .expect("target dir")
            .join("dashboard-screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Browser {
            client,
            _driver: driver,
            _profile: profile,
            shots,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Chromium aborts the requests in flight whenever the host's addresses change
    /// (net::ERR_NETWORK_CHANGED), and a farm whose builds have networks of their own adds and
    /// removes addresses with every build (a veth each; other suites on the machine too). A page
    /// whose file was aborted that way says "The dashboard could not load …" (boot.js): it is
    /// loaded again, as a person would reload. Only that error is; any other failure is left for
    /// the wait to report. Returns whether it reloaded.
    async fn reload_if_aborted_by_a_network_change(&self) -> bool {
        let failed = self
            .text("main p.error")
            .await
            .is_some_and(|t| t.starts_with("The dashboard could not load"));
        if !failed {
            return false;
        }
        let console = self.console().await;
        if !console
            .iter()
            .any(|(_, m)| m.contains("ERR_NETWORK_CHANGED"))
        {
            return false;
        }
        eprintln!(
            "a file of the page was aborted by a change of the host's addresses (net::ERR_NETWORK_CHANGED); loading the page again"
        );
        self.client.refresh().await.expect("reload");
        true
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let e = self.client.find(Locator::Css(css)).await.ok()?;
        e.text().await.ok()
    }

    /// The texts of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = vec![];
        for e in self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
        {
            if let Ok(t) = e.text().await {
                out.push(t);
            }
        }
        out
    }

    /// Waits until the first element matching `css` has text for which `ok` holds; returns it.
    /// On timeout it saves a screenshot (`failed-….png`) and says what the page showed.
    pub async fn wait_text(&self, what: &str, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let text = self.text(css).await;
            if let Some(t) = text.as_ref().filter(|t| ok(t)) {
                return t.clone();
            }
            if self.reload_if_aborted_by_a_network_change().await {
                continue;
            }
            if std::time::Instant::now() > deadline {
                let name: String = what
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                let shot = self.screenshot(&format!("failed-{name}")).await;
                let page = self.text("main").await.unwrap_or_default();
                panic!(
                    "timed out after {PATIENCE:?} waiting for {what}: {css} shows {text:?}; \
                     the page ({}) shows:\n{page}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an element matching `css` exists.
    /// Waits for an element; on timeout the panic says where the browser was and what it
    /// showed (a page that never came reads differently from a browser that stopped answering).
    pub async fn wait_for(&self, what: &str, css: &str) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let last_error = match self.client.find(Locator::Css(css)).await {
                Ok(_) => return,
                Err(e) => e.to_string(),
            };
            if self.reload_if_aborted_by_a_network_change().await {
                continue;
            }
            if std::time::Instant::now() > deadline {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let source = self.client.source().await.map(|s| {
                    let end = s.char_indices().nth(2000).map_or(s.len(), |(i, _)| i);
                    s[..end].to_owned()
                });
                // What the page fetched and how each answered: a page stuck at its "Loading…"
                // shell (soak) means one of its modules did not load or run.
                let fetched = self
                    .client
                    .execute(
                        "return 'readyState ' + document.readyState + '\\n' + \
                         performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')) \
                         .map(e => e.name + ' status ' + e.responseStatus + ' ' + Math.round(e.duration) + ' ms') \
                         .join('\\n')",
                        vec![],
                    )
                    .await;
                // The console says why a file failed (`net::ERR_…`).
                let console = self.client.issue_cmd(BrowserLog).await;
                panic!(
                    "timed out after {PATIENCE:?} waiting for {what} ({css}); last error: {last_error}; url: {url:?}; page: {source:?}; fetched: {fetched:?}; console: {console:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Clicks the element `css` names. A live page re-renders its rows (the workers page every
    /// few seconds): an element found just before a re-render is gone by the click ("stale
    /// element reference", soak), and the element the test means is the one now in the page,
    /// so it is found again.
    pub async fn click(&self, css: &str) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            self.wait_for(&format!("{css} to click"), css).await;
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(_) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        || e.error == fantoccini::error::ErrorStatus::NoSuchElement =>
                {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{css} was replaced before every click for {PATIENCE:?}"
                    );
                }
                Err(e) => panic!("click {css}: {e:?}"),
            }
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        self.wait_for(&format!("{css} to fill"), css).await;
        let e = self.client.find(Locator::Css(css)).await.expect("input");
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    /// Sets the window's size in CSS pixels (a phone's 390 px, say).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize the window");
    }

    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    /// Runs an async script (`arguments[0]` is the callback) and returns what it passed.
    pub async fn js_async(&self, script: &str) -> Value {
        self.client
            .execute_async(script, vec![])
            .await
            .expect("async script")
    }

    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.expect("url");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        }
    }

    /// Console messages since the last call: `(level, message)`.
    pub async fn console(&self) -> Vec<(String, String)> {
        let v = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("browser log");
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or_default().to_owned(),
                    e["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Saves a screenshot as `<target>/dashboard-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Signs in with an API key through the sign-in page.
    pub async fn sign_in(&self, base: &str, key: &str) {
        self.goto(&format!("{base}/ui/sign-in")).await;
        self.fill("#api-key", key).await;
        self.click("#sign-in").await;
        self.wait_for("the signed-in header", "#sign-out:not([hidden])")
            .await;
    }

    /// Ends the browser session; dropping the `Browser` stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// The driver goes, and the Chromium it started with it: a test that failed before `close`
    /// left its browser running (found after failed runs). Chromium's processes are found by
    /// the profile directory this session alone uses.
    fn drop(&mut self) {
        let arg = format!("--user-data-dir={}", self._profile.path().display());
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}
