//! The sandbox's tests: the level each request resolves to, the command and environment a
//! build gets, and real sandboxed runs (isolation, leftovers killed, a stop reaching every process).

use super::command::argv;
use super::limits::MIN_MAX_PROCESSES;
use super::processes::namespace_members;
use super::*;
use std::ffi::OsString;
use std::time::Duration;

fn launch(level: Level) -> Launch {
    Launch {
        level,
        env: vec![],
        workspace: "/w/build-1".into(),
        cwd: "/w/build-1/src".into(),
        cover: Some("/w".into()),
        ids: (61003, 61003),
        unshare: "/usr/bin/unshare".into(),
        setpriv: "/usr/bin/setpriv".into(),
        max_processes: None,
        hide: vec![],
        cgroup: None,
        disk: None,
        enter_net: None,
        no_net: false,
        resolv_conf: None,
        seccomp: None,
        _net: None,
    }
}

fn strings(v: Vec<OsString>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_root_worker_runs_builds_in_namespaces_as_their_own_uid() {
    let a = strings(argv(&launch(Level::Uid), "sh build.sh"));
    assert_eq!(a[0], "/usr/bin/unshare");
    for flag in ["--pid", "--fork", "--kill-child", "--mount", "--mount-proc"] {
        assert!(a.contains(&flag.to_owned()), "{flag} missing in {a:?}");
    }
    assert!(!a.contains(&"--user".to_owned()));
    let setpriv = a.iter().position(|s| s == "/usr/bin/setpriv").unwrap();
    assert_eq!(
        a[setpriv + 1..],
        [
            "--reuid=61003",
            "--regid=61003",
            "--clear-groups",
            "--no-new-privs",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
            "/bin/sh",
            "-c",
            "sh build.sh"
        ]
    );
}

#[test]
fn a_non_root_worker_nests_a_user_namespace_that_maps_its_own_uid() {
    let a = strings(argv(&launch(Level::Userns), "make"));
    assert_eq!(a[..3], ["/usr/bin/unshare", "--user", "--map-root-user"]);
    let inner = a.iter().rposition(|s| s == "/usr/bin/unshare").unwrap();
    assert_eq!(
        a[inner..],
        [
            "/usr/bin/unshare",
            "--user",
            "--map-user=61003",
            "--map-group=61003",
            "--",
            "/usr/bin/setpriv",
            "--no-new-privs",
            "--",
            "/bin/sh",
            "-c",
            "make"
        ]
    );
}

#[test]
fn none_runs_the_command_directly() {
    assert_eq!(
        strings(argv(&launch(Level::None), "sh build.sh")),
        ["/bin/sh", "-c", "sh build.sh"]
    );
}

#[test]
fn the_build_environment_holds_only_the_documented_variables() {
    let v = BuildVars {
        id: "b1",
        attempt: "2",
        platform: "android",
        source_dir: "/w/b/src".into(),
        output_dir: "/w/b/out".into(),
        home: "/w/b/home".into(),
        tmp: "/w/b/tmp".into(),
        certs: Some("/w/b/certs".into()),
    };
    let env = build_env(&v, "/usr/bin:/bin", "C.UTF-8");
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "FREEAGENT_BUILD_ID",
            "FREEAGENT_ATTEMPT",
            "FREEAGENT_PLATFORM",
            "FREEAGENT_SOURCE_DIR",
            "FREEAGENT_OUTPUT_DIR",
            "FREEAGENT_CERTS_PATH",
            "PATH",
            "HOME",
            "TMPDIR",
            "LANG"
        ]
    );
    let without = build_env(&BuildVars { certs: None, ..v }, "/usr/bin:/bin", "C.UTF-8");
    assert!(!without.iter().any(|(k, _)| k == "FREEAGENT_CERTS_PATH"));
    assert!(without.contains(&("HOME".into(), "/w/b/home".into())));
}

