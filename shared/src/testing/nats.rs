//! `TestNats`: a private `nats-server` with JetStream on a free port and a temporary store,
//! killed on `Drop`. Each test gets its own, so streams and subjects never collide. It runs in
//! operator mode with the configuration `freeagent nats-config` generates (per farm an account
//! and one for its workers), so every test runs with authentication on. `start_cluster` runs
//! several such servers as one cluster (`freeagent nats-config --cluster`), each a node a test
//! may kill and start again.

use crate::nats::NatsSettings;
use crate::nats_auth::cluster::ClusterNode;
use crate::nats_auth::setup::{FarmFiles, Generated};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Clones share one server, stopped when the last clone is dropped (two farms on one server).
#[derive(Clone)]
pub struct TestNats {
    /// Every node's URL, comma-separated (as `FREEAGENT_NATS_URL` takes them).
    pub url: String,
    /// The (first) node's client port.
    pub port: u16,
    /// The (first) node's monitoring port (`/jsz`), for the state dumped when a test fails.
    pub monitor_port: u16,
    /// The credentials of each farm (account) on this server; `farms[0]` is the default farm.
    pub farms: Vec<FarmFiles>,
    server: std::sync::Arc<Server>,
}

struct Server {
    nodes: Vec<Node>,
    /// The nodes' configuration, stores and logs: removed with the last clone.
    _store: tempfile::TempDir,
}

/// Where a node of a test cluster runs: on loopback (the default), or on a host of its own, a
/// network namespace the test made, at its address there.
#[derive(Debug, Clone)]
pub struct NodePlace {
    pub host: String,
    pub netns: Option<String>,
}

impl Default for NodePlace {
    fn default() -> Self {
        NodePlace {
            host: "127.0.0.1".into(),
            netns: None,
        }
    }
}

/// One `nats-server` process: the only one, or a node of a cluster.
struct Node {
    config: PathBuf,
    /// The address it listens on (loopback, or its own host's: `NodePlace`).
    host: String,
    /// The network namespace it runs in, if on a host of its own.
    netns: Option<String>,
    port: u16,
    monitor_port: u16,
    log: PathBuf,
    child: std::sync::Mutex<Option<Child>>,
}

impl Node {
    fn new(config: PathBuf, port: u16, monitor_port: u16, log: PathBuf) -> Self {
        Self {
            config,
            host: "127.0.0.1".into(),
            netns: None,
            port,
            monitor_port,
            log,
            child: std::sync::Mutex::new(None),
        }
    }

    /// Appends the monitoring port and log file to the node's configuration.
    fn finish_config(&self) {
        let mut text = std::fs::read_to_string(&self.config).expect("server configuration");
        text.push_str(&format!(
            "\nhttp: \"{}:{}\"\nlog_file: \"{}\"\n",
            self.host,
            self.monitor_port,
            self.log.display()
        ));
        // A benchmark's profile of the server: `go tool pprof http://127.0.0.1:<port>/debug/pprof/profile`.
        if let Ok(port) = std::env::var("FREEAGENT_TEST_NATS_PROF_PORT") {
            text.push_str(&format!("prof_port: {port}\n"));
        }
        std::fs::write(&self.config, text).expect("server configuration");
    }

    fn spawn(&self) {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(server_binary());
                c
            }
            None => Command::new(server_binary()),
        };
        let child = command
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
    }

    fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Child::id)
    }

    async fn wait_ready(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self
                .child
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            if tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// The server binary: `FREEAGENT_NATS_SERVER` or `nats-server` on PATH or in /usr/sbin.
pub fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("FREEAGENT_NATS_SERVER") {
        return PathBuf::from(p);
    }
    crate::nats_auth::setup::find_server_binary().unwrap_or_else(|| {
        panic!(
            "tests need nats-server: `apt-get install nats-server`, or set FREEAGENT_NATS_SERVER"
        )
    })
}

impl TestNats {
    /// One farm.
    pub async fn start() -> Self {
        Self::start_farms(1).await
    }

    /// `n` farms, each its own account, on one server.
    pub async fn start_farms(n: usize) -> Self {
        Self::start_with(n, None).await
    }

    /// One farm set up as releases before ADR-0016 did: workers in the farm's own account.
    pub async fn start_without_workers_account() -> Self {
        Self::start_set_up(1, None, false).await
    }

    /// `n` farms; `tls` is a `tls { … }` block for the server configuration, and makes the URL
    /// `tls://`.
    pub async fn start_with(n: usize, tls: Option<String>) -> Self {
        Self::start_set_up(n, tls, true).await
    }

