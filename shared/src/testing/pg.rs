//! `TestPg`: a private PostgreSQL cluster (initdb in a temporary directory, a free port), for
//! tests that stop or restart the database. Stopped and removed on `Drop`.

use std::path::{Path, PathBuf};
use std::process::Command;

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
        let mut pg = TestPg {
            port: super::free_port().expect("free port"),
            dir,
            bin,
        };
        for _ in 0..5 {
            if pg.ctl(&["start"]) {
                return pg;
            }
            // The port was taken between choosing and binding it: pick another.
            pg.port = super::free_port().expect("free port");
        }
        panic!(
            "the private Postgres did not start; see {}",
            pg.dir.path().join("pg.log").display()
        );
    }

    fn ctl(&self, action: &[&str]) -> bool {
        let data = self.dir.path().join("data").to_string_lossy().into_owned();
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

impl Drop for TestPg {
    fn drop(&mut self) {
        self.stop();
    }
}
