//! End-to-end harness: starts the real binaries (storage, scheduler, gateway, workers) on free
//! ports against a fresh database and a private nats-server, drives them over HTTP, and can
//! kill any process. Logs of each process go to a file, printed when a test fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod browser;

use freeagent_shared::testing::{TestDb, TestNats, TestPg, free_port, wait};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use freeagent_shared;

pub mod hosts;
pub mod proxy;
pub mod runs;
pub mod sse;

pub const API_KEY: &str = "fak_e2e-test-key-e2e-test-key-e2e-test-key";
pub const SECRET: &str = "e2e-signing-secret-e2e-signing-secret";
/// What worker processes register with: a key with only the `register_workers` scope.
pub const REGISTRATION_KEY: &str = "fak_e2e-registration-only-key-registration";

/// Where cargo put the binaries: a test executable lives in `<target>/<profile>/deps/`, the
/// bench binary beside the services in `<target>/<profile>/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("executable dir");
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

pub struct FarmOpts {
    pub workers: usize,
    pub schedulers: usize,
    pub build_command: String,
    pub lease: &'static str,
    /// Run a private Postgres cluster, so the test may restart it.
    pub private_postgres: bool,
    /// With `private_postgres`, also its synchronous standby (`Farm::standby`); the services'
    /// URL lists both hosts, so the test may kill the primary and promote the standby.
    pub postgres_standby: bool,
    pub extra_env: Vec<(String, String)>,
    /// Run on this (shared) server as its farm number `.1` (each farm is an account of its
    /// own); by default the farm gets a server of its own.
    pub nats: Option<(TestNats, usize)>,
    /// Settings for the scheduler(s) only.
    pub scheduler_env: Vec<(String, String)>,
    /// Run the gateway and the storage service twice each (`gateway` and `gateway-2`,
    /// `storage` and `storage-2`), each pair behind a TCP proxy (`proxy::Proxy`) whose address
    /// is the farm's `gateway` / `storage` URL, as behind an operator's load balancer.
    pub twice_behind_proxies: bool,
    /// Run the workers on these hosts of their own (worker `i` on host `i % len`), reaching
    /// the gateway, storage and NATS through the test's address on the hosts' subnet; builds
    /// share their worker's network (`FREEAGENT_BUILD_NETWORK=host`), so a `Runs` for them
    /// listens there too (`Runs::start_on(hosts.own_addr())`).
    pub worker_hosts: Option<std::sync::Arc<hosts::Hosts>>,
    /// Run every process of the farm on a host of its own, from host `.1` of these on (the
    /// storage services, the schedulers, the gateways, then the workers), each listening on its
    /// host's address. Clients reach the gateways, storage and Postgres through proxies on the
    /// test's address (`Farm::gateway`, `Farm::storage`); NATS is wherever `nats` put it.
    pub hosts: Option<(std::sync::Arc<hosts::Hosts>, usize)>,
}

impl Default for FarmOpts {
    fn default() -> Self {
        Self {
            workers: 1,
            schedulers: 1,
            build_command: "sh build.sh".into(),
            lease: "30s",
            private_postgres: false,
            postgres_standby: false,
            extra_env: vec![],
            nats: None,
            scheduler_env: vec![],
            twice_behind_proxies: false,
            worker_hosts: None,
            hosts: None,
        }
    }
}

struct Proc {
    name: String,
    bin: String,
    extra: Vec<(String, String)>,
    child: Child,
    log: PathBuf,
}

