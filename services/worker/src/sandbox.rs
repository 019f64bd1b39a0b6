//! A build is untrusted code (the submitter's `build.sh`), so the reference worker never runs it
//! as itself. This module decides how builds are isolated on this machine and builds the command
//! that isolates one: a clean environment; PID, mount and IPC namespaces of its own (everything
//! it starts — `setsid` daemons, double forks — dies with it, and the worker's processes are
//! invisible); a private `/tmp`, `/var/tmp`, `/dev/shm` and `/run/lock`; the other workspaces
//! hidden; and, when the worker runs as root, an unprivileged uid of its own, one per build
//! running on the machine. util-linux's `unshare` and `setpriv` do the work because every
//! Debian has them; `docs/adr/0010-build-sandbox.md` says why, and what is not isolated.

use crate::workspace::Workspace;
use freeagent_shared::config::{self, ConfigError};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The first uid handed to builds when the worker runs as root.
pub const DEFAULT_SANDBOX_UID: u32 = 61000;
/// Builds running at once on one machine (all its workers together) get distinct uids from
/// `FREEAGENT_SANDBOX_UID` up to this many; 128 keeps the default range below systemd's
/// dynamic users (61184 and up).
pub const UID_SPAN: u32 = 128;
/// The build's `PATH` when the worker has none.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const FALLBACK_LANG: &str = "C.UTF-8";
/// Where the namespace set-up finds `mount` and `mkdir`, whatever the build's `PATH` says.
const SETUP_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Directories every user may write to: each build gets empty private ones, so that nothing
/// one build leaves there reaches the next build under the same uid.
const PRIVATE_TMP: [&str; 4] = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"];
/// Lock files that hand out the sandbox uids, shared by every worker on the machine. Only root
/// can create directories in /run, so nobody else can pre-create it.
const LOCK_DIR: &str = "/run/freeagent-sandbox";

/// Runs as pid 1 of the build's namespaces, as (namespace) root, before any build code:
/// hides every other workspace under a tmpfs (`cover`), gives the build empty private temp
/// directories, puts the workspace back at its own path (through the descriptor opened before
/// it was covered), then starts the build as a child: pid 1 ignores signals it has no handler
/// for, and when pid 1 exits the kernel kills everything left in the namespace. (As with any
/// background job of a script, the build starts with SIGINT and SIGQUIT ignored.) The loop
/// lists `PRIVATE_TMP`.
const SETUP: &str = r#"set -eu
ws=$FREEAGENT_SANDBOX_WORKSPACE cover=$FREEAGENT_SANDBOX_COVER cwd=$FREEAGENT_SANDBOX_CWD
unset FREEAGENT_SANDBOX_WORKSPACE FREEAGENT_SANDBOX_COVER FREEAGENT_SANDBOX_CWD
build_path=$PATH
PATH=$FREEAGENT_SANDBOX_SETUP_PATH
unset FREEAGENT_SANDBOX_SETUP_PATH
exec 3<"$ws"
if [ -n "$cover" ]; then mount -t tmpfs -o mode=0755,size=1m,nosuid,nodev freeagent-cover "$cover"; fi
for d in /tmp /var/tmp /dev/shm /run/lock; do
  if [ -d "$d" ]; then mount -t tmpfs -o mode=1777,nosuid,nodev freeagent-tmp "$d"; fi
done
mkdir -p "$ws"
mount --no-canonicalize --bind /proc/self/fd/3 "$ws"
exec 3<&-
cd "$cwd"
PATH=$build_path
"$@" &
wait $!
"#;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "no free sandbox uid: {UID_SPAN} builds already run on this machine from FREEAGENT_SANDBOX_UID={0}"
    )]
    NoFreeUid(u32),
    #[error("preparing the build's sandbox failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What `FREEAGENT_SANDBOX` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The strongest isolation this machine offers; refuse to start if there is none.
    Auto,
    /// Root worker, builds as uids of their own.
    Uid,
    /// Non-root worker, builds keep its uid inside a user namespace.
    Userns,
    /// No isolation, by the operator's explicit choice.
    None,
}

impl FromStr for Requested {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "uid" => Ok(Self::Uid),
            "userns" => Ok(Self::Userns),
            "none" => Ok(Self::None),
            _ => Err(()),
        }
    }
}

/// How builds are isolated on this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The worker is root: namespaces, and each running build has a uid of its own.
    Uid,
    /// The worker is not root: namespaces inside a user namespace; builds share its uid.
    Userns,
    /// Not isolated (`FREEAGENT_SANDBOX=none`).
    None,
}

