//! An in-process farm for the gateway's contract tests: storage (on a temporary directory),
//! scheduler and gateway run in the test's own runtime on port 0, each test with its own
//! database (`TestDb`) and its own nats-server (`TestNats`, operator mode). Nothing is mocked;
//! everything stops when the `Farm` is dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use freeagent_gateway::GatewayConfig;
use freeagent_gateway::config as gw;
use freeagent_scheduler::SchedulerConfig;
use freeagent_shared::ids::ApiKeyId;
pub use freeagent_shared::testing::wait;
use freeagent_shared::testing::{TestDb, TestNats, init_test_log};
use freeagent_storage::StorageConfig;
use reqwest::header::HeaderMap;
use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The bootstrap key: every scope.
pub const API_KEY: &str = "fak_gateway-contract-test-key-0123456789";
/// A key with only the `register_workers` scope, as worker machines hold.
pub const REGISTRATION_KEY: &str = "fak_gateway-contract-registration-only-key";
pub const SECRET: &str = "gateway-contract-signing-secret-0123456789";
/// Long enough for a dispatch to reach a polling worker on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Farm {
    /// `http://127.0.0.1:<port>` of the gateway.
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub nats: TestNats,
    _data: tempfile::TempDir,
    _stop: DropGuard,
}

/// A build as its submitter knows it.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub id: String,
    pub token: String,
    pub reply: Value,
}

/// A worker registered over HTTP.
#[derive(Clone, Debug)]
pub struct Worker {
    pub id: String,
    pub name: String,
    pub token: String,
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Key(String),
    BuildToken(String),
    WorkerToken(String),
    /// A legacy worker: an API key plus `X-Worker-Id`.
    Legacy {
        key: String,
        worker: String,
    },
}

impl Auth {
    pub fn apply(&self, r: RequestBuilder) -> RequestBuilder {
        match self {
            Auth::None => r,
            Auth::Key(k) => r.header("x-api-key", k),
            Auth::BuildToken(t) => r.header("x-build-token", t),
            Auth::WorkerToken(t) => r.header("x-worker-token", t),
            Auth::Legacy { key, worker } => {
                r.header("x-api-key", key).header("x-worker-id", worker)
            }
        }
    }
}

impl Worker {
    pub fn auth(&self) -> Auth {
        Auth::WorkerToken(self.token.clone())
    }
}

/// A reply, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        let cut: String = text.chars().take(400).collect();
        write!(f, "{} {cut}", self.status)
    }
}

pub async fn send(r: RequestBuilder) -> Reply {
    let resp = r.send().await.expect("the gateway answers");
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("a readable body"),
    }
}

impl Farm {
    pub async fn start() -> Farm {
        Self::start_on(TestNats::start().await).await
    }