pub struct Farm {
    pub db: TestDb,
    /// The private cluster, when `FarmOpts::private_postgres`.
    pub pg: Option<TestPg>,
    /// The private cluster's standby, when `FarmOpts::postgres_standby`.
    pub standby: Option<TestPg>,
    pub nats: TestNats,
    /// This farm's account on `nats`.
    pub nats_farm: usize,
    pub gateway: String,
    pub storage: String,
    /// Health and metrics of `scheduler-0`.
    pub scheduler: String,
    /// Health and metrics of every scheduler replica.
    pub schedulers: Vec<String>,
    pub http: reqwest::Client,
    pub data: tempfile::TempDir,
    /// Every process's settings (URLs, tuning); services also get `services_env`.
    env: Vec<(String, String)>,
    services_env: Vec<(String, String)>,
    procs: Vec<Proc>,
    /// With `FarmOpts::twice_behind_proxies`: the gateways' and the storage services' ports,
    /// and the proxies in front of them.
    replica_ports: Vec<(&'static str, std::net::SocketAddr)>,
    _proxies: Vec<proxy::Proxy>,
    /// With `FarmOpts::hosts`: which host each process runs on.
    placement: Vec<(String, usize)>,
    hosts: Option<std::sync::Arc<hosts::Hosts>>,
    /// With `FarmOpts::worker_hosts`: the hosts, and how workers there reach NATS.
    worker_hosts: Option<(std::sync::Arc<hosts::Hosts>, String)>,
}

impl Farm {
    pub async fn start(opts: FarmOpts) -> Farm {
        freeagent_shared::testing::init_test_log();
        freeagent_shared::tls::install_crypto_provider();
        let pg = opts.private_postgres.then(TestPg::start);
        let mut db = match &pg {
            Some(pg) => TestDb::new_on(&pg.admin_url()).await,
            None => TestDb::new().await,
        };
        let standby = match &pg {
            Some(pg) if opts.postgres_standby => Some(pg.add_standby(&mut db).await),
            _ => None,
        };
        let (nats, nats_farm) = match opts.nats.clone() {
            Some(shared) => shared,
            None => (TestNats::start().await, 0),
        };
        let data = tempfile::tempdir().expect("farm data dir");
        let (gp, sp, cp) = (
            free_port().unwrap(),
            free_port().unwrap(),
            free_port().unwrap(),
        );
        let mut gateway = format!("http://127.0.0.1:{gp}");
        let mut storage = format!("http://127.0.0.1:{sp}");
        let (mut replica_ports, mut proxies) = (vec![], vec![]);
        // Every process on a host of its own: which one, by name.
        let mut placement: Vec<(String, usize)> = vec![];
        if let Some((hosts, first)) = &opts.hosts {
            let mut names: Vec<String> = if opts.twice_behind_proxies {
                vec!["storage".into(), "storage-2".into()]
            } else {
                vec!["storage".into()]
            };
            names.extend((0..opts.schedulers.max(1)).map(|i| format!("scheduler-{i}")));
            names.push("gateway".into());
            if opts.twice_behind_proxies {
                names.push("gateway-2".into());
            }
            names.extend((0..opts.workers).map(|i| format!("worker-{i}")));
            assert!(
                first + names.len() <= hosts.len(),
                "{} hosts for {} processes",
                hosts.len() - first,
                names.len()
            );
            placement = names.into_iter().zip(*first..).collect();
        }
        let host_of = |name: &str| -> std::net::IpAddr {
            match (&opts.hosts, placement.iter().find(|(n, _)| n == name)) {
                (Some((hosts, _)), Some((_, i))) => hosts.addr(*i).into(),
                _ => std::net::Ipv4Addr::LOCALHOST.into(),
            }
        };
        // Where the test and the workers reach the farm from: the test's address on the
        // hosts' subnet, or loopback.
        let front = opts
            .hosts
            .as_ref()
            .map_or(std::net::Ipv4Addr::LOCALHOST, |(h, _)| h.own_addr());
        if opts.twice_behind_proxies {
            let ports: Vec<u16> = (0..4).map(|_| free_port().unwrap()).collect();
            replica_ports = vec![
                ("gateway", (host_of("gateway"), ports[0]).into()),
                ("gateway-2", (host_of("gateway-2"), ports[1]).into()),
                ("storage", (host_of("storage"), ports[2]).into()),
                ("storage-2", (host_of("storage-2"), ports[3]).into()),
            ];
            let (g, st) = (
                proxy::Proxy::to(front, vec![replica_ports[0].1, replica_ports[1].1]).await,
                proxy::Proxy::to(front, vec![replica_ports[2].1, replica_ports[3].1]).await,
            );
            (gateway, storage) = (g.url(), st.url());
            proxies = vec![g, st];
        } else if opts.hosts.is_some() {
            let (g, st) = (
                proxy::Proxy::to(front, vec![(host_of("gateway"), gp).into()]).await,
                proxy::Proxy::to(front, vec![(host_of("storage"), sp).into()]).await,
            );
            (gateway, storage) = (g.url(), st.url());
            proxies = vec![g, st];
        }
        // Postgres stays on the test's loopback; processes on hosts reach each of its servers
        // through a proxy on the test's address.
        let mut database_url = db.url.clone();
        if opts.hosts.is_some() {
            let ports: Vec<u16> = pg
                .iter()
                .chain(standby.iter())
                .map(|p| p.port)
                .chain(pg.is_none().then_some(5432))
                .collect();
            for port in ports {
                let p = proxy::Proxy::to(front, vec![(std::net::Ipv4Addr::LOCALHOST, port).into()])
                    .await;
                database_url =
                    database_url.replacen(&format!("127.0.0.1:{port}"), &p.addr.to_string(), 1);
                proxies.push(p);
            }
        }
        let mut worker_hosts = None;
        if let Some(hosts) = opts.worker_hosts.clone() {
            assert!(
                !opts.twice_behind_proxies,
                "worker hosts reach one gateway and one storage"
            );
            let own = hosts.own_addr();
            let (g, st, n) = (
                proxy::Proxy::start_delayed(own, vec![gp], hosts.delay).await,
                proxy::Proxy::start_delayed(own, vec![sp], hosts.delay).await,
                proxy::Proxy::start_delayed(own, vec![nats.port], hosts.delay).await,
            );
            (gateway, storage) = (g.url(), st.url());
            worker_hosts = Some((hosts, format!("nats://{}", n.addr)));
            proxies = vec![g, st, n];
        }
        // Workers get none of these: no database, no signing secret, no admin key.
        let services_env: Vec<(String, String)> = [
            ("FREEAGENT_DATABASE_URL", database_url),
            (
                "FREEAGENT_DATABASE_POOL",
                freeagent_shared::testing::TEST_DATABASE_POOL.to_string(),
            ),
            ("FREEAGENT_API_KEY", API_KEY.into()),
            ("FREEAGENT_WORKER_REGISTRATION_KEY", REGISTRATION_KEY.into()),
            ("FREEAGENT_SIGNING_SECRET", SECRET.into()),
            // Exact figures at once: tests check /health and the stats right after a change.
            ("FREEAGENT_FIGURES_TTL", "0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut env: Vec<(String, String)> = [
            ("FREEAGENT_NATS_URL", nats.url.clone()),
            ("FREEAGENT_STORAGE_ENDPOINT", storage.clone()),
            (
                "FREEAGENT_STORAGE_URL",
                data.path().join("objects").display().to_string(),
            ),
            ("FREEAGENT_GATEWAY_URL", gateway.clone()),
            ("FREEAGENT_GATEWAY_PORT", gp.to_string()),
            ("FREEAGENT_STORAGE_PORT", sp.to_string()),
            ("FREEAGENT_SCHEDULER_PORT", cp.to_string()),
            ("FREEAGENT_BUILD_COMMAND", opts.build_command.clone()),
            ("FREEAGENT_WORKER_PLATFORMS", "android,ios".into()),
            (
                "FREEAGENT_WORK_DIR",
                data.path().join("work").display().to_string(),
            ),
            ("FREEAGENT_LEASE", opts.lease.into()),
            ("FREEAGENT_SCHEDULER_TICK", "200ms".into()),
            ("FREEAGENT_PRESENCE_INTERVAL", "500ms".into()),
            ("FREEAGENT_RETRY_BACKOFF", "200ms".into()),
            ("FREEAGENT_LOG_FORMAT", "text".into()),
            // Builds get no file system of their own (making and removing one costs each build
            // 0.1-0.3 s on this machine): the disk quota is tested where it is the subject
            // (`tests/sandbox.rs`), which sets `FREEAGENT_BUILD_DISK` itself.
            ("FREEAGENT_BUILD_DISK", "0".into()),
            (
                "RUST_LOG",
                "info,sqlx=warn,freeagent_scheduler::dispatcher=debug".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(opts.extra_env);
        let mut farm = Farm {
            db,
            pg,
            standby,
            nats,
            nats_farm,
            gateway,
            storage,
            scheduler: format!("http://127.0.0.1:{cp}"),
            schedulers: vec![],
            http: reqwest::Client::new(),
            data,
            env,
            services_env,
            procs: vec![],
            replica_ports,
            _proxies: proxies,
            worker_hosts,
            placement,
            hosts: opts.hosts.as_ref().map(|(h, _)| h.clone()),
        };
        if opts.hosts.is_some() {
            // Off loopback, storage needs a key of its own for certs at rest.
            farm.services_env
                .push(("FREEAGENT_CERTS_KEY".into(), "ab".repeat(32)));
        }
        if opts.twice_behind_proxies {
            for (name, addr) in farm.replica_ports.clone() {
                if name.starts_with("storage") {
                    let port = addr.port().to_string();
                    farm.spawn(
                        name,
                        "freeagent-storage",
                        &[("FREEAGENT_STORAGE_PORT", &port)],
                    );
                }
            }
        } else {
            farm.spawn("storage", "freeagent-storage", &[]);
        }
        // Each service gets its own NATS identity; workers get theirs when they register.
        let scheduler_nats = farm.nats.env(farm.nats_farm, "scheduler");
        for i in 0..opts.schedulers.max(1) {
            // Each replica serves health on its own port.
            let port = if i == 0 { cp } else { free_port().unwrap() };
            let mut extra: Vec<(&str, &str)> = scheduler_nats
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let port_text = port.to_string();
            extra.push(("FREEAGENT_SCHEDULER_PORT", &port_text));
            extra.extend(
                opts.scheduler_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            farm.spawn(&format!("scheduler-{i}"), "freeagent-scheduler", &extra);
            let addr = farm.host_addr(&format!("scheduler-{i}"));
            farm.schedulers.push(format!("http://{addr}:{port}"));
        }
        let gateway_nats = farm.nats.env(farm.nats_farm, "gateway");
        let extra: Vec<(&str, &str)> = gateway_nats
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if opts.twice_behind_proxies {
            for (name, addr) in farm.replica_ports.clone() {
                if name.starts_with("gateway") {
                    let port = addr.port().to_string();
                    let mut extra = extra.clone();
                    extra.push(("FREEAGENT_GATEWAY_PORT", &port));
                    farm.spawn(name, "freeagent-gateway", &extra);
                }
            }
        } else {
            farm.spawn("gateway", "freeagent-gateway", &extra);
        }
        farm.scheduler = farm.schedulers[0].clone();
        farm.wait_ready().await;
        for i in 0..opts.workers {
            farm.spawn_worker(i);
        }
        farm
    }

    fn spawn(&mut self, name: &str, bin: &str, extra: &[(&str, &str)]) {
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let proc = self.launch(name, bin, extra);
        self.procs.push(proc);
    }

    fn launch(&self, name: &str, bin: &str, extra: Vec<(String, String)>) -> Proc {
        let log = self.data.path().join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let own: Vec<(String, String)> = if bin == "freeagent-worker" {
            vec![("FREEAGENT_API_KEY".into(), REGISTRATION_KEY.into())]
        } else {
            self.services_env.clone()
        };
        let host = match (&self.worker_hosts, name.strip_prefix("worker-")) {
            (Some((hosts, _)), Some(i)) if bin == "freeagent-worker" => {
                let i: usize = i.parse().expect("worker-<i>");
                Some((hosts.clone(), i % hosts.len()))
            }
            _ => None,
        };
        let placed = self
            .placement
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, i)| Some((self.hosts.clone()?, *i)));
        let mut bind = vec![];
        let mut command = match (&host, &placed) {
            (Some((hosts, i)), _) | (_, Some((hosts, i))) => hosts.command(*i, &binary(bin)),
            _ => Command::new(binary(bin)),
        };
        if let Some((hosts, i)) = &placed {
            bind.push(("FREEAGENT_BIND", hosts.addr(*i).to_string()));
        }
        let child = command
            .env_clear()
            .envs(
                ["PATH", "HOME", "LANG", "TMPDIR"]
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .envs(own.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(bind.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Proc {
            name: name.to_owned(),
            bin: bin.to_owned(),
            extra,
            child,
            log,
        }
    }

    /// SIGKILLs a process (if running) and starts it again with the same settings.
    pub fn restart(&mut self, name: &str) {
        self.kill(name);
        let Some(i) = self.procs.iter().position(|p| p.name == name) else {
            panic!("no process {name}")
        };
        let (bin, extra) = (self.procs[i].bin.clone(), self.procs[i].extra.clone());
        self.procs[i] = self.launch(name, &bin, extra);
    }

    /// SIGKILLs a process (if running) and starts it again with `env` set over its settings,
    /// kept for later restarts (a rotated secret, another key). An empty value unsets a variable.
    pub fn restart_with(&mut self, name: &str, env: &[(&str, &str)]) {
        self.kill(name);
        let Some(i) = self.procs.iter().position(|p| p.name == name) else {
            panic!("no process {name}")
        };
        let mut extra = self.procs[i].extra.clone();
        for (k, v) in env {
            extra.retain(|(known, _)| known != k);
            extra.push(((*k).to_owned(), (*v).to_owned()));
        }
        let bin = self.procs[i].bin.clone();
        self.procs[i] = self.launch(name, &bin, extra);
    }

    /// Sends a signal (SIGTERM for a graceful stop) and waits up to `timeout` for the exit.
    pub fn signal_and_wait(
        &mut self,
        name: &str,
        signal: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let p = self.procs.iter_mut().find(|p| p.name == name)?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.child.id() as i32), signal);
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn spawn_worker(&mut self, i: usize) {
        let name = format!("worker-{i}");
        let mut extra = vec![("FREEAGENT_WORKER_NAME", name.as_str())];
        if let Some((_, nats_url)) = &self.worker_hosts {
            extra.push(("FREEAGENT_NATS_URL", nats_url.as_str()));
            extra.push(("FREEAGENT_BUILD_NETWORK", "host"));
        }
        if self.hosts.is_some() {
            // Builds share their worker's host, to reach the test's `Runs` on its address.
            extra.push(("FREEAGENT_BUILD_NETWORK", "host"));
        }
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.spawn(&name, "freeagent-worker", &extra);
    }

    /// The address process `name` listens on: its host's with `FarmOpts::hosts`, else
    /// loopback.
    pub fn host_addr(&self, name: &str) -> std::net::IpAddr {
        match (&self.hosts, self.placement.iter().find(|(n, _)| n == name)) {
            (Some(hosts), Some((_, i))) => hosts.addr(*i).into(),
            _ => std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }

    /// The host worker `i` runs on, with `FarmOpts::worker_hosts`.
    pub fn worker_host(&self, i: usize) -> Option<usize> {
        self.worker_hosts.as_ref().map(|(h, _)| i % h.len())
    }

    /// Waits for the gateway and every scheduler: services set up NATS one at a time, so a
    /// scheduler may be ready after the gateway, and a worker's first request to it would find
    /// no responder.
    async fn wait_ready(&self) {
        // Behind a proxy each replica is asked on its own port: the proxy answers for either.
        let replicas: Vec<String> = self
            .replica_ports
            .iter()
            .filter(|(name, _)| name.starts_with("gateway"))
            .map(|(_, addr)| format!("http://{addr}"))
            .collect();
        let services = std::iter::once(("the gateway", &self.gateway))
            .chain(replicas.iter().map(|g| ("a gateway", g)))
            .chain(self.schedulers.iter().map(|s| ("a scheduler", s)));
        for (what, base) in services {
            let http = self.http.clone();
            let url = format!("{base}/readyz");
            wait::until(
                &format!("{what} to be ready"),
                Duration::from_secs(30),
                || {
                    let (http, url) = (http.clone(), url.clone());
                    async move {
                        http.get(&url)
                            .send()
                            .await
                            .ok()
                            .filter(|r| r.status().is_success())
                            .map(|_| ())
                    }
                },
            )
            .await;
        }
    }

    /// Waits until the service `name` (`gateway`, `gateway-2`, `storage`, `storage-2`,
    /// `scheduler-<i>`) answers `/readyz` on its own port.
    pub async fn wait_replica_ready(&self, name: &str) {
        let base = match name.strip_prefix("scheduler-") {
            Some(i) => self.schedulers[i.parse::<usize>().expect("scheduler-<i>")].clone(),
            None => {
                let (_, addr) = self
                    .replica_ports
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("no replica {name}"));
                format!("http://{addr}")
            }
        };
        let url = format!("{base}/readyz");
        wait::until(
            &format!("{name} to be ready"),
            Duration::from_secs(30),
            || async {
                let r = self.http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// SIGKILLs a process by name.
    pub fn kill(&mut self, name: &str) {
        for p in self.procs.iter_mut().filter(|p| p.name == name) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// The pid of a process by name.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.child.id())
    }

    /// Every log line, of every process, that mentions `needle` (for failure messages).
    pub fn trace(&self, needle: &str) -> String {
        let mut out = String::new();
        for p in &self.procs {
            for line in std::fs::read_to_string(&p.log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(needle))
            {
                out.push_str(&format!("[{}] {line}\n", p.name));
            }
        }
        out
    }

    pub fn log_of(&self, name: &str) -> String {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| std::fs::read_to_string(&p.log).ok())
            .unwrap_or_default()
    }

    /// Submits a project directory (packed as tar.gz) over HTTP; returns the 201 body.
    pub async fn submit_dir(&self, dir: &Path, platform: &str) -> Value {
        self.submit_dir_with_certs(dir, platform, None).await
    }

    /// Submits a project directory and, when given, signing certs; returns the 201 body.
    pub async fn submit_dir_with_certs(
        &self,
        dir: &Path,
        platform: &str,
        certs: Option<&[u8]>,
    ) -> Value {
        let archive = pack(dir);
        let mut form = reqwest::multipart::Form::new()
            .text("platform", platform.to_owned())
            .part(
                "source",
                reqwest::multipart::Part::bytes(archive).file_name("source.tar.gz"),
            );
        if let Some(certs) = certs {
            form = form.part(
                "certs",
                reqwest::multipart::Part::bytes(certs.to_vec()).file_name("certs.p12"),
            );
        }
        let resp = self
            .http
            .post(format!("{}/api/builds", self.gateway))
            .header("x-api-key", API_KEY)
            .multipart(form)
            .send()
            .await
            .expect("submit");
        assert_eq!(
            resp.status(),
            201,
            "submit failed: {}",
            resp.text().await.unwrap_or_default()
        );
        resp.json().await.expect("submit reply")
    }

    pub async fn get_build(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/api/builds/{id}", self.gateway))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .expect("get build")
            .json()
            .await
            .expect("build json")
    }

    /// The messages of a build's log, in order.
    pub async fn logs(&self, id: &str) -> Vec<String> {
        let logs: Value = self
            .http
            .get(format!("{}/api/builds/{id}/logs", self.gateway))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .expect("get logs")
            .json()
            .await
            .expect("logs json");
        logs["logs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["message"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `GET` of an API path with the admin key, waiting out the key's rate limit as
    /// `Retry-After` says (a test reading hundreds of builds goes past it), and asking again
    /// for 10 s while the answer is 503.
    pub async fn get_api(&self, path: &str) -> reqwest::Response {
        let mut tries = 0;
        loop {
            let resp = self
                .http
                .get(format!("{}{path}", self.gateway))
                .header("x-api-key", API_KEY)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}"));
            match resp.status().as_u16() {
                429 => wait_out_rate_limit(&resp).await,
                // "Try again", as a client does: a log read that met a copy of the stream still
                // catching up after its node came back.
                503 if tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => return resp,
            }
        }
    }

    /// Every line of a build's log, following the pages.
    pub async fn all_logs(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let resp = self
                .get_api(&format!("/api/builds/{id}/logs?after={after}&limit=10000"))
                .await;
            let status = resp.status();
            let text = resp.text().await.expect("logs body");
            assert_eq!(status, 200, "log page of {id} after {after}: {text}");
            let page: Value = serde_json::from_str(&text).expect("logs json");
            let next = page["next_after"].as_u64().unwrap_or(after);
            out.extend(
                page["logs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["message"].as_str().map(str::to_owned)),
            );
            if next == after {
                return out;
            }
            after = next;
        }
    }

    /// Resident memory of a farm process now and at its peak (`VmRSS`, `VmHWM`), in bytes.
    pub fn memory(&self, name: &str) -> (u64, u64) {
        let pid = self
            .pid(name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let field = |f: &str| {
            status
                .lines()
                .find(|l| l.starts_with(f))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Waits until the build reaches a terminal status and returns it.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        wait::until(&format!("build {id} to finish"), timeout, || async {
            let b = self.get_build(id).await;
            matches!(
                b["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
            .then_some(b)
        })
        .await
    }

    /// Waits until the build's log is archived; returns the build.
    pub async fn wait_archived(&self, id: &str) -> Value {
        wait::until(
            &format!("build {id}'s log to be archived"),
            Duration::from_secs(60),
            || async {
                let b = self.get_build(id).await;
                b["logs_archived_at"].is_string().then_some(b)
            },
        )
        .await
    }

    /// The build's text log (`download/logs`), as a user downloads it.
    pub async fn log_text(&self, id: &str) -> String {
        let resp = self
            .http
            .get(format!("{}/api/builds/{id}/download/logs", self.gateway))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .expect("download logs");
        assert_eq!(resp.status(), 200, "download logs");
        resp.text().await.expect("log text")
    }

    /// The `/metrics` text of the service at `base` (its URL); None if it does not answer.
    pub async fn metrics(&self, base: &str) -> Option<String> {
        let resp = self.http.get(format!("{base}/metrics")).send().await.ok()?;
        resp.text().await.ok()
    }

    /// A NATS connection with a service's rights (the scheduler's: the whole farm account).
    pub async fn service_nats(&self) -> async_nats::Client {
        freeagent_shared::nats::connect(
            &self.nats.service_settings(self.nats_farm, "scheduler"),
            "test",
            freeagent_shared::nats::Identity::Settings,
            None,
        )
        .await
        .expect("service NATS connection")
    }
}

/// Sleeps as a 429's `Retry-After` says (1 s when it says nothing readable).
async fn wait_out_rate_limit(resp: &reqwest::Response) {
    let wait = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(1);
    tokio::time::sleep(Duration::from_secs(wait)).await;
}

/// The value of one series in `/metrics` text: `series` is the name with its labels as printed
/// (`freeagent_live_clients{kind="log"}`).
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A tar.gz of a directory, in memory (test projects are tiny).
pub fn pack(dir: &Path) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(".", dir).expect("pack project");
    tar.into_inner().expect("tar").finish().expect("gzip")
}

/// The repository's examples directory.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// Settings for `FarmOpts::extra_env` and the like, from string pairs.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A throwaway project whose build.sh is `script`.
pub fn project(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("project dir");
    std::fs::write(dir.path().join("build.sh"), script).expect("write build.sh");
    dir
}

/// Whether the tests (and so the workers they start) run as root: then builds get uids, control
/// groups and networks of their own; otherwise they keep the worker's uid, in a user namespace.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Host pids and real uids of the live (not zombie) processes whose command line contains
/// `marker`. A sandboxed build's `$$` is its PID namespace's and it cannot write to the test's
/// files, so a test finds a build's processes by a unique marker it put in their command line.
pub fn processes_with(marker: &str) -> Vec<(i32, u32)> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            if !String::from_utf8_lossy(&cmdline).contains(marker) {
                return None;
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            if status.contains("\nState:\tZ") {
                return None;
            }
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((pid, uid))
        })
        .collect()
}

impl Drop for Farm {
    fn drop(&mut self) {
        // Read before the processes die: their waiting pulls vanish with them.
        let jetstream = if std::thread::panicking() {
            self.nats.jetstream_state()
        } else {
            String::new()
        };
        for p in self.procs.iter_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if std::thread::panicking() {
            // A flake's whole story: `FREEAGENT_TEST_KEEP_LOGS=<dir>` keeps every process's log
            // of a failed test there (the soak script sets it).
            let keep = std::env::var_os("FREEAGENT_TEST_KEEP_LOGS").map(PathBuf::from);
            let test = std::thread::current()
                .name()
                .unwrap_or("test")
                .replace("::", "-");
            for p in &self.procs {
                if let Some(dir) = &keep {
                    let _ = std::fs::create_dir_all(dir);
                    let to = dir.join(format!("{test}-{}-{}.log", std::process::id(), p.name));
                    let _ = std::fs::copy(&p.log, to);
                }
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("----- last lines of {} -----", p.name);
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
            if let Some(dir) = &keep {
                let to = dir.join(format!("{test}-{}-jsz.json", std::process::id()));
                let _ = std::fs::write(to, &jetstream);
                let to = dir.join(format!("{test}-{}-nats-server.log", std::process::id()));
                let _ = std::fs::copy(self.nats.log_path(), to);
            }
            eprintln!("----- JetStream consumers -----");
            for line in consumer_summary(&jetstream) {
                eprintln!("{line}");
            }
        }
    }
}

/// One line per consumer of the server's `/jsz` report: where each queue stood.
fn consumer_summary(jsz: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(jsz) else {
        return vec![format!("(no /jsz report: {} bytes)", jsz.len())];
    };
    let mut out = vec![];
    for account in v["account_details"].as_array().into_iter().flatten() {
        for stream in account["stream_detail"].as_array().into_iter().flatten() {
            out.push(format!(
                "stream {} state {}",
                stream["name"], stream["state"]
            ));
            for c in stream["consumer_detail"].as_array().into_iter().flatten() {
                out.push(format!(
                    "  consumer {} pending {} waiting {} ack_pending {} redelivered {} delivered {} ack_floor {}",
                    c["name"],
                    c["num_pending"],
                    c["num_waiting"],
                    c["num_ack_pending"],
                    c["num_redelivered"],
                    c["delivered"],
                    c["ack_floor"],
                ));
            }
        }
    }
    out
}

impl Farm {
    /// Submits `n` copies of a project with `concurrency` clients at once; returns the ids.
    pub async fn submit_many(
        &self,
        dir: &Path,
        platform: &str,
        n: usize,
        concurrency: usize,
        extra: &[(&str, &str)],
    ) -> Vec<String> {
        use futures::StreamExt;
        let archive = pack(dir);
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        futures::stream::iter(0..n)
            .map(|_| {
                let (archive, extra) = (archive.clone(), extra.clone());
                async move {
                    // A bulk submitter past the key's rate limit waits as `Retry-After` says.
                    let resp = loop {
                        let mut form = reqwest::multipart::Form::new()
                            .text("platform", platform.to_owned())
                            .part(
                                "source",
                                reqwest::multipart::Part::bytes(archive.clone())
                                    .file_name("source.tar.gz"),
                            );
                        for (k, v) in &extra {
                            form = form.text(k.clone(), v.clone());
                        }
                        let resp = self
                            .http
                            .post(format!("{}/api/builds", self.gateway))
                            .header("x-api-key", API_KEY)
                            .multipart(form)
                            .send()
                            .await
                            .expect("submit");
                        if resp.status() != 429 {
                            break resp;
                        }
                        wait_out_rate_limit(&resp).await;
                    };
                    assert_eq!(resp.status(), 201);
                    let v: Value = resp.json().await.expect("submit reply");
                    v["id"].as_str().expect("id").to_owned()
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    /// Registers a worker over HTTP, as the reference worker does (with an nkey of its own);
    /// returns its id, token and NATS identity.
    pub async fn register_worker(&self, name: &str, platforms: &[&str]) -> TestWorker {
        self.register_worker_with(name, platforms, 1).await
    }

    /// The same, taking up to `max_concurrent` builds at once.
    pub async fn register_worker_with(
        &self,
        name: &str,
        platforms: &[&str],
        max_concurrent: u32,
    ) -> TestWorker {
        let key = nkeys::KeyPair::new_user();
        let body = serde_json::json!({
            "name": name,
            "capabilities": {"platforms": platforms, "max_concurrent_builds": max_concurrent},
            "nats_public_key": key.public_key(),
        });
        let r: Value = self
            .http
            .post(format!("{}/api/workers/register", self.gateway))
            .header("x-api-key", API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        TestWorker {
            worker_id: r["id"].as_str().unwrap().parse().unwrap(),
            worker_token: r["access_token"].as_str().unwrap().to_owned(),
            nats_jwt: r["nats_jwt"].as_str().map(str::to_owned),
            nats_key: std::sync::Arc::new(key),
        }
    }

    /// A NATS connection as `w`, with exactly the permissions the farm gave it.
    pub async fn worker_nats(&self, w: &TestWorker) -> async_nats::Client {
        w.connect(&self.nats.url).await.expect("worker connects")
    }

    /// A NATS request to the scheduler, as worker `w` sends it (on its own connection).
    pub async fn rpc<Req: serde::Serialize, Rep: serde::de::DeserializeOwned>(
        &self,
        w: &TestWorker,
        op: freeagent_shared::subjects::Op,
        req: &Req,
    ) -> Rep {
        let client = self.worker_nats(w).await;
        let msg = client
            .request(
                op.subject(w.worker_id),
                freeagent_shared::wire::encode(req).into(),
            )
            .await
            .expect("scheduler answers");
        freeagent_shared::wire::decode(&msg.payload).expect("readable reply")
    }
}

/// A worker registered by a test, with its own NATS identity.
#[derive(Clone)]
pub struct TestWorker {
    pub worker_id: freeagent_shared::ids::WorkerId,
    pub worker_token: String,
    pub nats_jwt: Option<String>,
    pub nats_key: std::sync::Arc<nkeys::KeyPair>,
}

impl TestWorker {
    /// Connects as this worker (its JWT, its key, its inbox prefix).
    pub async fn connect(
        &self,
        url: &str,
    ) -> Result<async_nats::Client, freeagent_shared::nats::Error> {
        let identity = freeagent_shared::nats::Identity::Worker {
            jwt: std::sync::Arc::new(std::sync::RwLock::new(
                self.nats_jwt.clone().unwrap_or_default(),
            )),
            key: self.nats_key.clone(),
            revoked: Default::default(),
        };
        // As the worker reads it: the bench compares ping intervals with it.
        let settings = freeagent_shared::nats::NatsSettings {
            ping_interval: freeagent_shared::config::duration(
                "FREEAGENT_NATS_PING_INTERVAL",
                Duration::ZERO,
            )
            .unwrap_or(Duration::ZERO),
            ..freeagent_shared::nats::NatsSettings::url(url)
        };
        freeagent_shared::nats::connect(
            &settings,
            "test-worker",
            identity,
            Some(freeagent_shared::subjects::inbox_prefix(self.worker_id)),
        )
        .await
    }
}

/// A NATS connection whose server errors (permission violations) the test can read.
pub struct Watched {
    pub client: async_nats::Client,
    errors: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Watched {
    /// Flushes, then returns the permission error the server reported for what was just sent
    /// (panics if there is none within 3 s): the server refused it.
    pub async fn refused(&mut self, what: &str) -> String {
        let _ = self.client.flush().await;
        match tokio::time::timeout(Duration::from_secs(3), self.errors.recv()).await {
            Ok(Some(e)) if e.to_lowercase().contains("permissions violation") => e,
            Ok(Some(e)) => panic!("{what}: expected a permissions violation, got {e}"),
            _ => panic!("{what}: NATS allowed it"),
        }
    }

    /// Flushes, then returns the next error the server reports (panics if there is none
    /// within 3 s).
    pub async fn error(&mut self, what: &str) -> String {
        let _ = self.client.flush().await;
        match tokio::time::timeout(Duration::from_secs(3), self.errors.recv()).await {
            Ok(Some(e)) => e,
            _ => panic!("{what}: the server reported no error"),
        }
    }

    /// No error was reported for what was just sent.
    pub async fn allowed(&mut self, what: &str) {
        let _ = self.client.flush().await;
        if let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(500), self.errors.recv()).await
        {
            panic!("{what}: expected to be allowed, got {e}");
        }
    }
}

impl TestWorker {
    /// Connects as this worker and watches for the server's errors.
    pub async fn connect_watched(&self, url: &str) -> Watched {
        let (tx, errors) = tokio::sync::mpsc::unbounded_channel();
        let (jwt, key) = (
            self.nats_jwt.clone().unwrap_or_default(),
            self.nats_key.clone(),
        );
        let client = async_nats::ConnectOptions::with_auth_callback(move |nonce| {
            let (jwt, key) = (jwt.clone(), key.clone());
            async move {
                let mut auth = async_nats::Auth::new();
                auth.jwt = Some(jwt);
                auth.signature = Some(key.sign(&nonce).map_err(async_nats::AuthError::new)?);
                Ok(auth)
            }
        })
        .custom_inbox_prefix(freeagent_shared::subjects::inbox_prefix(self.worker_id))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .expect("the worker connects");
        Watched { client, errors }
    }
}