#[derive(Debug, Clone)]
pub struct Sandbox {
    level: Level,
    /// The operator named the level: `userns` said explicitly accepts certs-bearing builds that
    /// share the worker's uid.
    explicit: bool,
    base_uid: u32,
    /// The worker's own uid and gid (what builds keep in `userns`).
    ids: (u32, u32),
    unshare: PathBuf,
    setpriv: PathBuf,
    lock_dir: PathBuf,
    /// The only values the build gets from the worker's environment.
    path: String,
    lang: String,
}

/// What identifies a build to its command (the documented `FREEAGENT_*` variables).
pub struct Build {
    pub id: String,
    pub attempt: String,
    pub platform: String,
}

/// One prepared build: its environment and how to start it.
#[derive(Debug, Clone)]
pub struct Launch {
    level: Level,
    env: Vec<(String, String)>,
    workspace: PathBuf,
    cwd: PathBuf,
    cover: Option<PathBuf>,
    ids: (u32, u32),
    unshare: PathBuf,
    setpriv: PathBuf,
}

/// A sandbox uid held for one build, until its workspace is gone (an exclusive lock on a file
/// shared by every worker on the machine).
#[derive(Debug)]
pub struct UidLease {
    pub uid: u32,
    _lock: std::fs::File,
}

impl Sandbox {
    /// Reads `FREEAGENT_SANDBOX` and `FREEAGENT_SANDBOX_UID` and checks, by starting a trial
    /// build in a workspace in `work_dir`, that the chosen isolation works here: a worker that
    /// cannot isolate builds refuses to start, unless the operator said `none`.
    pub fn from_env(work_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let raw = config::string("FREEAGENT_SANDBOX", "auto");
        let requested: Requested = raw.parse().map_err(|()| {
            ConfigError::new("FREEAGENT_SANDBOX", &raw, "auto, uid, userns or none")
        })?;
        let base_uid: u32 = config::parse(
            "FREEAGENT_SANDBOX_UID",
            DEFAULT_SANDBOX_UID,
            "a uid no account uses (the first of 128)",
        )?;
        if !(1000..=65534 - UID_SPAN).contains(&base_uid) {
            return Err(ConfigError::new(
                "FREEAGENT_SANDBOX_UID",
                &base_uid.to_string(),
                format!("a uid from 1000 to {}", 65534 - UID_SPAN),
            ));
        }
        let ids = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| own_ids(&s))
            .unwrap_or((u32::MAX, u32::MAX));
        let level = resolve(requested, ids.0 == 0)
            .map_err(|why| ConfigError::new("FREEAGENT_SANDBOX", &raw, why))?;
        let sandbox = Sandbox {
            level,
            explicit: requested != Requested::Auto,
            base_uid,
            ids,
            unshare: find_tool("unshare").unwrap_or_else(|| "unshare".into()),
            setpriv: find_tool("setpriv").unwrap_or_else(|| "setpriv".into()),
            lock_dir: PathBuf::from(LOCK_DIR),
            path: config::string("PATH", FALLBACK_PATH),
            lang: config::string("LANG", FALLBACK_LANG),
        };
        if level == Level::None {
            tracing::warn!(
                "FREEAGENT_SANDBOX=none: BUILDS ARE NOT ISOLATED. A build runs as the worker's user, sees its processes, may read its files, and what it leaves running outlives it"
            );
            return Ok(sandbox);
        }
        // A work dir the worker cannot use is not a sandbox problem: say which setting it is.
        let ws = Workspace::create(work_dir).map_err(|e| {
            let dir = work_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
            ConfigError::new(
                "FREEAGENT_WORK_DIR",
                &dir.display().to_string(),
                format!("a directory the worker can create and write ({e})"),
            )
        })?;
        sandbox.probe(&ws).map_err(|reason| {
            ConfigError::new("FREEAGENT_SANDBOX", &raw, refusal(&reason, ids.0 == 0))
        })?;
        tracing::info!(sandbox = %sandbox.describe(), "builds run sandboxed");
        Ok(sandbox)
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// One line for the worker's log.
    pub fn describe(&self) -> String {
        match self.level {
            Level::Uid => format!(
                "own PID, mount and IPC namespaces; uids {}-{}",
                self.base_uid,
                self.base_uid + UID_SPAN - 1
            ),
            Level::Userns => format!(
                "own user, PID, mount and IPC namespaces; the worker's uid {}",
                self.ids.0
            ),
            Level::None => "none".into(),
        }
    }

