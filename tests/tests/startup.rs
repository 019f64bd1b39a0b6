//! Start-up: migrations and the NATS set-up are safe when several services start at once, a weak bootstrap key is
//! refused (a seed operator's 16-character key starts, with a warning to rotate it), and `freeagent dev` runs the whole farm (creating its database) for the CLI.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::db;
use freeagent_tests::freeagent_shared::testing::{TestDb, free_port, wait};
use freeagent_tests::{Farm, FarmOpts, bin_dir, example};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_once() {
    let test_db = TestDb::empty().await;
    let runs = (0..6).map(|_| {
        let url = test_db.url.clone();
        tokio::spawn(async move {
            let pool = db::connect(&url, 2).await.unwrap();
            db::migrate(&pool).await
        })
    });
    for r in futures::future::join_all(runs).await {
        r.unwrap().expect("every concurrent migration run succeeds");
    }
    let counts = db::builds::build_count_by_status(&test_db.pool)
        .await
        .unwrap();
    assert!(counts.is_empty());
}

/// The replay of a lost dispatch: on a fresh NATS 2.9 server, services that connected and set up
/// the streams at the same moment raced in the server's set-up of the account, which deleted
/// the store files of a stream already made ("could not create storage streams directory",
/// then "1.blk: no such file or directory"); the stream acknowledged a dispatch that no pull
/// could ever receive. About one fresh server in a hundred without the lock; each round here
/// is a fresh server and four services taking the lock as the gateway and schedulers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_setting_up_nats_together_lose_no_dispatch() {
    use freeagent_tests::freeagent_shared::db::nats_setup_lock::NatsSetupLock;
    use freeagent_tests::freeagent_shared::nats;
    use freeagent_tests::freeagent_shared::status::QueueName;
    use freeagent_tests::freeagent_shared::testing::TestNats;
    use futures::StreamExt;
    let test_db = TestDb::new().await;
    for round in 0..40 {
        let server = TestNats::start().await;
        let services = (0..4).map(|_| {
            let (server, pool) = (server.clone(), test_db.pool.clone());
            async move {
                let lock = NatsSetupLock::acquire(&pool, Duration::from_secs(30))
                    .await
                    .unwrap();
                let client = server.client().await;
                let js = async_nats::jetstream::new(client.clone());
                nats::ensure_streams(&js, &Default::default())
                    .await
                    .unwrap();
                lock.release().await.unwrap();
                client
            }
        });
        let clients = futures::future::join_all(services).await;
        let js = async_nats::jetstream::new(clients[0].clone());
        let queue = QueueName::parse("ios").unwrap();
        let consumer = nats::ensure_queue_consumer(&js, &queue).await.unwrap();
        js.publish("builds.dispatch.ios", "dispatch".into())
            .await
            .unwrap()
            .await
            .unwrap();
        let mut pull = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .unwrap();
        let got = pull.next().await;
        let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("[ERR]")).collect();
        assert!(
            matches!(got, Some(Ok(_))) && errors.is_empty(),
            "round {round}: the dispatch was not delivered ({:?}); server errors: {errors:#?}",
            got.map(|m| m.map(|_| ()))
        );
    }
}

#[test]
fn the_gateway_refuses_a_short_bootstrap_key() {
    let out = Command::new(bin_dir().join("freeagent-gateway"))
        .env("FREEAGENT_API_KEY", "tooShortKey9")
        .env("FREEAGENT_LOG_FORMAT", "text")
        .output()
        .expect("run gateway");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FREEAGENT_API_KEY") && err.contains("at least 32") && err.contains("16"),
        "{err}"
    );
    assert!(
        !err.contains("tooShortKey9"),
        "the key itself must not be printed: {err}"
    );
}

