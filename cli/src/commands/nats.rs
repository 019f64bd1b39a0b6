//! `freeagent nats-config`: the NATS auth set-up for operators who run their own NATS (server
//! configuration, service credentials, keys), and the private `nats-server` that
//! `freeagent dev` runs with the same set-up. See docs/security.md.

use anyhow::{Context, bail};
use freeagent_shared::nats_auth::cluster::ClusterNode;
use freeagent_shared::nats_auth::setup::{FarmFiles, Generated, find_server_binary};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct NatsConfigArgs {
    /// Where to write server.conf, the credentials and the keys (created; files are 0600).
    #[arg(long, default_value = "./nats-auth")]
    pub dir: PathBuf,
    /// One account per farm sharing this server; repeat for several farms.
    #[arg(long = "farm", default_value = "freeagent")]
    pub farms: Vec<String>,
    /// The address the server listens on (written into server.conf).
    #[arg(long, default_value = "0.0.0.0:4222")]
    pub listen: String,
    /// JetStream's store directory (written into server.conf).
    #[arg(long, default_value = "/var/lib/nats-server/jetstream")]
    pub store_dir: PathBuf,
    /// Also write a cluster of this many nodes (3 or more): `<host>.conf` per node, with
    /// authenticated routes and clustered JetStream (streams then keep 3 replicas).
    #[arg(long, value_name = "NODES")]
    pub cluster: Option<usize>,
    /// How clients and the other nodes reach each node, in order (repeat, or comma-separated)
    /// [default: nats-1, nats-2, …].
    #[arg(long = "node-host", value_name = "HOST", value_delimiter = ',')]
    pub node_hosts: Vec<String>,
    /// The address each node listens on for the other nodes' routes.
    #[arg(long, default_value = "0.0.0.0:6222")]
    pub cluster_listen: String,
    /// Overwrite an existing set-up (its keys are lost: every credential must be replaced).
    #[arg(long)]
    pub force: bool,
}

pub fn config(a: NatsConfigArgs) -> anyhow::Result<std::process::ExitCode> {
    if a.dir.join("server.conf").exists() && !a.force {
        bail!(
            "{} already holds a NATS set-up; pass --force to replace it (every credential changes)",
            a.dir.display()
        );
    }
    for f in &a.farms {
        if f.is_empty()
            || !f
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("farm names are letters, digits, '-' and '_': {f:?}");
        }
    }
    let nodes = cluster_nodes(&a)?;
    let generated = Generated::new(&a.farms);
    let files = generated.write(&a.dir, &a.listen, &a.store_dir)?;
    if !nodes.is_empty() {
        generated.write_cluster(&a.dir, &nodes)?;
    }
    println!("Wrote {}:", a.dir.display());
    println!(
        "  server.conf        one server: nats-server -c {}",
        a.dir.join("server.conf").display()
    );
    for n in &nodes {
        println!(
            "  {:<18} cluster node {:?}: nats-server -c {}",
            format!("{}.conf", n.name),
            n.name,
            n.config_path(&a.dir).display()
        );
    }
    println!(
        "  operator.nk        the operator key: re-signs accounts (revocations). Keep it secret."
    );
    println!("  system.creds       the system user: pushes account updates. Keep it secret.");
    println!("Each farm is an account for its services and streams and one for its workers, which");
    println!("imports from it only what workers use (docs/security.md).");
    for f in &files {
        println!();
        println!("Farm {:?}: give each service only its own lines.", f.name);
        print_env(f);
    }
    println!();
    println!("Workers get no file: each receives its own credentials when it registers.");
    if !nodes.is_empty() {
        let port = a.listen.rsplit(':').next().unwrap_or("4222");
        let urls: Vec<String> = nodes
            .iter()
            .map(|n| format!("nats://{}:{port}", n.name))
            .collect();
        println!();
        println!("On the cluster, every service and worker takes the list of nodes:");
        println!("  FREEAGENT_NATS_URL={}", urls.join(","));
        println!("Streams are kept on 3 nodes (FREEAGENT_NATS_REPLICAS); existing ones move up at");
        println!("the services' next start. The routes' password is in every node's file.");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The nodes `--cluster` asks for, named after their hosts.
fn cluster_nodes(a: &NatsConfigArgs) -> anyhow::Result<Vec<ClusterNode>> {
    let Some(n) = a.cluster else {
        if !a.node_hosts.is_empty() {
            bail!("--node-host names the nodes of a cluster: pass --cluster 3 too");
        }
        return Ok(Vec::new());
    };
    if n < 3 {
        bail!(
            "--cluster {n}: a JetStream cluster needs 3 nodes or more to survive losing one (a majority must stay up)"
        );
    }
    let hosts: Vec<String> = if a.node_hosts.is_empty() {
        (1..=n).map(|i| format!("nats-{i}")).collect()
    } else {
        a.node_hosts.clone()
    };
    if hosts.len() != n {
        bail!(
            "--cluster {n} with {} --node-host: name every node's host, in order",
            hosts.len()
        );
    }
    let route_port = a
        .cluster_listen
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| p.parse::<u16>().is_ok())
        .with_context(|| format!("--cluster-listen {:?} is not host:port", a.cluster_listen))?;
    let mut seen = std::collections::HashSet::new();
    hosts
        .into_iter()
        .map(|host| {
            if host.is_empty() || host.contains(['/', ':', ' ']) || !seen.insert(host.clone()) {
                bail!("--node-host {host:?}: give each node a distinct host name or address, without a port");
            }
            Ok(ClusterNode {
                name: host.clone(),
                listen: a.listen.clone(),
                cluster_listen: a.cluster_listen.clone(),
                route_address: format!("{host}:{route_port}"),
                store_dir: a.store_dir.clone(),
            })
        })
        .collect()
}