    /// Whether this worker may run a build that carries certs; the refusal says why not.
    pub fn allows_certs(&self) -> Result<(), String> {
        match self.level {
            Level::Userns if !self.explicit => Err(
                "this worker cannot keep a build's certs from other builds: it does not run as root, so builds share its uid and could read files of other builds on this machine. Run the worker as root (builds then get uids of their own), or set FREEAGENT_SANDBOX=userns to accept builds that share the worker's uid (docs/sandbox.md)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// The line every build's log starts with when builds are not isolated.
    pub fn warning(&self) -> Option<&'static str> {
        (self.level == Level::None).then_some(
            "[freeagent] WARNING: FREEAGENT_SANDBOX=none: this build is not isolated: it runs as the worker's user, can see the worker's processes and files, and what it leaves running outlives it",
        )
    }

    /// Hands the workspace to the build (its uid owns it, mode 0700; certs 0600) and returns
    /// how to start it. The uid stays taken until the workspace is removed.
    pub fn prepare(
        &self,
        ws: &Workspace,
        build: &Build,
        certs: Option<&Path>,
    ) -> Result<Launch, SandboxError> {
        let lease = match self.level {
            Level::Uid => Some(self.lease_uid()?),
            Level::Userns | Level::None => None,
        };
        let ids = lease.as_ref().map_or(self.ids, |l| (l.uid, l.uid));
        ws.hand_over(lease.as_ref().map(|_| ids))?;
        if let Some(c) = certs {
            std::fs::set_permissions(c, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        // Canonical paths: the workspace is mounted back at exactly this path.
        let root = ws.root().canonicalize()?;
        let vars = BuildVars {
            id: &build.id,
            attempt: &build.attempt,
            platform: &build.platform,
            source_dir: root.join(rel(ws.root(), &ws.source_dir())),
            output_dir: root.join(rel(ws.root(), &ws.output_dir())),
            home: root.join(rel(ws.root(), &ws.scratch_dir())),
            tmp: root.join(rel(ws.root(), &ws.tmp_dir())),
            certs: certs.map(|c| root.join(rel(ws.root(), c))),
        };
        let env = build_env(&vars, &self.path, &self.lang);
        let cover = cover_for(&root, world_traversable);
        if let Some(l) = lease {
            ws.keep_until_removed(l);
        }
        Ok(Launch {
            level: self.level,
            env,
            cwd: vars.source_dir,
            workspace: root,
            cover,
            ids,
            unshare: self.unshare.clone(),
            setpriv: self.setpriv.clone(),
        })
    }

    /// The lowest sandbox uid no other build on this machine holds.
    fn lease_uid(&self) -> Result<UidLease, SandboxError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.lock_dir)?;
        let meta = std::fs::symlink_metadata(&self.lock_dir)?;
        if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(SandboxError::Io(std::io::Error::other(format!(
                "{} must be a directory owned by root and writable only by root",
                self.lock_dir.display()
            ))));
        }
        for uid in self.base_uid..self.base_uid + UID_SPAN {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.lock_dir.join(format!("uid-{uid}.lock")))?;
            match file.try_lock() {
                Ok(()) => {
                    kill_leftovers(uid);
                    return Ok(UidLease { uid, _lock: file });
                }
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
            }
        }
        Err(SandboxError::NoFreeUid(self.base_uid))
    }

    /// Runs a trial build in a scratch workspace: starts with the worker, so that a machine
    /// that cannot isolate builds is found out before it takes one.
    fn probe(&self, ws: &Workspace) -> Result<(), String> {
        for (tool, path) in [("unshare", &self.unshare), ("setpriv", &self.setpriv)] {
            if !path.is_absolute() {
                return Err(format!("`{tool}` is not installed (util-linux)"));
            }
        }
        let build = Build {
            id: "probe".into(),
            attempt: "1".into(),
            platform: "probe".into(),
        };
        let launch = self.prepare(ws, &build, None).map_err(|e| e.to_string())?;
        // The build must see its workspace and be able to write its output and scratch.
        let check = "touch \"$FREEAGENT_OUTPUT_DIR/probe\" \"$HOME/probe\" \"$TMPDIR/probe\" /tmp/probe && test -d \"$FREEAGENT_SOURCE_DIR\"";
        let out = launch
            .command(check)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.unshare.display()))?;
        if out.status.success() && ws.output_dir().join("probe").is_file() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "a trial build failed ({}): {}",
                out.status,
                stderr.trim()
            ))
        }
    }
}

impl Launch {
    pub fn level(&self) -> Level {
        self.level
    }

