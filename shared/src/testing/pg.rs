//! `TestPg`: a private PostgreSQL cluster (initdb in a temporary directory, a free port), for
//! tests that stop or restart the database, and its synchronous streaming standby, for tests of a
//! failover. Stopped and removed on `Drop`.

use super::TestDb;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct TestPg {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .expect("tests that restart Postgres need its server binaries (apt-get install postgresql)")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs a Postgres tool as the `postgres` user when we are root (initdb refuses root).
fn run(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let exe = bin.join(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

impl TestPg {
    pub fn start() -> Self {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        // The server runs as `postgres`: let it into the directory.
        let _ = Command::new("chmod").arg("0777").arg(dir.path()).status();
        let data = dir.path().join("data");
        let data_s = data.to_string_lossy().into_owned();
        let out = run(
            &bin,
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestPg {
            port: super::free_port().expect("free port"),
            dir,
            bin,
        }
        .boot()
    }

    fn boot(mut self) -> Self {
        for _ in 0..5 {
            if self.ctl(&["start"]) {
                return self;
            }
            // The port was taken between choosing and binding it: pick another.
            self.port = super::free_port().expect("free port");
        }
        panic!(
            "the private Postgres did not start; see {}",
            self.dir.path().join("pg.log").display()
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    /// One value from `sql` on this server's `postgres` database; `None` if it cannot answer.
    fn query(&self, sql: &str) -> Option<String> {
        let port = self.port.to_string();
        let out = run(
            &self.bin,
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atc",
                sql,
            ],
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn wait_for(&self, what: &str, sql: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.query(sql).as_deref() != Some(want) {
            assert!(
                Instant::now() < deadline,
                "{what}: `{sql}` never gave {want}; see {}",
                self.dir.path().join("pg.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a streaming standby of this cluster, on a port of its own, and makes it
    /// synchronous: from then on a commit here returns only once the standby has it, so nothing
    /// committed is lost with this server. (initdb's `pg_hba.conf` already trusts replication
    /// from 127.0.0.1; `wal_level=replica` and `max_wal_senders` are the defaults.)
    pub fn start_standby(&self) -> TestPg {
        let dir = tempfile::tempdir().expect("temp dir");
        let _ = Command::new("chmod").arg("0777").arg(dir.path()).status();
        let data = dir.path().join("data").to_string_lossy().into_owned();
        let port = self.port.to_string();
        let out = run(
            &self.bin,
            "pg_basebackup",
            &[
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
            ],
        );
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let standby = TestPg {
            port: super::free_port().expect("free port"),
            dir,
            bin: self.bin.clone(),
        }
        .boot();
        self.wait_for(
            "the standby to stream",
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            "1",
        );
        self.query("ALTER SYSTEM SET synchronous_standby_names = '*'")
            .expect("make the standby synchronous");
        self.query("SELECT pg_reload_conf()").expect("reload");
        self.wait_for(
            "the standby to be synchronous",
            "SELECT sync_state FROM pg_stat_replication",
            "sync",
        );
        standby
    }

    /// Starts a standby (`start_standby`) and points `db`, a database of this cluster, at both
    /// servers: its URL lists this one then the standby, as the services get it, and its pool
    /// follows a promotion.
    pub async fn add_standby(&self, db: &mut TestDb) -> TestPg {
        let standby = self.start_standby();
        db.url = self.with_standby(&standby, &db.url);
        db.pool = crate::db::connect(&db.url, super::TEST_DATABASE_POOL)
            .await
            .expect("connect to the primary and its standby");
        standby
    }

    /// `url`, a database on this server, with `standby` listed after it.
    pub fn with_standby(&self, standby: &TestPg, url: &str) -> String {
        let me = format!("127.0.0.1:{}", self.port);
        assert!(url.contains(&me), "{url} is not a database of this server");
        url.replacen(&me, &format!("{me},127.0.0.1:{}", standby.port), 1)
    }

    /// The URL of database `name` on this server alone.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Promotes this standby and waits until it accepts writes.
    pub fn promote(&self) {
        let out = run(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-w", "-t", "30", "promote"],
        );
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_for("the promotion", "SELECT pg_is_in_recovery()", "f");
    }

    /// SIGKILLs the postmaster and every process it started, as when its machine is lost: no
    /// shutdown, no last word to clients or to the standby.
    pub fn kill(&self) {
        let pid_file = Path::new(&self.data()).join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .expect("the private Postgres is running");
        let mut pids = vec![pid.clone()];
        pids.extend(children_of(&pid));
        let _ = Command::new("kill").arg("-KILL").args(&pids).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "the killed Postgres still listens"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ctl(&self, action: &[&str]) -> bool {
        let data = self.data();
        let log = self
            .dir
            .path()
            .join("pg.log")
            .to_string_lossy()
            .into_owned();
        let sock = self.dir.path().to_string_lossy().into_owned();
        let opts = format!(
            "-p {} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port
        );
        let mut args = vec!["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "30"];
        args.extend_from_slice(action);
        run(&self.bin, "pg_ctl", &args).status.success()
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A fast restart: open connections are cut, as in a real outage.
    pub fn restart(&self) {
        assert!(
            self.ctl(&["-m", "fast", "restart"]),
            "the private Postgres did not restart"
        );
    }

    pub fn stop(&self) {
        self.ctl(&["-m", "immediate", "stop"]);
    }

    pub fn start_again(&self) {
        assert!(
            self.ctl(&["start"]),
            "the private Postgres did not start again"
        );
    }
}

/// The pids whose parent is `parent` (a postmaster's backends and helpers).
fn children_of(parent: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`: the command may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid == parent).then(|| pid.to_string())
        })
        .collect()
}

impl Drop for TestPg {
    fn drop(&mut self) {
        self.stop();
    }
}