fn print_env(f: &FarmFiles) {
    let workers_key = || {
        if let Some(k) = &f.workers_key {
            println!("    FREEAGENT_NATS_WORKERS_SIGNING_KEY={}", k.display());
        }
    };
    println!("  scheduler:");
    println!("    FREEAGENT_NATS_CREDS={}", f.scheduler_creds.display());
    println!("    FREEAGENT_NATS_SIGNING_KEY={}", f.signing_key.display());
    workers_key();
    println!(
        "    FREEAGENT_NATS_OPERATOR_KEY={}",
        f.operator_key.display()
    );
    println!(
        "    FREEAGENT_NATS_SYSTEM_CREDS={}",
        f.system_creds.display()
    );
    // The gateway mints only workers: with a workers account it never holds the farm
    // account's signing key, which could mint a user with the whole account's rights.
    println!("  gateway:");
    println!("    FREEAGENT_NATS_CREDS={}", f.gateway_creds.display());
    if f.workers_key.is_none() {
        println!("    FREEAGENT_NATS_SIGNING_KEY={}", f.signing_key.display());
    }
    workers_key();
}

/// A private nats-server in operator mode for `freeagent dev`, killed on drop.
pub struct DevNats {
    pub url: String,
    pub farm: FarmFiles,
    child: std::process::Child,
}

impl DevNats {
    /// Generates a fresh set-up under `dir` (replacing any earlier one: the dev farm's
    /// JetStream state is disposable, Postgres keeps the builds) and starts the server on a free
    /// port.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let binary = find_server_binary().context(
            "freeagent dev runs its own nats-server, and none is on PATH: install it (`apt-get install nats-server`, or https://nats.io) or pass --nats-url to use a server you run",
        )?;
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut farms = Generated::new(&["dev"]).write(
            dir,
            &format!("127.0.0.1:{port}"),
            &dir.join("jetstream"),
        )?;
        let farm = farms.pop().context("no farm was generated")?;
        let log = std::fs::File::create(dir.join("nats-server.log"))?;
        let child = std::process::Command::new(&binary)
            .arg("-c")
            .arg(dir.join("server.conf"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut me = Self {
            url: format!("nats://127.0.0.1:{port}"),
            farm,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = me.child.try_wait() {
                bail!(
                    "nats-server exited ({status}); see {}",
                    dir.join("nats-server.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("nats-server did not listen on {port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(me)
    }

    /// The NATS settings of `service` ("scheduler" or "gateway").
    pub fn env(&self, service: &str) -> Vec<(&'static str, String)> {
        let f = &self.farm;
        let path = |p: &Path| p.display().to_string();
        let mut env = Vec::new();
        match &f.workers_key {
            Some(k) => env.push(("FREEAGENT_NATS_WORKERS_SIGNING_KEY", path(k))),
            None => env.push(("FREEAGENT_NATS_SIGNING_KEY", path(&f.signing_key))),
        }
        // The scheduler mints its own reply connection in the farm's account.
        if service != "gateway" && f.workers_key.is_some() {
            env.push(("FREEAGENT_NATS_SIGNING_KEY", path(&f.signing_key)));
        }
        if service == "gateway" {
            env.push(("FREEAGENT_NATS_CREDS", path(&f.gateway_creds)));
        } else {
            env.push(("FREEAGENT_NATS_CREDS", path(&f.scheduler_creds)));
            env.push(("FREEAGENT_NATS_OPERATOR_KEY", path(&f.operator_key)));
            env.push(("FREEAGENT_NATS_SYSTEM_CREDS", path(&f.system_creds)));
        }
        env
    }
}

impl Drop for DevNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
