//! `freeagent nats-config`: the NATS auth set-up for operators who run their own NATS (server
//! configuration, service credentials, keys), and the private `nats-server` that
//! `freeagent dev` runs with the same set-up. See docs/security.md.

use anyhow::{Context, bail};
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
    let files = Generated::new(&a.farms).write(&a.dir, &a.listen, &a.store_dir)?;
    println!("Wrote {}:", a.dir.display());
    println!(
        "  server.conf        run: nats-server -c {}",
        a.dir.join("server.conf").display()
    );
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
    Ok(std::process::ExitCode::SUCCESS)
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
