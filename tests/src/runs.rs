//! Exactly-once checks for the tests that kill processes and hosts mid-run: each build's run
//! reports itself to the test over TCP, and every build must end completed with one completed
//! attempt and one finished command.

use crate::freeagent_shared::db;
use crate::freeagent_shared::status::BuildStatus;
use crate::{Farm, project};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Every run of a build that completed, by build id, as the builds told this test over TCP.
/// Sandboxed, a build cannot write to the test's files, but it reaches the network (the
/// sandbox leaves it open): a run sends its build id and waits for `recorded`, so it is counted
/// before its command ends, as an append to a shared file was.
pub struct Runs {
    ip: std::net::Ipv4Addr,
    port: u16,
    pub done: Arc<Mutex<Vec<String>>>,
}

impl Runs {
    pub async fn start() -> Runs {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST).await
    }

    /// Listening on `ip`: for builds on hosts of their own (`hosts::Hosts::own_addr`).
    pub async fn start_on(ip: std::net::Ipv4Addr) -> Runs {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let done = Arc::new(Mutex::new(Vec::new()));
        let sink = done.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut line = String::new();
                    let got = tokio::io::BufReader::new(read).read_line(&mut line).await;
                    if got.is_ok() && line.ends_with('\n') {
                        sink.lock().unwrap().push(line.trim_end().to_owned());
                        let _ = write.write_all(b"recorded\n").await;
                    }
                });
            }
        });
        Runs { ip, port, done }
    }

    /// A build that writes its artifact, then records that its run completed (and fails if it
    /// could not).
    pub fn recorder(&self) -> tempfile::TempDir {
        self.recorder_after("")
    }

    /// The same, running `script` first (its output is the build's log).
    pub fn recorder_after(&self, script: &str) -> tempfile::TempDir {
        project(&format!(
            "{script}echo \"$FREEAGENT_BUILD_ID\" > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n\
             exec bash -c 'exec 3<>/dev/tcp/{}/{} && echo \"$FREEAGENT_BUILD_ID\" >&3 && read -r ack <&3 && [ \"$ack\" = recorded ]'\n",
            self.ip, self.port
        ))
    }
}

/// Builds in a terminal state.
pub async fn terminal_count(farm: &Farm) -> i64 {
    let counts = db::builds::build_count_by_status(&farm.db.pool)
        .await
        .unwrap_or_default();
    counts
        .iter()
        .filter(|(s, _)| s.is_terminal())
        .map(|(_, n)| n)
        .sum()
}

/// Every build completed, with exactly one completed attempt, and its command finished once.
pub async fn assert_exactly_once(farm: &Farm, ids: &[String], runs: &Runs) {
    let counts = db::builds::build_count_by_status(&farm.db.pool)
        .await
        .unwrap();
    assert_eq!(
        counts,
        vec![(BuildStatus::Completed, ids.len() as i64)],
        "every build must complete"
    );
    let mut done: HashMap<String, usize> = HashMap::new();
    for id in runs.done.lock().unwrap().iter() {
        *done.entry(id.clone()).or_default() += 1;
    }
    for id in ids {
        let attempts = db::builds::build_attempts(&farm.db.pool, id.parse().unwrap())
            .await
            .unwrap();
        let completed = attempts
            .iter()
            .filter(|a| a.outcome.as_deref() == Some("completed"))
            .count();
        assert_eq!(completed, 1, "build {id}: {attempts:?}");
        if done.get(id).copied() != Some(1) {
            panic!(
                "build {id} ran to completion {:?} times\nattempts: {attempts:?}\n{}",
                done.get(id),
                farm.trace(id)
            );
        }
    }
    assert_eq!(done.len(), ids.len());
}

/// Each build of `ids` (made by `Runs::recorder_after` with a script that prints
/// `line <i> of <id>` for i in 1..=`lines`) kept every line of its log, and its artifact is the
/// one its run wrote, with the SHA-256 the farm reports.
pub async fn assert_whole_logs_and_artifacts(farm: &Farm, ids: &[String], lines: usize) {
    use sha2::{Digest, Sha256};
    for id in ids {
        let log = farm.all_logs(id).await;
        for i in 1..=lines {
            let line = format!("line {i} of {id}");
            assert!(log.contains(&line), "build {id} lost {line:?}: {log:?}");
        }
        let resp = farm.get_api(&format!("/api/builds/{id}/download")).await;
        assert_eq!(resp.status(), 200, "artifact of {id}");
        let reported = resp.headers()["x-checksum-sha256"]
            .to_str()
            .expect("a checksum header")
            .to_owned();
        let body = resp.bytes().await.expect("the artifact");
        assert_eq!(
            body.as_ref(),
            format!("{id}\n").as_bytes(),
            "artifact of {id}"
        );
        assert_eq!(hex::encode(Sha256::digest(&body)), reported);
    }
}