    /// The process to spawn (the caller sets stdio and the process group).
    pub fn command(&self, command: &str) -> std::process::Command {
        let argv = argv(self, command);
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear();
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if self.level == Level::None {
            cmd.current_dir(&self.cwd);
        } else {
            // The set-up script reads these and removes them before the build starts. It
            // starts in `/`, so no directory handle leads back past the covering mounts.
            cmd.current_dir("/")
                .env("FREEAGENT_SANDBOX_WORKSPACE", &self.workspace)
                .env(
                    "FREEAGENT_SANDBOX_COVER",
                    self.cover.as_deref().unwrap_or(Path::new("")),
                )
                .env("FREEAGENT_SANDBOX_CWD", &self.cwd)
                .env("FREEAGENT_SANDBOX_SETUP_PATH", SETUP_PATH);
        }
        cmd
    }
}

/// The level `requested` means for a worker that is (or is not) root.
fn resolve(requested: Requested, is_root: bool) -> Result<Level, &'static str> {
    match (requested, is_root) {
        (Requested::None, _) => Ok(Level::None),
        (Requested::Auto | Requested::Uid, true) => Ok(Level::Uid),
        (Requested::Auto | Requested::Userns, false) => Ok(Level::Userns),
        (Requested::Uid, false) => Err(
            "`uid` needs a worker running as root (to run builds as other uids); use auto or userns",
        ),
        // A user namespace that maps root to itself leaves builds root's power over root's
        // files; a root worker gives builds uids of their own instead.
        (Requested::Userns, true) => {
            Err("`userns` would run builds as root when the worker is root; use auto or uid")
        }
    }
}

/// Why a worker refuses to start, and what to install or set.
fn refusal(reason: &str, is_root: bool) -> String {
    let needs = if is_root {
        "mount and PID namespaces (in a container: --privileged, or CAP_SYS_ADMIN with seccomp, AppArmor and systempaths unconfined)"
    } else {
        "and unprivileged user namespaces (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, kernel.apparmor_restrict_unprivileged_userns=0), or a worker running as root"
    };
    format!(
        "this worker cannot isolate builds ({reason}). Builds need util-linux's unshare and setpriv, {needs}; or set FREEAGENT_SANDBOX=none to run builds unisolated (docs/sandbox.md)"
    )
}

/// The program and arguments that run `command` at the launch's level.
fn argv(l: &Launch, command: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    match l.level {
        Level::None => return ["/bin/sh", "-c", command].map(OsString::from).to_vec(),
        Level::Uid => v.push(l.unshare.clone().into()),
        Level::Userns => {
            v.push(l.unshare.clone().into());
            v.extend(["--user", "--map-root-user"].map(OsString::from));
        }
    }
    v.extend(
        [
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--ipc",
            "--mount-proc",
            "--",
            "/bin/sh",
            "-c",
            SETUP,
            "freeagent-sandbox",
        ]
        .map(OsString::from),
    );
    let (uid, gid) = l.ids;
    match l.level {
        Level::Uid => {
            v.push(l.setpriv.clone().into());
            v.push(format!("--reuid={uid}").into());
            v.push(format!("--regid={gid}").into());
            v.extend(
                [
                    "--clear-groups",
                    "--no-new-privs",
                    "--bounding-set=-all",
                    "--inh-caps=-all",
                ]
                .map(OsString::from),
            );
        }
        Level::Userns => {
            // A nested user namespace maps the worker's uid back, so the build runs as that
            // uid (not as a namespace root able to undo the set-up's mounts).
            v.push(l.unshare.clone().into());
            v.push("--user".into());
            v.push(format!("--map-user={uid}").into());
            v.push(format!("--map-group={gid}").into());
            v.push("--".into());
            v.push(l.setpriv.clone().into());
            v.push("--no-new-privs".into());
        }
        Level::None => {}
    }
    v.extend(["--", "/bin/sh", "-c", command].map(OsString::from));
    v
}

/// The build's variables, with paths as the build sees them.
struct BuildVars<'a> {
    id: &'a str,
    attempt: &'a str,
    platform: &'a str,
    source_dir: PathBuf,
    output_dir: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    certs: Option<PathBuf>,
}

/// The whole environment of a build: the documented variables, `PATH`, `HOME`, `TMPDIR` and
/// `LANG`. Nothing else of the worker's environment (its API key, NATS URL, …) reaches it.
fn build_env(v: &BuildVars<'_>, path: &str, lang: &str) -> Vec<(String, String)> {
    let s = |p: &Path| p.display().to_string();
    let mut env = vec![
        ("FREEAGENT_BUILD_ID".to_owned(), v.id.to_owned()),
        ("FREEAGENT_ATTEMPT".to_owned(), v.attempt.to_owned()),
        ("FREEAGENT_PLATFORM".to_owned(), v.platform.to_owned()),
        ("FREEAGENT_SOURCE_DIR".to_owned(), s(&v.source_dir)),
        ("FREEAGENT_OUTPUT_DIR".to_owned(), s(&v.output_dir)),
    ];
    if let Some(c) = &v.certs {
        env.push(("FREEAGENT_CERTS_PATH".to_owned(), s(c)));
    }
    env.extend([
        ("PATH".to_owned(), path.to_owned()),
        ("HOME".to_owned(), s(&v.home)),
        ("TMPDIR".to_owned(), s(&v.tmp)),
        ("LANG".to_owned(), lang.to_owned()),
    ]);
    env
}