    /// A farm on `nats` (which a test may have prepared, say with streams an older release made).
    pub async fn start_on(nats: TestNats) -> Farm {
        init_test_log();
        freeagent_shared::tls::install_crypto_provider();
        let db = TestDb::new().await;
        let data = tempfile::tempdir().expect("a data dir");
        let stop = CancellationToken::new();

        let objects = data.path().join("objects");
        std::fs::create_dir_all(&objects).expect("objects dir");
        let storage = freeagent_storage::App::build(StorageConfig::new(
            objects.display().to_string(),
            SECRET,
        ))
        .await
        .expect("storage starts");
        let storage_url = format!("http://127.0.0.1:{}", storage.port());
        tokio::spawn(storage.run_until(stop.clone()));

        let mut sc = SchedulerConfig::for_urls(
            &db.url,
            nats.service_settings(0, "scheduler"),
            &storage_url,
            SECRET,
        );
        sc.database_pool = freeagent_shared::testing::TEST_DATABASE_POOL;
        sc.tick = Duration::from_millis(100);
        sc.retry_backoff = Duration::ZERO;
        let scheduler = freeagent_scheduler::App::build(sc)
            .await
            .expect("scheduler starts");
        tokio::spawn(scheduler.run_until(stop.clone()));

        let gateway = freeagent_gateway::App::build(gateway_config(
            &db.url,
            nats.service_settings(0, "gateway"),
            &storage_url,
            &objects.display().to_string(),
        ))
        .await
        .expect("gateway starts");
        let base = format!("http://127.0.0.1:{}", gateway.port());
        tokio::spawn(gateway.run_until(stop.clone()));

        Farm {
            base,
            key: API_KEY.to_owned(),
            http: reqwest::Client::new(),
            db,
            nats,
            _data: data,
            _stop: stop.drop_guard(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn key(&self) -> Auth {
        Auth::Key(self.key.clone())
    }

    pub fn req(&self, method: Method, path: &str, auth: &Auth) -> RequestBuilder {
        auth.apply(self.http.request(method, self.url(path)))
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> Reply {
        send(self.req(Method::GET, path, auth)).await
    }

    pub async fn post(&self, path: &str, auth: &Auth, body: Value) -> Reply {
        send(self.req(Method::POST, path, auth).json(&body)).await
    }

    pub async fn post_empty(&self, path: &str, auth: &Auth) -> Reply {
        send(self.req(Method::POST, path, auth)).await
    }

    /// Stores another API key with `scopes`; returns the key.
    pub async fn add_key(&self, name: &str, scopes: &[&str]) -> String {
        let key = format!("fak_{}", uuid_like());
        freeagent_shared::db::api_keys::api_key_ensure(
            &self.db.pool,
            ApiKeyId::new(),
            name,
            &freeagent_shared::token::hash(&key),
            scopes,
        )
        .await
        .expect("store a key");
        key
    }

    /// Submits `source` (any bytes) for `platform`; asserts 201.
    pub async fn submit_bytes(&self, platform: &str, source: Vec<u8>, file: &str) -> Submitted {
        let form = Form::new()
            .text("platform", platform.to_owned())
            .part("source", Part::bytes(source).file_name(file.to_owned()));
        let r = send(
            self.req(Method::POST, "/api/builds", &self.key())
                .multipart(form),
        )
        .await;
        assert_eq!(r.status, 201, "submit: {r}");
        let reply = r.json();
        Submitted {
            id: reply["id"].as_str().expect("an id").to_owned(),
            token: reply["access_token"].as_str().expect("a token").to_owned(),
            reply,
        }
    }

    /// Submits a small gzip "project" for `platform`.
    pub async fn submit(&self, platform: &str) -> Submitted {
        self.submit_bytes(
            platform,
            gzip(b"echo hello > $FREEAGENT_OUTPUT_DIR/app"),
            "app.tar.gz",
        )
        .await
    }

    /// Registers a worker with `key`; returns the reply as it came.
    pub async fn register_with(&self, key: &str, body: Value) -> Reply {
        self.post("/api/workers/register", &Auth::Key(key.to_owned()), body)
            .await
    }

    /// Registers a worker for `platforms` with the bootstrap key.
    pub async fn register(&self, name: &str, platforms: &[&str]) -> Worker {
        self.register_as(&self.key.clone(), name, platforms).await
    }

    pub async fn register_as(&self, key: &str, name: &str, platforms: &[&str]) -> Worker {
        let r = self
            .register_with(
                key,
                json!({"name": name, "capabilities": {"platforms": platforms}}),
            )
            .await;
        assert!(r.status < 300, "register: {r}");
        let v = r.json();
        Worker {
            id: v["id"].as_str().expect("worker id").to_owned(),
            name: name.to_owned(),
            token: v["access_token"].as_str().expect("worker token").to_owned(),
        }
    }

    /// One poll; `wait` seconds (none: no `wait` parameter).
    pub async fn poll(&self, auth: &Auth, wait: Option<u32>) -> Reply {
        let path = match wait {
            Some(w) => format!("/api/workers/poll?wait={w}"),
            None => "/api/workers/poll".to_owned(),
        };
        self.get(&path, auth).await
    }

    /// Polls until the worker holds build `id`; returns the job.
    pub async fn claim(&self, auth: &Auth, id: &str) -> Value {
        wait::until(
            &format!("build {id} to reach the worker"),
            PATIENCE,
            || async {
                let r = self.poll(auth, Some(5)).await;
                assert_eq!(r.status, 200, "poll: {r}");
                let v = r.json();
                (v["job"]["id"] == id).then(|| v["job"].clone())
            },
        )
        .await
    }

    /// The result upload, parts in the usual order: `build_id`, `success`, then the file.
    pub async fn upload(&self, auth: &Auth, id: &str, success: bool, bytes: Vec<u8>) -> Reply {
        let form = Form::new()
            .text("build_id", id.to_owned())
            .text("success", success.to_string())
            .part("result", Part::bytes(bytes).file_name("app.apk"));
        self.multipart("/api/workers/result", auth, form).await
    }

    pub async fn multipart(&self, path: &str, auth: &Auth, form: Form) -> Reply {
        send(self.req(Method::POST, path, auth).multipart(form)).await
    }

    /// Submits for android, has `w` claim it and upload `artifact`: a completed build.
    pub async fn completed_build(&self, w: &Worker, artifact: &[u8]) -> Submitted {
        let b = self.submit("android").await;
        self.claim(&w.auth(), &b.id).await;
        let r = self.upload(&w.auth(), &b.id, true, artifact.to_vec()).await;
        assert_eq!(r.status, 200, "upload: {r}");
        self.wait_status(&b.id, "completed").await;
        b
    }

    pub async fn build(&self, id: &str) -> Value {
        let r = self.get(&format!("/api/builds/{id}"), &self.key()).await;
        assert_eq!(r.status, 200, "get build: {r}");
        r.json()
    }

    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        wait::until(&format!("build {id} to be {status}"), PATIENCE, || async {
            let b = self.build(id).await;
            (b["status"] == status).then_some(b)
        })
        .await
    }

    /// Every entry of a build's log (`{seq, timestamp, level, message}`), once one has the
    /// message `line`.
    pub async fn logs_with(&self, id: &str, line: &str) -> Vec<Value> {
        wait::until(&format!("log line {line:?} of {id}"), PATIENCE, || async {
            let r = self
                .get(&format!("/api/builds/{id}/logs"), &self.key())
                .await;
            assert_eq!(r.status, 200, "logs: {r}");
            let v = r.json();
            assert_eq!(v["build_id"], id, "{v}");
            let logs = v["logs"].as_array().cloned().unwrap_or_default();
            logs.iter().any(|l| l["message"] == line).then_some(logs)
        })
        .await
    }
}

fn gateway_config(
    database_url: &str,
    nats: freeagent_shared::nats::NatsSettings,
    storage_endpoint: &str,
    storage_backend: &str,
) -> GatewayConfig {
    GatewayConfig {
        bind: "127.0.0.1".into(),
        port: 0,
        database_url: database_url.into(),
        database_pool: freeagent_shared::testing::TEST_DATABASE_POOL,
        nats,
        storage_endpoint: storage_endpoint.into(),
        storage_backend: storage_backend.into(),
        signing_secret: SECRET.into(),
        signing_previous: None,
        bootstrap_api_key: API_KEY.into(),
        worker_registration_key: Some(REGISTRATION_KEY.into()),
        worker_registration_queues: None,
        worker_registration_max: None,
        worker_approval_required: false,
        source_limit: gw::DEFAULT_SOURCE_LIMIT,
        certs_limit: gw::DEFAULT_CERTS_LIMIT,
        json_limit: gw::DEFAULT_JSON_LIMIT,
        metadata_limit: gw::DEFAULT_METADATA_LIMIT,
        result_limit: gw::DEFAULT_RESULT_LIMIT,
        worker_token_ttl: gw::DEFAULT_WORKER_TOKEN_TTL,
        worker_token_grace: gw::DEFAULT_WORKER_TOKEN_GRACE,
        log_budget: freeagent_shared::log_budget::LogBudget::default(),
        url_ttl: gw::DEFAULT_URL_TTL,
        worker_nats_ttl: gw::DEFAULT_WORKER_NATS_TTL,
        server: Default::default(),
        // Off: the contract tables send hundreds of anonymous requests in a second. The limits
        // are tested end to end (`tests/tests/hostile_clients.rs`).
        rate: gw::RateLimits {
            key: gw::Rate {
                per_second: 0,
                burst: 0,
            },
            ip: gw::Rate {
                per_second: 0,
                burst: 0,
            },
            anonymous: gw::Rate {
                per_second: 0,
                burst: 0,
            },
        },
        request_deadline: gw::DEFAULT_REQUEST_DEADLINE,
        // Exact figures at once: these tests check them right after each change.
        figures_ttl: std::time::Duration::ZERO,
        worker_offline_after: gw::DEFAULT_WORKER_OFFLINE_AFTER,
        max_log_followers: gw::DEFAULT_MAX_LOG_FOLLOWERS,
        log_archive_settle: gw::DEFAULT_LOG_ARCHIVE_SETTLE,
        live_recent: Default::default(),
    }
}

/// A fresh random-looking suffix for keys and names (a new build id's text is unique enough).
pub fn uuid_like() -> String {
    freeagent_shared::ids::BuildId::new()
        .to_string()
        .replace('-', "")
}

/// `bytes`, gzipped: starts with `1f 8b`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// A zip with one file: starts with `PK 03 04`.
pub fn zip(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(name, zip::write::SimpleFileOptions::default())
        .expect("zip entry");
    w.write_all(bytes).expect("zip");
    w.finish().expect("zip").into_inner()
}

/// A build id no build has.
pub fn unknown_build() -> String {
    freeagent_shared::ids::BuildId::new().to_string()
}

/// A worker id no worker has.
pub fn unknown_worker() -> String {
    freeagent_shared::ids::WorkerId::new().to_string()
}