#[test]
fn the_command_clears_the_workers_environment() {
    // Even with secrets in the worker's own environment, the spawned process gets only
    // the launch's variables (and the set-up's own, which it removes before the build).
    let mut l = launch(Level::Uid);
    l.env = vec![("PATH".into(), "/bin".into())];
    l.max_processes = Some(("/usr/bin/prlimit".into(), 64));
    let cmd = l.command("true");
    let set: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|_| k.to_string_lossy().into_owned()))
        .collect();
    assert!(
        set.iter()
            .all(|k| k == "PATH" || k.starts_with("FREEAGENT_SANDBOX_"))
    );
    assert!(SETUP.contains(
        "unset FREEAGENT_SANDBOX_WORKSPACE FREEAGENT_SANDBOX_COVER FREEAGENT_SANDBOX_CWD"
    ));
    assert!(SETUP.contains("unset FREEAGENT_SANDBOX_SETUP_PATH"));
    assert!(SETUP.contains("unset FREEAGENT_SANDBOX_PRLIMIT FREEAGENT_SANDBOX_NPROC"));
    assert!(
        set.contains(&"FREEAGENT_SANDBOX_NPROC".to_owned()),
        "{set:?}"
    );
    // env_clear: nothing of the test process's environment is inherited.
    let none = launch(Level::None).command("true");
    assert_eq!(none.get_envs().count(), 0);
}

#[test]
fn the_set_up_makes_every_shared_temp_directory_private() {
    let line = SETUP.lines().find(|l| l.starts_with("for d in")).unwrap();
    assert_eq!(line, format!("for d in {}; do", PRIVATE_TMP.join(" ")));
}

#[test]
fn the_cover_hides_the_workspaces_and_whatever_blocks_the_way_to_them() {
    let open = |_: &Path| true;
    assert_eq!(
        cover_for(Path::new("/srv/fa/work/build-1"), open),
        Some("/srv/fa/work".into())
    );
    // /srv/fa is 0700: the build's uid could not pass it, so it is replaced.
    let closed = |p: &Path| p != Path::new("/srv/fa");
    assert_eq!(
        cover_for(Path::new("/srv/fa/work/build-1"), closed),
        Some("/srv/fa".into())
    );
    // Under /tmp, the private /tmp hides the rest already.
    assert_eq!(cover_for(Path::new("/tmp/x/work/build-1"), closed), None);
    assert_eq!(cover_for(Path::new("/build-1"), open), None);
}

/// Runs a real build at the strongest level this machine offers (as `auto` does) in a work
/// dir that is `parent`'s child, behind a 0700 directory.
fn run_real_build(parent: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let closed = tempfile::Builder::new()
        .prefix("sandbox-test-")
        .tempdir_in(parent)
        .unwrap();
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let work = closed.path().join("work");
    let sandbox = Sandbox::from_env(Some(&work), 1).unwrap();
    assert_ne!(sandbox.level(), Level::None);
    let ws = Workspace::create(Some(&work)).unwrap();
    let other = Workspace::create(Some(&work)).unwrap();
    std::fs::write(other.file("certs"), "other build's certs").unwrap();
    std::fs::write(ws.file("certs"), "own certs").unwrap();
    let build = Build {
        id: "b".into(),
        attempt: "1".into(),
        platform: "android".into(),
    };
    let launch = sandbox
        .prepare(&ws, &build, Some(&ws.file("certs")))
        .unwrap();
    let marker = format!("sandbox-unit-{}", std::process::id());
    let script = format!(
        "setsid sh -c 'sleep 30; : {marker}' >/dev/null 2>&1 &\n\
         cat \"$FREEAGENT_CERTS_PATH\"; echo\n\
         cat {other} 2>&1 || echo 'other hidden'\n\
         test -e /proc/{me} && echo 'worker visible'\n\
         echo \"uid $(id -u)\"\n\
         echo out > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n",
        other = other.file("certs").display(),
        me = std::process::id(),
    );
    let out = launch.command(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("own certs"), "{stdout}");
    assert!(stdout.contains("other hidden"), "{stdout}");
    assert!(!stdout.contains("other build's certs"), "{stdout}");
    assert!(!stdout.contains("worker visible"), "{stdout}");
    if sandbox.ids.0 == 0 {
        assert!(
            stdout.contains(&format!("uid {}", launch.ids.0)),
            "{stdout}"
        );
        assert!(launch.ids.0 >= DEFAULT_SANDBOX_UID);
    }
    assert_eq!(
        std::fs::read(ws.output_dir().join("a.apk")).unwrap(),
        b"out\n"
    );
    // The daemon ended with the build.
    let left: Vec<i32> = processes_of_marker(&marker);
    assert!(left.is_empty(), "{left:?}");
}

