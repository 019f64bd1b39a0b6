//! `TestS3`: a private S3-compatible server (moto's `moto_server`) on a free port with a fresh
//! bucket, killed on `Drop`. Storage tests run against it as well as against local disk.
//! `.ci/run` installs it (`pip install 'moto[server]'`); `FREEAGENT_S3_SERVER` overrides the path.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestS3 {
    pub endpoint: String,
    pub bucket: String,
    child: Child,
}

pub fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("FREEAGENT_S3_SERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(str::to_owned)
        .chain([format!("{home}/.local/bin"), "/usr/local/bin".into()])
    {
        let p = PathBuf::from(dir).join("moto_server");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "storage tests need an S3-compatible server: `pip install 'moto[server]'` (bash .ci/run does), or set FREEAGENT_S3_SERVER"
    )
}

impl TestS3 {
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = super::free_port().expect("free port");
            let child = Command::new(server_binary())
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn moto_server");
            let mut s = TestS3 {
                endpoint: format!("http://127.0.0.1:{port}"),
                bucket: format!("fa-{}", uuid::Uuid::new_v4().simple()),
                child,
            };
            if s.wait_ready(port).await {
                s.create_bucket(port);
                return s;
            }
        }
        panic!("moto_server did not start");
    }

    async fn wait_ready(&mut self, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// moto accepts unsigned requests: a bare HTTP PUT makes the bucket.
    fn create_bucket(&self, port: u16) {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect moto");
        let req = format!(
            "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.bucket
        );
        tcp.write_all(req.as_bytes()).expect("create bucket");
        let mut resp = String::new();
        let _ = tcp.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Backend options that aim object_store at this server.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The same settings as environment variables, for a spawned storage binary.
    pub fn env(&self) -> Vec<(String, String)> {
        self.options()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect()
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