    /// `n` farms, each with its workers' account or (`workers_accounts` false) without.
    async fn start_set_up(n: usize, tls: Option<String>, workers_accounts: bool) -> Self {
        for _ in 0..5 {
            let port = super::free_port().expect("free port");
            let monitor_port = super::free_port().expect("free port");
            let store = tempfile::tempdir().expect("temp dir for JetStream");
            let names: Vec<String> = (0..n).map(|i| format!("farm{i}")).collect();
            let set_up = if workers_accounts {
                Generated::new(&names)
            } else {
                Generated::without_workers_accounts(&names)
            };
            let farms = set_up
                .write(
                    &store.path().join("auth"),
                    &format!("127.0.0.1:{port}"),
                    &store.path().join("js"),
                )
                .expect("write the NATS auth set-up");
            let node = Node::new(
                store.path().join("auth").join("server.conf"),
                port,
                monitor_port,
                store.path().join("nats-server.log"),
            );
            node.finish_config();
            let scheme = match &tls {
                Some(block) => {
                    let mut text = std::fs::read_to_string(&node.config).expect("server.conf");
                    text.push_str(block);
                    std::fs::write(&node.config, text).expect("server.conf");
                    "tls"
                }
                None => "nats",
            };
            let t = TestNats {
                url: format!("{scheme}://127.0.0.1:{port}"),
                port,
                monitor_port,
                farms,
                server: std::sync::Arc::new(Server {
                    nodes: vec![node],
                    _store: store,
                }),
            };
            t.spawn();
            if t.wait_ready().await {
                return t;
            }
        }
        panic!("nats-server did not start");
    }

    /// One farm on a cluster of `nodes` servers, each with its own store, the routes between
    /// them authenticated as `freeagent nats-config --cluster` writes them. Returns once
    /// JetStream has elected its meta leader.
    pub async fn start_cluster(nodes: usize) -> Self {
        Self::start_cluster_placed(&vec![NodePlace::default(); nodes]).await
    }

    /// The same, each node where `places` says: on loopback, or on a host of its own (a
    /// network namespace with its own address), where it listens on the standard ports.
    pub async fn start_cluster_placed(places: &[NodePlace]) -> Self {
        let store = tempfile::tempdir().expect("temp dir for JetStream");
        let port = || super::free_port().expect("free port");
        let layout: Vec<(ClusterNode, u16, u16)> = places
            .iter()
            .enumerate()
            .map(|(i, place)| {
                let (client, route, monitor) = match place.netns {
                    Some(_) => (4222, 6222, 8222),
                    None => (port(), port(), port()),
                };
                let host = &place.host;
                let node = ClusterNode {
                    name: format!("n{}", i + 1),
                    listen: format!("{host}:{client}"),
                    cluster_listen: format!("{host}:{route}"),
                    route_address: format!("{host}:{route}"),
                    store_dir: store.path().join(format!("js-n{}", i + 1)),
                };
                (node, client, monitor)
            })
            .collect();
        let cluster: Vec<ClusterNode> = layout.iter().map(|(n, _, _)| n.clone()).collect();
        let auth = store.path().join("auth");
        let farms = Generated::new(&["farm0"])
            .write_cluster(&auth, &cluster)
            .expect("write the NATS cluster set-up");
        let nodes: Vec<Node> = layout
            .iter()
            .zip(places)
            .map(|((n, client, monitor), place)| {
                let mut node = Node::new(
                    n.config_path(&auth),
                    *client,
                    *monitor,
                    store.path().join(format!("nats-server-{}.log", n.name)),
                );
                node.host = place.host.clone();
                node.netns = place.netns.clone();
                node.finish_config();
                node
            })
            .collect();
        let urls: Vec<String> = nodes
            .iter()
            .map(|n| format!("nats://{}:{}", n.host, n.port))
            .collect();
        let t = TestNats {
            url: urls.join(","),
            port: nodes[0].port,
            monitor_port: nodes[0].monitor_port,
            farms,
            server: std::sync::Arc::new(Server {
                nodes,
                _store: store,
            }),
        };
        t.spawn();
        assert!(t.wait_ready().await, "the NATS cluster did not start");
        t.wait_for_jetstream(Duration::from_secs(30)).await;
        t
    }