/// The seed accepted API keys of 16 characters: an operator who moves keeps the key every CLI
/// and Mac holds. It works, and the gateway says at start (without printing it) to rotate it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_key_of_16_characters_starts_the_gateway_with_a_warning_to_rotate_it() {
    const SEED_KEY: &str = "seed-key-16chars";
    let mut farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    farm.restart_with("gateway", &[("FREEAGENT_API_KEY", SEED_KEY)]);
    let url = format!("{}/api/builds/statistics", farm.gateway);
    let status = wait::until("the gateway to answer", Duration::from_secs(30), || {
        let (http, url) = (farm.http.clone(), url.clone());
        async move {
            let r = http
                .get(&url)
                .header("x-api-key", SEED_KEY)
                .send()
                .await
                .ok()?;
            Some(r.status())
        }
    })
    .await;
    assert_eq!(status, 200, "the seed's key reads");
    // The seed CLI's way of submitting works with it too.
    let r = farm
        .http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", SEED_KEY)
        .multipart(
            reqwest::multipart::Form::new()
                .text("platform", "android")
                .part(
                    "source",
                    reqwest::multipart::Part::bytes(freeagent_tests::pack(&example("hello")))
                        .file_name("app.tar.gz"),
                ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let log = farm.log_of("gateway");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("shorter than 32") && l.contains("rotate")),
        "a warning to rotate the key: {log}"
    );
    assert!(!log.contains(SEED_KEY), "the key itself is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeagent_dev_runs_a_build_for_the_cli() {
    // A database name that does not exist yet: `dev` creates it. The TestDb owns its removal.
    let holder = TestDb::empty().await;
    let url = format!("{}_dev", holder.url);
    let data = tempfile::tempdir().unwrap();
    let (gp, sp, cp) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let key = "fak_cli-dev-test-key-cli-dev-test-key-123";
    let gateway = format!("http://127.0.0.1:{gp}");
    let mut dev = Command::new(bin_dir().join("freeagent"))
        .args(["dev", "--workers", "1", "--data-dir"])
        .arg(data.path())
        .args([
            "--gateway-port",
            &gp.to_string(),
            "--storage-port",
            &sp.to_string(),
            "--scheduler-port",
            &cp.to_string(),
        ])
        .env("FREEAGENT_API_KEY", key)
        .env("FREEAGENT_DATABASE_URL", &url)
        .env("FREEAGENT_LOG_FORMAT", "text")
        // The operator's settings reach the services (a small certs limit, checked below) and
        // a secret set in this shell reaches no worker.
        .env("FREEAGENT_CERTS_LIMIT", "1KiB")
        .env("FREEAGENT_CERTS_KEY", "c".repeat(64))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    freeagent_shared::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    wait::until(
        "freeagent dev to be ready",
        Duration::from_secs(60),
        || async {
            http.get(format!("{gateway}/readyz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        },
    )
    .await;
    let cli = |args: &[&str]| {
        Command::new(bin_dir().join("freeagent"))
            .args(args)
            .env("FREEAGENT_API_KEY", key)
            .env("FREEAGENT_GATEWAY_URL", &gateway)
            .output()
            .unwrap()
    };
    let form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .part(
            "source",
            reqwest::multipart::Part::bytes(freeagent_tests::pack(&example("hello")))
                .file_name("s.tar.gz"),
        )
        .part(
            "certs",
            reqwest::multipart::Part::bytes(vec![0u8; 4096]).file_name("certs.zip"),
        );
    let r = http
        .post(format!("{gateway}/api/builds"))
        .header("x-api-key", key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "FREEAGENT_CERTS_LIMIT reached the gateway");
    let example = example("hello");
    let out = cli(&[
        "submit",
        example.to_str().unwrap(),
        "--platform",
        "android",
        "--wait",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "completed");
    let id = last["id"].as_str().unwrap();
    let target = data.path().join("hello.apk");
    let out = cli(&["download", id, "-o", target.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = String::from_utf8_lossy(&out.stdout);
    assert!(saved.contains("verified"), "{saved}");
    assert!(std::fs::metadata(&target).unwrap().len() > 0);
    // dev ran its own nats-server with auth; its worker holds no farm secret.
    assert!(data.path().join("nats/server.conf").is_file());
    let workers = children_named(dev.id(), "freeagent-worker");
    assert_eq!(workers.len(), 1, "one worker process");
    let environ = std::fs::read(format!("/proc/{}/environ", workers[0])).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for secret in [
        "FREEAGENT_SIGNING_SECRET",
        "FREEAGENT_DATABASE_URL",
        "FREEAGENT_NATS_CREDS",
        "FREEAGENT_NATS_SIGNING_KEY",
        "FREEAGENT_NATS_WORKERS_SIGNING_KEY",
        "FREEAGENT_NATS_OPERATOR_KEY",
        "FREEAGENT_CERTS_KEY",
    ] {
        assert!(!environ.contains(secret), "the worker was given {secret}");
    }
    assert!(
        !environ.contains(key),
        "the worker was given the bootstrap API key"
    );
    let out = cli(&["logs", id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("artifact: hello.apk"));
    let out = cli(&["status", "not-a-build"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));

    // Ctrl-C stops every process of the farm.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut printed = dev.stdout.take().unwrap();
    let status = tokio::task::spawn_blocking(move || dev.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    // It said which of the shell's settings it applied, by name, never a value.
    let mut printed_text = String::new();
    std::io::Read::read_to_string(&mut printed, &mut printed_text).unwrap();
    let settings = printed_text
        .lines()
        .find(|l| l.contains("Settings from this shell"))
        .unwrap_or_else(|| panic!("{printed_text}"));
    assert!(settings.contains("FREEAGENT_CERTS_LIMIT"), "{settings}");
    // The lines to paste into another shell for the CLI, and where the farm keeps its data.
    assert!(
        printed_text.contains(&format!("export FREEAGENT_GATEWAY_URL={gateway}\n")),
        "{printed_text}"
    );
    assert!(
        printed_text.contains(&format!("export FREEAGENT_API_KEY={key}\n")),
        "{printed_text}"
    );
    let data_dir = std::fs::canonicalize(data.path()).unwrap();
    assert!(
        printed_text.contains(&format!("data       {}", data_dir.display())),
        "{printed_text}"
    );
    assert!(
        !printed_text.contains(&"c".repeat(64)),
        "a secret was printed"
    );
    assert!(
        http.get(format!("{gateway}/healthz")).send().await.is_err(),
        "the gateway is still up"
    );
    // Drop the database dev created.
    let admin = db::connect(&holder.url, 1).await.unwrap();
    let name = url.rsplit('/').next().unwrap();
    drop(admin);
    let _ = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-c",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .output();
}

/// Pids of the children of `parent` whose executable is named `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or_default();
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == parent && name.starts_with(comm) {
            out.push(pid);
        }
    }
    out
}

/// A first start: storage comes up before any service has migrated the database. It must say
/// so at info level and wait, with no WARN the operator cannot act on, and start retention once
/// the tables exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_before_the_migrations_warns_of_nothing() {
    let test_db = TestDb::empty().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let log = dir.path().join("storage.log");
    let child = Command::new(bin_dir().join("freeagent-storage"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FREEAGENT_DATABASE_URL", &test_db.url)
        .env("FREEAGENT_STORAGE_PORT", port.to_string())
        .env("FREEAGENT_BIND", "127.0.0.1")
        .env("FREEAGENT_STORAGE_URL", dir.path().join("objects"))
        .env(
            "FREEAGENT_SIGNING_SECRET",
            "a-test-signing-secret-of-enough-length-0123",
        )
        .env("FREEAGENT_CERTS_KEY", "b".repeat(64))
        .env("FREEAGENT_RETENTION", "30d")
        .env("FREEAGENT_RETENTION_INTERVAL", "1s")
        .env("FREEAGENT_LOG_FORMAT", "text")
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ))
        .spawn()
        .expect("start storage");
    // Stopped however the test ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Stop(child);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait::until(
        "storage to notice the database is not migrated",
        Duration::from_secs(30),
        || async { read().contains("not migrated yet").then_some(()) },
    )
    .await;
    db::migrate(&test_db.pool).await.unwrap();
    // Retention then runs: its statistics of the store appear in /metrics.
    let http = reqwest::Client::new();
    wait::until(
        "retention's first pass",
        Duration::from_secs(30),
        || async {
            let m = http
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            m.contains("freeagent_storage_objects").then_some(())
        },
    )
    .await;
    drop(child);
    let text = read();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        warnings.is_empty(),
        "a first start warned: {warnings:#?}\n{text}"
    );
}
