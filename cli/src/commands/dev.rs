//! `freeagent dev`: the whole farm on one machine as child processes — its own nats-server (with
//! auth, on a free port), storage, scheduler, gateway and N workers — against this machine's
//! Postgres, with local-disk objects. Each process gets only the settings it needs: workers hold
//! no signing secret, no database URL and no service credentials. Prints the API key and URLs;
//! Ctrl-C stops everything, workers first.

use anyhow::{Context, bail};
use freeagent_shared::config::DEFAULT_DATABASE_URL;
use freeagent_shared::token;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

#[derive(clap::Args)]
pub struct DevArgs {
    /// Local workers to start (0 for none).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// The Postgres database the services use (made if missing).
    #[arg(long, env = "FREEAGENT_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Use this NATS server (without auth) instead of starting one with auth.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Where objects and worker scratch space live.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// The gateway's port (the API and the dashboard) on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub gateway_port: u16,
    /// The storage service's port on 127.0.0.1.
    #[arg(long, default_value_t = 8081)]
    pub storage_port: u16,
    /// The scheduler's port (health and /metrics) on 127.0.0.1.
    #[arg(long, default_value_t = 8082)]
    pub scheduler_port: u16,
    /// The command workers run in the unpacked source.
    #[arg(long, env = "FREEAGENT_BUILD_COMMAND", default_value = "sh build.sh")]
    pub build_command: String,
    /// Platforms the local workers build (ios, android; comma-separated).
    #[arg(long, default_value = "android,ios")]
    pub worker_platforms: String,
}

struct Proc {
    name: String,
    child: Child,
}

fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found beside freeagent; build every binary first: cargo build --workspace",
            p.display()
        );
    }
    Ok(p)
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub async fn run(a: DevArgs) -> anyhow::Result<std::process::ExitCode> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("cannot locate the freeagent binary")?;
    let api_key = std::env::var("FREEAGENT_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| token::generate(token::TokenKind::ApiKey));
    // Workers register with a key that can do nothing else.
    let registration_key = token::generate(token::TokenKind::ApiKey);
    let secret = std::env::var("FREEAGENT_SIGNING_SECRET")
        .ok()
        .filter(|k| k.len() >= 32)
        .unwrap_or_else(random_secret);
    std::fs::create_dir_all(a.data_dir.join("objects"))
        .with_context(|| format!("cannot create {}", a.data_dir.display()))?;
    let data = std::fs::canonicalize(&a.data_dir)?;
    let storage_endpoint = format!("http://127.0.0.1:{}", a.storage_port);
    let gateway_url = format!("http://127.0.0.1:{}", a.gateway_port);
    let own_nats = match &a.nats_url {
        Some(_) => None,
        None => Some(super::nats::DevNats::start(&data.join("nats")).await?),
    };
    let nats_url = match (&a.nats_url, &own_nats) {
        (Some(url), _) => url.clone(),
        (None, Some(n)) => n.url.clone(),
        (None, None) => bail!("no NATS server"),
    };
    // What every service (not the workers) is configured with.
    let services: Vec<(&str, String)> = vec![
        ("FREEAGENT_DATABASE_URL", a.database_url.clone()),
        ("FREEAGENT_DATABASE_CREATE", "true".into()),
        ("FREEAGENT_SIGNING_SECRET", secret),
        ("FREEAGENT_API_KEY", api_key.clone()),
        (
            "FREEAGENT_WORKER_REGISTRATION_KEY",
            registration_key.clone(),
        ),
        ("FREEAGENT_STORAGE_ENDPOINT", storage_endpoint.clone()),
        (
            "FREEAGENT_STORAGE_URL",
            data.join("objects").display().to_string(),
        ),
        ("FREEAGENT_GATEWAY_PORT", a.gateway_port.to_string()),
        ("FREEAGENT_STORAGE_PORT", a.storage_port.to_string()),
        ("FREEAGENT_SCHEDULER_PORT", a.scheduler_port.to_string()),
    ];
    let nats_env = |service: &str| -> Vec<(&'static str, String)> {
        let mut env = vec![("FREEAGENT_NATS_URL", nats_url.clone())];
        if let Some(n) = &own_nats {
            env.extend(n.env(service));
        }
        env
    };
    // The operator's settings in this shell reach the services (all of them) and the workers
    // (all but secrets); dev's own settings (ports, addresses, keys) are applied over them.
    let settings = shell_settings();
    let for_workers: Vec<(String, String)> = settings
        .iter()
        .filter(|(k, _)| !is_secret(k))
        .cloned()
        .collect();
    if !settings.is_empty() {
        let names = |s: &[(String, String)]| {
            s.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("Settings from this shell: {}", names(&settings));
        println!("  to the workers (no secrets): {}", names(&for_workers));
    }
    let spawn = |name: &str, bin: &str, extra: Vec<(&str, String)>| -> anyhow::Result<Proc> {
        let mut cmd = Command::new(binary(&bin_dir, bin)?);
        let inherited = if bin == "freeagent-worker" {
            &for_workers
        } else {
            &settings
        };
        // A clean environment: a worker must not inherit this shell's secrets either.
        cmd.env_clear()
            .envs(
                ["PATH", "HOME", "LANG", "RUST_LOG", "TMPDIR"]
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .envs(inherited.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("cannot start {bin}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    };
    let with = |a: &[(&'static str, String)], b: Vec<(&'static str, String)>| {
        a.iter().cloned().chain(b).collect::<Vec<_>>()
    };
    let mut procs = vec![
        spawn("storage", "freeagent-storage", services.clone())?,
        spawn(
            "scheduler",
            "freeagent-scheduler",
            with(&services, nats_env("scheduler")),
        )?,
        spawn(
            "gateway",
            "freeagent-gateway",
            with(&services, nats_env("gateway")),
        )?,
    ];
    let stop = freeagent_shared::shutdown::on_signal();
    if let Err(e) = wait_ready(&gateway_url, &mut procs, &stop).await {
        shutdown(procs).await;
        return Err(e);
    }
    for i in 0..a.workers {
        // A worker gets the gateway, NATS's address, its settings and a key to register with;
        // its NATS identity comes from registration.
        let worker = vec![
            ("FREEAGENT_GATEWAY_URL", gateway_url.clone()),
            ("FREEAGENT_NATS_URL", nats_url.clone()),
            ("FREEAGENT_API_KEY", registration_key.clone()),
            ("FREEAGENT_BUILD_COMMAND", a.build_command.clone()),
            ("FREEAGENT_WORKER_PLATFORMS", a.worker_platforms.clone()),
            (
                "FREEAGENT_WORK_DIR",
                data.join("work").display().to_string(),
            ),
            ("FREEAGENT_WORKER_NAME", format!("dev-worker-{}", i + 1)),
            // One file per worker (never this shell's one for all of them): a restarted farm's
            // workers keep their ids, and their approval when the farm requires it.
            (
                "FREEAGENT_WORKER_IDENTITY_FILE",
                data.join("work")
                    .join(format!("identity-dev-worker-{}.json", i + 1))
                    .display()
                    .to_string(),
            ),
            // Builds see none of the farm's files: objects, NATS store and credentials.
            ("FREEAGENT_SANDBOX_HIDE", hidden_from_builds(&data)),
        ];
        let worker = with(&worker, build_network_default());
        procs.push(spawn(
            &format!("worker-{}", i + 1),
            "freeagent-worker",
            worker,
        )?);
    }
    println!();
    println!(
        "Free Agent is running ({} worker{}).",
        a.workers,
        if a.workers == 1 { "" } else { "s" }
    );
    println!("  gateway    {gateway_url}");
    println!("  dashboard  {gateway_url}/ (sign in with the API key)");
    println!("  storage    {storage_endpoint}");
    match &own_nats {
        Some(n) => println!(
            "  nats       {} (auth on; set-up in {})",
            n.url,
            data.join("nats").display()
        ),
        None => println!("  nats       {nats_url} (no auth: anyone who reaches it owns the farm)"),
    }
    println!("  metrics    http://127.0.0.1:{}/metrics", a.scheduler_port);
    println!("  API key    {api_key}");
    println!();
    println!(
        "  data       {} (objects, worker scratch space; kept after Ctrl-C)",
        data.display()
    );
    println!();
    println!("Submit a build from another terminal:");
    println!("  export FREEAGENT_GATEWAY_URL={gateway_url}");
    println!("  export FREEAGENT_API_KEY={api_key}");
    println!("  freeagent submit examples/hello --platform android --wait");
    println!();
    println!("Press Ctrl-C to stop.");
    let code = tokio::select! {
        _ = stop.cancelled() => 0,
        (name, status) = first_exit(&mut procs) => {
            eprintln!("{name} exited ({status}); stopping the farm");
            1
        }
    };
    shutdown(procs).await;
    Ok(std::process::ExitCode::from(code))
}

async fn first_exit(procs: &mut [Proc]) -> (String, String) {
    loop {
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                return (p.name.clone(), status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_ready(
    gateway: &str,
    procs: &mut [Proc],
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    freeagent_shared::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{gateway}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!(
                    "{} exited during start-up ({status}); see its log above",
                    p.name
                );
            }
        }
        if stop.is_cancelled() {
            bail!("interrupted during start-up");
        }
        if Instant::now() > deadline {
            bail!("the farm was not ready after 60 s; see the logs above");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Workers first (they hand back builds), then the gateway, scheduler and storage.
async fn shutdown(mut procs: Vec<Proc>) {
    procs.reverse();
    for p in procs.iter_mut() {
        if let Some(pid) = p.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(15), p.child.wait())
            .await
            .is_err()
        {
            eprintln!("{} did not stop in time; killing it", p.name);
            let _ = p.child.kill().await;
        }
    }
}

/// The data directory, added to what the operator already hides from builds.
/// Builds get a network namespace that reaches the outside only from a root worker. A
/// developer's unprivileged `freeagent dev` gives builds no network at all, and says so: the
/// worker's own network would let them reach the farm's ports (Postgres with trust auth among
/// them). The operator may still choose `host` (or any mode) explicitly.
fn build_network_default() -> Vec<(&'static str, String)> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    });
    if root || std::env::var_os("FREEAGENT_BUILD_NETWORK").is_some() {
        return vec![];
    }
    eprintln!(
        "note: not running as root, so builds get no network (FREEAGENT_BUILD_NETWORK=none): isolating them from this machine needs root. A build that downloads (npm, gradle) needs FREEAGENT_BUILD_NETWORK=host, which also lets it reach this farm's ports: set it only for projects you trust, or run as root (docs/sandbox.md)"
    );
    vec![("FREEAGENT_BUILD_NETWORK", "none".to_owned())]
}

fn hidden_from_builds(data: &std::path::Path) -> String {
    match std::env::var("FREEAGENT_SANDBOX_HIDE") {
        Ok(extra) if !extra.is_empty() => format!("{extra}:{}", data.display()),
        _ => data.display().to_string(),
    }
}

/// Every `FREEAGENT_*` variable of this shell, sorted by name.
fn shell_settings() -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("FREEAGENT_"))
        .collect();
    s.sort();
    s
}

/// Settings a worker must never hold: secrets, keys, credentials and the database.
fn is_secret(name: &str) -> bool {
    ["SECRET", "KEY", "CREDS", "PASSWORD", "TOKEN", "DATABASE"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::is_secret;

    #[test]
    fn workers_get_settings_but_no_secret() {
        for secret in [
            "FREEAGENT_SIGNING_SECRET",
            "FREEAGENT_SIGNING_SECRET_PREVIOUS",
            "FREEAGENT_API_KEY",
            "FREEAGENT_WORKER_REGISTRATION_KEY",
            "FREEAGENT_CERTS_KEY",
            "FREEAGENT_NATS_CREDS",
            "FREEAGENT_NATS_SIGNING_KEY",
            "FREEAGENT_NATS_WORKERS_SIGNING_KEY",
            "FREEAGENT_DATABASE_URL",
        ] {
            assert!(is_secret(secret), "{secret}");
        }
        for setting in [
            "FREEAGENT_LEASE",
            "FREEAGENT_BUILD_MEMORY",
            "FREEAGENT_BUILD_DISK",
            "FREEAGENT_BUILD_INODES",
            "FREEAGENT_BUILD_NETWORK_ALLOW",
            "FREEAGENT_LOG_MAX_BYTES",
            "FREEAGENT_SANDBOX",
        ] {
            assert!(!is_secret(setting), "{setting}");
        }
    }
}