/// A fork bomb meets the process limit of its uid (here 32). Each child holds its slot for
/// minutes (the forked process itself becomes `sleep`), so how far the loop gets never depends
/// on how fast children die; the uid's processes are counted from the host while they all live.
#[test]
fn a_build_cannot_run_more_processes_than_its_limit() {
    use std::io::BufRead;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let mut sandbox = Sandbox::from_env(Some(&work), 1).unwrap();
    if sandbox.level() != Level::Uid {
        eprintln!("not root: builds share the worker's uid and get no process limit");
        return;
    }
    let prlimit = find_tool("prlimit").expect("util-linux's prlimit");
    sandbox.resources.max_processes = Some((prlimit, MIN_MAX_PROCESSES));
    let ws = Workspace::create(Some(&work)).unwrap();
    let build = Build {
        id: "b".into(),
        attempt: "1".into(),
        platform: "android".into(),
    };
    let launch = sandbox.prepare(&ws, &build, None).unwrap();
    let uid = launch.ids.0;
    // The loop runs in a subshell: its shell dies on the failed fork ("Cannot fork"), the
    // outer shell reports that and then waits, without forking, for the test to release it.
    let script = "( i=0; while [ $i -lt 40 ]; do sleep 600 & i=$((i+1)); echo \"started $i\"; done; \
                  echo 'started all' ); echo \"loop ended $?\"; while [ ! -e release ]; do :; done";
    let mut child = launch
        .command(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = vec![];
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let ended = line.starts_with("loop ended");
        lines.push(line);
        if ended {
            break;
        }
    }
    // Every child the loop started is still alive (each sleeps 600 s): the most at once.
    let alive = processes_of_uid(uid).len();
    std::fs::write(launch.cwd.join("release"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let started: usize = lines
        .iter()
        .filter_map(|l| l.strip_prefix("started ")?.parse().ok())
        .max()
        .unwrap_or(0);
    assert!(!lines.iter().any(|l| l == "started all"), "{lines:?}");
    assert!(
        lines.last().is_some_and(|l| l != "loop ended 0"),
        "{lines:?} {stderr}"
    );
    assert!(stderr.contains("fork"), "{stderr}");
    // The outer shell and the sleeps; the subshell's failed fork was the one past the limit.
    assert_eq!(alive, started + 1, "{lines:?}");
    assert_eq!(started + 2, MIN_MAX_PROCESSES as usize, "{lines:?}");
    // The build's end took every child with it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !processes_of_uid(uid).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "children outlived the build"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The processes whose real uid is `uid`, from the host's `/proc`.
fn processes_of_uid(uid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok())
                    == Some(uid)
            })
        })
        .collect()
}