/// `p` relative to `root` (the workspace's own paths always are inside it).
fn rel<'a>(root: &Path, p: &'a Path) -> &'a Path {
    p.strip_prefix(root).unwrap_or(p)
}

/// What to cover with an empty tmpfs in the build's mount namespace so that it sees no other
/// workspace and can reach its own: the highest ancestor of the workspace that others may not
/// traverse (the build's uid could not reach its workspace through it), else the directory
/// holding the workspaces. Nothing when a private temp directory already hides them.
fn cover_for(workspace: &Path, traversable: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let parent = workspace.parent()?;
    if PRIVATE_TMP
        .iter()
        .any(|t| workspace.starts_with(t) && workspace != Path::new(t))
    {
        return None;
    }
    let blocked = parent
        .ancestors()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|a| a.parent().is_some() && !traversable(a));
    match blocked {
        Some(a) => Some(a.to_path_buf()),
        None if parent.parent().is_some() => Some(parent.to_path_buf()),
        None => None,
    }
}

fn world_traversable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
}

/// The effective uid and gid from `/proc/self/status`.
fn own_ids(status: &str) -> Option<(u32, u32)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("Uid:")?, field("Gid:")?))
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(SETUP_PATH.split(':'))
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Kills what a sandbox uid still runs before a build gets it: only a build of a worker that
/// died (and so never ended its namespace) can have left anything.
fn kill_leftovers(uid: u32) {
    for attempt in 0..50 {
        let pids = processes_of(uid);
        if pids.is_empty() {
            return;
        }
        if attempt == 0 {
            tracing::warn!(
                uid,
                count = pids.len(),
                "killing processes a previous build left under its sandbox uid"
            );
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            let mut s = String::new();
            std::fs::File::open(format!("/proc/{pid}/status"))
                .and_then(|mut f| f.read_to_string(&mut s))
                .is_ok()
                && !s.contains("\nState:\tZ")
                && s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .is_some_and(|ids| ids.split_whitespace().any(|i| i == uid.to_string()))
        })
        .collect()
}

/// Sends `sig` to every process of the build. Sandboxed: each member of its PID namespace
/// (pid 1, the set-up shell, ignores SIGTERM and exits when the build does; SIGKILL to it ends
/// the namespace); if the namespace is not there yet, killing `unshare` ends it.
pub fn signal_build(level: Level, pid: Option<u32>, sig: nix::sys::signal::Signal) {
    let Some(pid) = pid else { return };
    if level == Level::None {
        return signal_group(Some(pid), sig);
    }
    match namespace_members(pid) {
        Some(members) => {
            // `unshare` first: it would otherwise report its child's death in the log.
            if sig == nix::sys::signal::Signal::SIGKILL {
                signal_group(Some(pid), sig);
            }
            for m in members {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(m), sig);
            }
        }
        None => signal_group(Some(pid), nix::sys::signal::Signal::SIGKILL),
    }
}

fn signal_group(pgid: Option<u32>, sig: nix::sys::signal::Signal) {
    if let Some(p) = pgid {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(p as i32), sig);
    }
}

/// The processes of a running sandboxed build, found through its PID namespace, for the stop
/// path: a signal to the process group misses whatever called `setsid`.
fn namespace_members(unshare_pid: u32) -> Option<Vec<i32>> {
    // `unshare` enters the new namespace's parent side before it forks the namespace's pid 1;
    // until then its `pid_for_children` is still ours, and signalling "every member" would
    // signal the whole machine.
    let ns = std::fs::read_link(format!("/proc/{unshare_pid}/ns/pid_for_children")).ok()?;
    let own = std::fs::read_link("/proc/self/ns/pid").ok()?;
    if ns == own {
        return None;
    }
    let dir = std::fs::read_dir("/proc").ok()?;
    Some(
        dir.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|p| p == ns))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let sandbox = Sandbox::from_env(Some(&work)).unwrap();
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
        let sandbox = Sandbox::from_env(Some(work.path())).unwrap();
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
}
