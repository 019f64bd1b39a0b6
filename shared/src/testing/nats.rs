//! `TestNats`: a private `nats-server` with JetStream on a free port and a temporary store,
//! killed on `Drop`. Each test gets its own, so streams and subjects never collide.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestNats {
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    store: tempfile::TempDir,
}

/// The server binary: `FREEAGENT_NATS_SERVER` or `nats-server` on PATH or in /usr/sbin.
pub fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("FREEAGENT_NATS_SERVER") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/bin",
    ]) {
        let p = PathBuf::from(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!("tests need nats-server: `apt-get install nats-server`, or set FREEAGENT_NATS_SERVER")
}

impl TestNats {
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = super::free_port().expect("free port");
            let store = tempfile::tempdir().expect("temp dir for JetStream");
            let mut t = TestNats {
                url: format!("nats://127.0.0.1:{port}"),
                port,
                child: None,
                store,
            };
            t.spawn();
            if t.wait_ready().await {
                return t;
            }
        }
        panic!("nats-server did not start");
    }

    fn spawn(&mut self) {
        let child = Command::new(server_binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .expect("connect to test nats")
    }

    /// Stops the server (keeping its store), for tests of NATS outages.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        assert!(self.wait_ready().await, "nats-server did not restart");
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.stop();
    }
}