    /// Waits until JetStream answers the default farm (a cluster has its meta leader).
    pub async fn wait_for_jetstream(&self, within: Duration) {
        let client = self.client().await;
        let deadline = Instant::now() + within;
        loop {
            // The raw API, so the answer is shown as the server gave it when it never comes.
            let answer = match client.request("$JS.API.INFO", "".into()).await {
                Ok(m) => String::from_utf8_lossy(&m.payload).into_owned(),
                Err(e) => e.to_string(),
            };
            if answer.contains("account_info_response") && !answer.contains("\"error\"") {
                return;
            }
            if Instant::now() > deadline {
                panic!("JetStream did not answer within {within:?}: {answer}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The URL of every node.
    pub fn servers(&self) -> Vec<&str> {
        self.url.split(',').collect()
    }

    /// How many servers this is.
    pub fn nodes(&self) -> usize {
        self.server.nodes.len()
    }

    /// SIGKILLs node `i`, keeping its store.
    pub fn kill_node(&self, i: usize) {
        self.server.nodes[i].stop();
    }

    /// Starts node `i` again on its port and store.
    pub async fn start_node(&self, i: usize) {
        let node = &self.server.nodes[i];
        node.spawn();
        assert!(node.wait_ready().await, "nats node {i} did not restart");
    }

    /// Node `i`'s process id (SIGSTOP cuts it off from the others and its clients).
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.server.nodes[i].pid()
    }

    /// Node `i`'s own log.
    pub fn node_log(&self, i: usize) -> PathBuf {
        self.server.nodes[i].log.clone()
    }

    fn spawn(&self) {
        for node in &self.server.nodes {
            node.spawn();
        }
    }

    async fn wait_ready(&self) -> bool {
        for node in &self.server.nodes {
            if !node.wait_ready().await {
                return false;
            }
        }
        true
    }

    /// Settings for farm `i` as `creds` (its scheduler's or gateway's file).
    pub fn settings_with(&self, creds: &std::path::Path) -> NatsSettings {
        NatsSettings {
            creds: Some(creds.to_owned()),
            ..NatsSettings::url(self.url.clone())
        }
    }

    /// The default farm's scheduler credentials (the whole account).
    pub fn settings(&self) -> NatsSettings {
        self.settings_with(&self.farms[0].scheduler_creds)
    }

    /// Everything `service` ("scheduler" or "gateway") of farm `farm` is configured with.
    pub fn service_settings(&self, farm: usize, service: &str) -> NatsSettings {
        let f = &self.farms[farm];
        let mut s = NatsSettings::url(self.url.clone());
        if service == "gateway" {
            s.creds = Some(f.gateway_creds.clone());
        } else {
            s.creds = Some(f.scheduler_creds.clone());
            s.operator_key = Some(f.operator_key.clone());
            s.system_creds = Some(f.system_creds.clone());
        }
        s.signing_key = Some(f.signing_key.clone());
        s.workers_signing_key = f.workers_key.clone();
        s
    }

    /// A client with the whole account of the default farm (the scheduler's identity).
    pub async fn client(&self) -> async_nats::Client {
        self.client_of(0).await
    }

    /// A client with the whole account of farm `farm`. Its replies come to a service's inbox,
    /// so the scheduler answers the worker operations it sends as any worker.
    pub async fn client_of(&self, farm: usize) -> async_nats::Client {
        async_nats::ConnectOptions::with_credentials_file(self.farms[farm].scheduler_creds.clone())
            .await
            .expect("read test creds")
            .custom_inbox_prefix(crate::subjects::SERVICE_INBOX_PREFIX)
            .connect(self.servers().as_slice())
            .await
            .expect("connect to test nats")
    }

    /// The environment a service of farm `i` needs: URL, its credentials and the farm's keys.
    pub fn env(&self, farm: usize, service: &str) -> Vec<(String, String)> {
        let f = &self.farms[farm];
        let creds = match service {
            "gateway" => &f.gateway_creds,
            _ => &f.scheduler_creds,
        };
        let mut env = vec![
            ("FREEAGENT_NATS_URL".to_owned(), self.url.clone()),
            (
                "FREEAGENT_NATS_CREDS".to_owned(),
                creds.display().to_string(),
            ),
        ];
        // As `freeagent nats-config` says: with a workers account the gateway holds only its
        // signing key.
        if service == "scheduler" || (service == "gateway" && f.workers_key.is_none()) {
            env.push((
                "FREEAGENT_NATS_SIGNING_KEY".to_owned(),
                f.signing_key.display().to_string(),
            ));
        }
        if matches!(service, "gateway" | "scheduler")
            && let Some(key) = &f.workers_key
        {
            env.push((
                "FREEAGENT_NATS_WORKERS_SIGNING_KEY".to_owned(),
                key.display().to_string(),
            ));
        }
        if service == "scheduler" {
            env.push((
                "FREEAGENT_NATS_OPERATOR_KEY".to_owned(),
                f.operator_key.display().to_string(),
            ));
            env.push((
                "FREEAGENT_NATS_SYSTEM_CREDS".to_owned(),
                f.system_creds.display().to_string(),
            ));
        }
        env
    }

    /// Every stream and consumer of every account as the server's monitoring endpoint reports
    /// them (pending, waiting pulls, ack floors): what a stalled queue looked like when a test
    /// failed. Blocking, so a `Drop` can call it; empty if the server does not answer in 2 s.
    pub fn jetstream_state(&self) -> String {
        use std::io::{Read, Write};
        let get = || -> std::io::Result<String> {
            let host = self.server.nodes[0].host.as_str();
            let mut s = std::net::TcpStream::connect((host, self.monitor_port))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(
                b"GET /jsz?accounts=true&streams=true&consumers=true&config=true HTTP/1.0\r\nHost: nats\r\n\r\n",
            )?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or(body))
        };
        get().unwrap_or_default()
    }

    /// The server's own log (kept with a failed test's farm logs).
    pub fn log_path(&self) -> PathBuf {
        self.server.nodes[0].log.clone()
    }

    /// The (first) server's process id (to freeze it with SIGSTOP: clients then write into a
    /// connection nobody reads).
    pub fn pid(&self) -> Option<u32> {
        self.server.nodes[0].pid()
    }

    /// Stops the server (keeping its store), for tests of NATS outages.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&self) {
        self.stop();
        self.spawn();
        assert!(self.wait_ready().await, "nats-server did not restart");
    }
}

impl Server {
    fn stop(&self) {
        for node in &self.nodes {
            node.stop();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
