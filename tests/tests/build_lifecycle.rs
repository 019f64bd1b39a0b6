//! A build's whole life through the real binaries: submit over HTTP, a worker builds it, the
//! artifact downloads with the checksum the API reports, and the log holds the command's output.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::{API_KEY, Farm, FarmOpts, example, project};
use sha2::{Digest, Sha256};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_builds_to_a_downloadable_artifact() {
    let farm = Farm::start(FarmOpts::default()).await;
    let submitted = farm.submit_dir(&example("hello"), "android").await;
    assert_eq!(submitted["status"], "pending");
    let id = submitted["id"].as_str().unwrap().to_owned();
    let token = submitted["access_token"].as_str().unwrap().to_owned();

    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempt"], 1);
    assert_eq!(b["has_result"], true);
    let artifact = b["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"].as_str().unwrap().ends_with(".apk"))
        .unwrap()
        .clone();

    // Download with the build token, as a submitter without the API key would.
    let resp = farm
        .http
        .get(format!("{}/api/builds/{id}/download", farm.gateway))
        .header("x-build-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let header_sha = resp.headers()["x-checksum-sha256"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("{id}.apk"))
    );
    let bytes = resp.bytes().await.unwrap();
    let actual = hex::encode(Sha256::digest(&bytes));
    assert_eq!(actual, header_sha);
    assert_eq!(actual, artifact["sha256"].as_str().unwrap());
    assert_eq!(bytes.len() as u64, artifact["size"].as_u64().unwrap());

    // Ranges pass through the gateway.
    let part = farm
        .http
        .get(format!("{}/api/builds/{id}/download", farm.gateway))
        .header("x-api-key", API_KEY)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[..10]);

    // The log holds the build command's output, in order.
    let logs: serde_json::Value = farm
        .http
        .get(format!("{}/api/builds/{id}/logs", farm.gateway))
        .header("x-build-token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lines: Vec<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("building {id} for android"))),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("artifact: hello.apk")),
        "{lines:?}"
    );
    let seqs: Vec<u64> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // Paging resumes after the last line.
    let after = seqs[1];
    let page: serde_json::Value = farm
        .http
        .get(format!(
            "{}/api/builds/{id}/logs?after={after}&limit=1",
            farm.gateway
        ))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["logs"].as_array().unwrap().len(), 1);
    assert_eq!(page["logs"][0]["seq"].as_u64().unwrap(), seqs[2]);

    // The status shape old clients poll: epoch milliseconds.
    let status: serde_json::Value = farm
        .http
        .get(format!("{}/api/builds/{id}/status", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "completed");
    assert!(status["completed_at"].as_i64().unwrap() >= status["started_at"].as_i64().unwrap());

    // The list and /health agree.
    let list: serde_json::Value = farm
        .http
        .get(format!("{}/api/builds?status=completed", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "a bare array: {list}"
    );
    assert_eq!(list[0]["id"], id.as_str());
    let health: serde_json::Value = farm
        .http
        .get(format!("{}/health", farm.gateway))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["queue"]["pending"], 0);
    assert_eq!(health["storage"]["objects"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_command_ends_failed_with_its_error_and_log() {
    let farm = Farm::start(FarmOpts::default()).await;
    let dir = project("echo 'compiling...'\necho 'error: missing semicolon' >&2\nexit 3\n");
    let id = farm.submit_dir(dir.path(), "ios").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["error_message"], "build command exited with status 3");
    assert_eq!(b["has_result"], false);
    let logs: serde_json::Value = farm
        .http
        .get(format!("{}/api/builds/{id}/logs", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lines: Vec<(&str, &str)> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["level"].as_str().unwrap(), l["message"].as_str().unwrap()))
        .collect();
    assert!(lines.contains(&("info", "compiling...")), "{lines:?}");
    assert!(
        lines.contains(&("warn", "error: missing semicolon")),
        "{lines:?}"
    );
    // A failed build has no result to download.
    let r = farm
        .http
        .get(format!("{}/api/builds/{id}/download", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "Build not completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_without_an_artifact_fails_clearly() {
    let farm = Farm::start(FarmOpts::default()).await;
    let dir = project("echo 'built nothing'\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "failed");
    assert!(
        b["error_message"].as_str().unwrap().contains("no artifact"),
        "{b}"
    );
}

/// A build submitted before any worker of its queue exists (so before the queue's consumer
/// exists) runs as soon as one registers, without waiting for a re-dispatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_submitted_before_any_worker_runs_when_one_registers() {
    let mut farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let dir = project("echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    freeagent_tests::freeagent_shared::testing::wait::until(
        "the build to be dispatched",
        Duration::from_secs(30),
        || async {
            freeagent_tests::freeagent_shared::db::builds::build_get(
                &farm.db.pool,
                id.parse().unwrap(),
            )
            .await
            .unwrap()
            .filter(|b| b.dispatched_at.is_some())
        },
    )
    .await;
    farm.spawn_worker(0);
    // Well within FREEAGENT_REDISPATCH_AFTER (60 s): the first dispatch itself reaches it.
    let b = farm.wait_terminal(&id, Duration::from_secs(40)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempt"], 1, "{b}");
}

/// The CLI's build verbs against a real farm: `list` with filters and paging (counts and the
/// next page's cursor on stderr, the table on stdout), `cancel`, `retry` (the new id on stdout,
/// its token only with --json), and `logs` into a reader that stops early (`| head`) ends
/// quietly instead of panicking on the closed pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_cancels_and_retries_builds() {
    use freeagent_tests::bin_dir;
    let farm = Farm::start(FarmOpts::default()).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin_dir().join("freeagent"))
            .args(args)
            .env_remove("FREEAGENT_BUILD_TOKEN")
            .env("FREEAGENT_API_KEY", API_KEY)
            .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        (text(&out.stdout), text(&out.stderr))
    };
    // A long log, and a build that runs until cancelled.
    let chatty =
        project("seq 1 5000 | sed 's/^/line /'\necho built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let chatty = farm.submit_dir(chatty.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = farm.wait_terminal(&chatty, Duration::from_secs(120)).await;
    assert_eq!(b["status"], "completed", "{b}");
    let slow = project("sleep 600\n");
    let slow = farm.submit_dir(slow.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (table, counts) = cli(&["list", "--limit", "1"]);
    assert_eq!(table.lines().count(), 2, "a header and one build: {table}");
    assert!(table.contains(&slow), "newest first: {table}");
    assert!(counts.contains("1 of 2 builds"), "{counts}");
    let cursor = counts
        .lines()
        .find_map(|l| l.strip_prefix("next page: --cursor "))
        .unwrap_or_else(|| panic!("{counts}"));
    let (next, _) = cli(&["list", "--limit", "1", "--cursor", cursor]);
    assert!(next.contains(&chatty), "the second page: {next}");
    let (done, _) = cli(&["list", "--status", "completed", "--json"]);
    let done: serde_json::Value = serde_json::from_str(&done).unwrap();
    assert_eq!(done.as_array().unwrap().len(), 1, "{done}");
    assert_eq!(done[0]["id"], chatty.as_str());

    let (cancelled, _) = cli(&["cancel", &slow]);
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    assert_eq!(farm.get_build(&slow).await["status"], "cancelled");
    let (retried, said) = cli(&["retry", &slow]);
    let new_id = retried.trim();
    assert_eq!(
        farm.get_build(new_id).await["original_build_id"],
        slow.as_str()
    );
    assert!(
        !retried.contains("fab_") && !said.contains("fab_"),
        "no token unless asked"
    );
    let (_, _) = cli(&["cancel", new_id]);

    // `freeagent logs <id> | head -n 1`: the reader stops after one line.
    let piped = std::process::Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "{} logs {chatty} | head -n 1",
                bin_dir().join("freeagent").display()
            ),
        ])
        .env("FREEAGENT_API_KEY", API_KEY)
        .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(piped.status.success(), "{:?}: {stderr}", piped.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&piped.stdout).lines().count(), 1);
}