fn processes_of_marker(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[test]
fn a_real_build_sees_only_its_workspace_and_leaves_nothing_running() {
    run_real_build(&std::env::temp_dir());
    // Outside the private /tmp, a tmpfs covers the way to the workspaces.
    // (FREEAGENT_TEST_SANDBOX_DIR: somewhere else a non-root run can write.)
    let elsewhere = std::env::var_os("FREEAGENT_TEST_SANDBOX_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    run_real_build(&elsewhere);
}

#[test]
fn the_stop_path_reaches_every_process_of_a_build_even_after_setsid() {
    use nix::sys::signal::Signal;
    use std::os::unix::process::CommandExt;
    let work = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::from_env(Some(work.path()), 1).unwrap();
    let ws = Workspace::create(Some(work.path())).unwrap();
    let build = Build {
        id: "b".into(),
        attempt: "1".into(),
        platform: "android".into(),
    };
    let launch = sandbox.prepare(&ws, &build, None).unwrap();
    // Both ignore SIGTERM: only the SIGKILL ends them.
    let mut child = launch
        .command("trap '' TERM; setsid sh -c \"trap '' TERM; sleep 30; :\" & sleep 30; :")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    // pid 1 (the set-up shell), the build's shell and sleep, the setsid'd shell and sleep.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let members = loop {
        let m = namespace_members(child.id()).unwrap_or_default();
        if m.len() >= 5 {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "{m:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!members.contains(&(std::process::id() as i32)));
    signal_build(launch.level(), Some(child.id()), Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "SIGTERM is ignored");
    signal_build(launch.level(), Some(child.id()), Signal::SIGKILL);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing in the log"
    );
    // SIGKILLed, they go within moments (`unshare` may be reaped first).
    let gone = |m: &i32| {
        let stat = std::fs::read_to_string(format!("/proc/{m}/stat")).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !members.iter().all(gone) {
        assert!(std::time::Instant::now() < deadline, "{members:?} survived");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn auto_is_uid_for_root_and_userns_otherwise() {
    assert_eq!(resolve(Requested::Auto, true), Ok(Level::Uid));
    assert_eq!(resolve(Requested::Auto, false), Ok(Level::Userns));
    assert_eq!(resolve(Requested::None, true), Ok(Level::None));
    assert!(resolve(Requested::Userns, true).is_err());
    assert!(resolve(Requested::Uid, false).is_err());
}

#[test]
fn requested_modes_parse() {
    assert_eq!("auto".parse(), Ok(Requested::Auto));
    assert_eq!(" None ".parse(), Ok(Requested::None));
    assert_eq!("uid".parse(), Ok(Requested::Uid));
    assert_eq!("userns".parse(), Ok(Requested::Userns));
    assert_eq!("off".parse::<Requested>(), Err(()));
}

#[test]
fn own_ids_are_the_effective_ones() {
    let status = "Name:\tw\nUid:\t1000\t0\t0\t0\nGid:\t1000\t5\t5\t5\n";
    assert_eq!(own_ids(status), Some((0, 5)));
    assert_eq!(own_ids("Name:\tw\n"), None);
}

/// The farm's data directory (here holding the work directory, as `freeagent dev` lays it out)
/// in a world-traversable place outside `/tmp`: a build listed in `FREEAGENT_SANDBOX_HIDE` sees
/// none of the stored objects or credentials there, and still reaches its own workspace.
#[test]
fn hidden_farm_directories_are_empty_to_a_build() {
    use std::os::unix::fs::PermissionsExt;
    let parent = std::env::var_os("FREEAGENT_TEST_SANDBOX_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let data = tempfile::Builder::new()
        .prefix("sandbox-data-")
        .tempdir_in(parent)
        .unwrap();
    let open = |p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
    open(data.path()).unwrap();
    std::fs::create_dir_all(data.path().join("objects/builds/other")).unwrap();
    let secret = data.path().join("objects/builds/other/source");
    std::fs::write(&secret, "ANOTHER BUILD'S SOURCE").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let creds = data.path().join("gateway.creds");
    std::fs::write(&creds, "NATS CREDENTIALS").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let work = data.path().join("work");
    let mut sandbox = Sandbox::from_env(Some(&work), 1).unwrap();
    if sandbox.level() == Level::None {
        return;
    }
    sandbox.hide = vec![data.path().to_path_buf(), creds.clone()];
    let ws = Workspace::create(Some(&work)).unwrap();
    let build = Build {
        id: "b".into(),
        attempt: "1".into(),
        platform: "android".into(),
    };
    let launch = sandbox.prepare(&ws, &build, None).unwrap();
    let script = format!(
        "cat {secret} 2>&1 || echo 'source hidden'\n\
         cat {creds} 2>&1; echo\n\
         ls -A {data}\n\
         echo built > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n",
        secret = secret.display(),
        creds = creds.display(),
        data = data.path().display(),
    );
    let out = launch.command(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("source hidden"), "{stdout}");
    assert!(!stdout.contains("ANOTHER BUILD'S SOURCE"), "{stdout}");
    assert!(!stdout.contains("NATS CREDENTIALS"), "{stdout}");
    // Only the way to the workspace is there.
    let listed: Vec<&str> = stdout
        .lines()
        .filter(|l| *l == "objects" || *l == "work")
        .collect();
    assert_eq!(listed, ["work"], "{stdout}");
    assert_eq!(
        std::fs::read(ws.output_dir().join("a.apk")).unwrap(),
        b"built\n"
    );
}