/// `freeagent completions <shell>` prints a script that completes the CLI's own verbs, and a
/// reader that stops early (`| head`) ends it quietly.
#[test]
fn the_cli_prints_shell_completions() {
    use freeagent_tests::bin_dir;
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(bin_dir().join("freeagent"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for verb in ["submit", "logs", "keys", "workers"] {
            assert!(script.contains(verb), "{shell}: no {verb}");
        }
    }
    let piped = std::process::Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "{} completions bash | head -n 1",
                bin_dir().join("freeagent").display()
            ),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(piped.status.success(), "{:?}: {stderr}", piped.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The CLI's exit codes tell endings apart (the README's table), and with `--json` its errors are
/// JSON on stderr in the gateway's own shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exit_codes_tell_endings_apart() {
    use freeagent_tests::bin_dir;
    let farm = Farm::start(FarmOpts::default()).await;
    let run = |gateway: &str, key: Option<&str>, args: &[&str]| {
        let mut cmd = std::process::Command::new(bin_dir().join("freeagent"));
        cmd.args(args)
            .env_remove("FREEAGENT_BUILD_TOKEN")
            .env_remove("FREEAGENT_API_KEY")
            .env("FREEAGENT_GATEWAY_URL", gateway);
        if let Some(k) = key {
            cmd.env("FREEAGENT_API_KEY", k);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let gw = farm.gateway.as_str();
    // A failed build, a cancelled one.
    let failing = project("exit 3\n");
    let failing_path = failing.path().display().to_string();
    let (code, _) = run(
        gw,
        Some(API_KEY),
        &["submit", &failing_path, "-p", "android", "--wait"],
    );
    assert_eq!(code, Some(1), "a failed build");
    let slow = project("sleep 600\n");
    let slow = farm.submit_dir(slow.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let watcher = {
        let (gw, slow) = (gw.to_owned(), slow.clone());
        std::thread::spawn(move || {
            std::process::Command::new(bin_dir().join("freeagent"))
                .args(["watch", &slow])
                .env("FREEAGENT_API_KEY", API_KEY)
                .env("FREEAGENT_GATEWAY_URL", &gw)
                .output()
                .unwrap()
                .status
                .code()
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // Following with a timeout stops following (124) and leaves the build running.
    let (code, stderr) = run(gw, Some(API_KEY), &["logs", "-f", &slow, "--timeout", "1s"]);
    assert_eq!(code, Some(124), "{stderr}");
    assert!(stderr.contains("it goes on"), "{stderr}");
    assert_eq!(run(gw, Some(API_KEY), &["cancel", &slow]).0, Some(0));
    assert_eq!(watcher.join().unwrap(), Some(3), "a cancelled build");
    // Usage: an id the gateway does not know.
    let unknown = "01a24d7c-b1be-73f7-aefc-9f5a77729504";
    assert_eq!(run(gw, Some(API_KEY), &["status", unknown]).0, Some(2));
    // Auth: no key, a wrong key (JSON on stderr with --json).
    assert_eq!(run(gw, None, &["list"]).0, Some(4));
    let (code, stderr) = run(gw, Some("fak_wrong"), &["list", "--json"]);
    assert_eq!(code, Some(4), "{stderr}");
    let body: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
    assert!(
        body["error"].is_string() && body["code"].is_string(),
        "{body}"
    );
    // Infrastructure: no gateway there.
    let (code, stderr) = run("http://127.0.0.1:9", Some(API_KEY), &["list", "--json"]);
    assert_eq!(code, Some(5), "{stderr}");
    let body: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(body["code"], "unreachable", "{body}");
}

/// `freeagent doctor` checks this machine against a running farm and says what to fix: all
/// pass with the farm's key; a wrong key fails the credentials check (exit 4, with the fix); no
/// gateway fails the first check (exit 5); `--json` gives every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeagent_doctor_checks_the_farm_and_says_what_to_fix() {
    use freeagent_tests::bin_dir;
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let doctor = |gateway: &str, key: &str, json: bool| {
        let mut cmd = std::process::Command::new(bin_dir().join("freeagent"));
        cmd.arg("doctor")
            .env_remove("FREEAGENT_BUILD_TOKEN")
            .env("FREEAGENT_API_KEY", key)
            .env("FREEAGENT_GATEWAY_URL", gateway);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = doctor(&farm.gateway, API_KEY, false);
    assert_eq!(code, Some(0), "{out}");
    for check in ["gateway", "ready", "clock", "credentials", "version"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "{check}: {out}"
        );
    }
    let (code, out) = doctor(&farm.gateway, "fak_wrong", false);
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("FAIL credentials") && out.contains("FREEAGENT_API_KEY"),
        "{out}"
    );
    let (code, out) = doctor("http://127.0.0.1:9", API_KEY, true);
    assert_eq!(code, Some(5), "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["checks"][0]["check"], "gateway", "{report}");
    assert!(report["checks"][0]["hint"].is_string(), "{report}");
}

/// Profiles in the config file stand in for flags: with a current profile holding the gateway,
/// the key and a default platform, `freeagent submit <dir> --wait` needs nothing else; the
/// environment still wins over the profile; the file is private and `config list` masks keys.
/// `submit` leaves home what the project ignores (and `.git`), says what it packed, takes
/// `--meta`, prints data on stdout and words on stderr, and refuses a file that is no archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_its_settings_from_a_profile_and_leaves_ignored_files_home() {
    use freeagent_tests::bin_dir;
    use std::os::unix::fs::PermissionsExt;
    let farm = Farm::start(FarmOpts::default()).await;
    let home = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(bin_dir().join("freeagent"));
        cmd.args(args)
            .env_remove("FREEAGENT_BUILD_TOKEN")
            .env_remove("FREEAGENT_API_KEY")
            .env_remove("FREEAGENT_GATEWAY_URL")
            .env_remove("FREEAGENT_PROFILE")
            .env_remove("FREEAGENT_CONFIG")
            .env("XDG_CONFIG_HOME", home.path())
            .current_dir(home.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (key, value) in [
        ("gateway", farm.gateway.as_str()),
        ("api-key", API_KEY),
        ("platform", "android"),
    ] {
        let (code, _, err) = cli(&["config", "set", key, value, "--profile", "farm"], &[]);
        assert_eq!(code, Some(0), "{err}");
    }
    assert_eq!(cli(&["config", "use", "farm"], &[]).0, Some(0));
    let file = home.path().join("freeagent/config.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (_, listed, _) = cli(&["config", "list"], &[]);
    assert!(
        listed.contains("* farm") && !listed.contains(API_KEY),
        "{listed}"
    );
    let (_, gw, _) = cli(&["config", "get", "gateway"], &[]);
    assert_eq!(gw.trim(), farm.gateway);

    // What the project ignores stays home: the build fails if node_modules or .git arrived.
    let dir = project(
        "test ! -e node_modules && test ! -e .git && test -e src/app.js
         echo ok > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
    );
    for (p, text) in [
        (".gitignore", "node_modules/\n"),
        ("node_modules/dep/index.js", "dependency"),
        (".git/HEAD", "ref: refs/heads/main"),
        ("src/app.js", "app"),
    ] {
        let p = dir.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let path = dir.path().display().to_string();
    let (code, out, err) = cli(&["submit", &path, "--wait", "--meta", "ticket=42"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("packed 3 files"), "{err}");
    // Data on stdout (the id), words and the statuses on stderr; no token unless asked.
    let id = out.lines().next().unwrap().trim().to_owned();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(err.contains("completed"), "{err}");
    assert_eq!(farm.get_build(&id).await["metadata"]["ticket"], "42");
    // Downloads take the gateway's name, never replace a file unless told, and speak JSON.
    let (code, out, err) = cli(&["download", &id, "--json"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let saved: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(saved["path"], format!("{id}.apk"), "{saved}");
    assert_eq!(saved["verified"], true, "{saved}");
    assert!(home.path().join(format!("{id}.apk")).is_file());
    let (code, _, err) = cli(&["download", &id], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(cli(&["download", &id, "--force"], &[]).0, Some(0));
    // A download cut off resumes from its .part; a .part that is not the file's start fails the
    // checksum, is removed, and the next run starts over.
    std::fs::write(home.path().join("resumed.apk.part"), "o").unwrap();
    let (code, _, err) = cli(&["download", &id, "-o", "resumed.apk"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("resuming resumed.apk at 1 bytes"), "{err}");
    assert_eq!(
        std::fs::read(home.path().join("resumed.apk")).unwrap(),
        b"ok\n"
    );
    std::fs::write(home.path().join("bad.apk.part"), "X").unwrap();
    let (code, _, err) = cli(&["download", &id, "-o", "bad.apk"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!home.path().join("bad.apk.part").exists());
    assert_eq!(cli(&["download", &id, "-o", "bad.apk"], &[]).0, Some(0));
    let (code, out, _) = cli(&["logs", &id, "--json"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.lines().count() > 0);
    for line in out.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(entry["message"].is_string(), "{entry}");
    }
    // A file that is not an archive is refused before anything is sent.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not an archive").unwrap();
    let (code, _, err) = cli(&["submit", notes.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not an archive"), "{err}");
    // The environment wins over the profile; an unknown profile is a usage error.
    let (code, _, _) = cli(
        &["list"],
        &[("FREEAGENT_GATEWAY_URL", "http://127.0.0.1:9")],
    );
    assert_eq!(code, Some(5));
    let (code, _, err) = cli(&["list", "--profile", "staging"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no profile 'staging'"), "{err}");
}

/// A pending build says where it waits and why, on the API and in the CLI: with no worker,
/// that none serves its queue; with one, its place in the queue; `freeagent queue` lists the
/// queues' depths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_build_says_where_it_waits_and_why() {
    use freeagent_tests::bin_dir;
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let dir = project("true\n");
    let first = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = farm.get_build(&second).await;
    assert_eq!(b["waiting"]["position"], 2, "{b}");
    assert_eq!(
        b["waiting"]["reason"], "no live worker serves queue android",
        "{b}"
    );
    // A worker of the queue (it never pulls): the first is next, the second behind it.
    let _w = farm.register_worker("idle", &["android"]).await;
    let b = farm.get_build(&first).await;
    assert_eq!(b["waiting"]["reason"], "next to be dispatched", "{b}");
    let b = farm.get_build(&second).await;
    assert_eq!(
        b["waiting"]["reason"], "1 build ahead in queue android",
        "{b}"
    );
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin_dir().join("freeagent"))
            .args(args)
            .env("FREEAGENT_API_KEY", API_KEY)
            .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = cli(&["status", &second]);
    assert!(
        status.contains("waiting: 1 build ahead in queue android (position 2)"),
        "{status}"
    );
    let queues = cli(&["queue"]);
    assert!(
        queues
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["android", "2", "1"]),
        "{queues}"
    );
}
