//! A build is untrusted code (the submitter's `build.sh`), so the reference worker never runs it
//! as itself. This module decides how builds are isolated on this machine and builds the command
//! that isolates one: a clean environment; PID, mount and IPC namespaces of its own (everything
//! it starts — `setsid` daemons, double forks — dies with it, and the worker's processes are
//! invisible); a private `/tmp`, `/var/tmp`, `/dev/shm` and `/run/lock`; the other workspaces
//! hidden; and, when the worker runs as root, an unprivileged uid of its own, one per build
//! running on the machine. util-linux's `unshare` and `setpriv` do the work because every
//! Debian has them; `docs/adr/0010-build-sandbox.md` says why, and what is not isolated.

mod cgroup;
mod command;
mod disk;
mod hidden;
mod limits;
mod network;
mod processes;
mod seccomp;

use crate::workspace::{Workspace, WorkspaceError};
use cgroup::BuildCgroup;
use command::{BuildVars, build_env};
pub use disk::{BuildDisk, DiskError, DiskLimits, Disks};
use freeagent_shared::config::{self, ConfigError};
pub use limits::{DEFAULT_MAX_PROCESSES, Resources, human};
use network::{BuildNet, Network};
use processes::kill_leftovers;
pub use processes::signal_build;
pub use seccomp::{EXEC_ARG as SECCOMP_EXEC_ARG, exec as seccomp_exec};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

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
/// How the build's last step reaches the worker binary that applies its system-call filter: the
/// set-up opens the binary on descriptor 4 before any mount can hide it.
const SECCOMP_EXEC_PATH: &str = "/proc/self/fd/4";
/// Lock files that hand out the sandbox uids, shared by every worker on the machine. Only root
/// can create directories in /run, so nobody else can pre-create it.
const LOCK_DIR: &str = "/run/freeagent-sandbox";

/// Runs as pid 1 of the build's namespaces, as (namespace) root, before any build code: joins
/// the build's control groups (memory and CPU; what it starts stays in them) and offers itself
/// first to the kernel's out-of-memory killer (`oom_score_adj`, inherited by the build), drops
/// its copies of other builds' file systems (`disk`: else this namespace would keep each one,
/// and its image's space, until this build ends), hides every other workspace under a tmpfs
/// (`cover`), gives the build empty private temp
/// directories (sized to the memory limit: their pages count against it too), puts the workspace back at its own path (through the descriptor opened before
/// it was covered), then starts the build as a child: pid 1 ignores signals it has no handler
/// for, and when pid 1 exits the kernel kills everything left in the namespace. (As with any
/// background job of a script, the build starts with SIGINT and SIGQUIT ignored.) The loop
/// lists `PRIVATE_TMP`. With a process limit (root workers), the set-up shell takes it before
/// it starts the build: root's own forks are not counted, the build's uid is, whatever it forks.
const SETUP: &str = r#"set -eu
ws=$FREEAGENT_SANDBOX_WORKSPACE cover=$FREEAGENT_SANDBOX_COVER cwd=$FREEAGENT_SANDBOX_CWD
unset FREEAGENT_SANDBOX_WORKSPACE FREEAGENT_SANDBOX_COVER FREEAGENT_SANDBOX_CWD
prlimit=${FREEAGENT_SANDBOX_PRLIMIT:-} nproc=${FREEAGENT_SANDBOX_NPROC:-}
unset FREEAGENT_SANDBOX_PRLIMIT FREEAGENT_SANDBOX_NPROC
hide=${FREEAGENT_SANDBOX_HIDE:-}
cgroup=${FREEAGENT_SANDBOX_CGROUP:-} tmp_size=${FREEAGENT_SANDBOX_TMP_SIZE:-}
resolv=${FREEAGENT_SANDBOX_RESOLV:-} seccomp=${FREEAGENT_SANDBOX_SECCOMP:-}
unset FREEAGENT_SANDBOX_HIDE FREEAGENT_SANDBOX_CGROUP FREEAGENT_SANDBOX_TMP_SIZE FREEAGENT_SANDBOX_RESOLV FREEAGENT_SANDBOX_SECCOMP
build_path=$PATH
PATH=$FREEAGENT_SANDBOX_SETUP_PATH
unset FREEAGENT_SANDBOX_SETUP_PATH
set -f; IFS=:
for f in $cgroup; do echo 0 >"$f"; done
set +f; unset IFS
echo 1000 >/proc/self/oom_score_adj
exec 3<"$ws"
while read -r _ _ _ _ mp rest; do
  case $rest in *" - ext4 /dev/loop"*) ;; *) continue ;; esac
  case $mp in "$ws"|*\\*) continue ;; esac
  dev=${rest#* - ext4 /dev/}; dev=${dev%% *}; bf=
  read -r bf 2>/dev/null </sys/block/"$dev"/loop/backing_file || true
  case $bf in */freeagent-disk-*) umount --lazy "$mp" 2>/dev/null || true ;; esac
done </proc/self/mountinfo
if [ -n "$seccomp" ]; then exec 4<"$seccomp"; fi
if [ -n "$resolv" ]; then mount --bind "$resolv" /etc/resolv.conf; fi
if [ -n "$cover" ]; then mount -t tmpfs -o mode=0755,size=1m,nosuid,nodev freeagent-cover "$cover"; fi
set -f; IFS=:
for h in $hide; do
  if [ -d "$h" ]; then mount -t tmpfs -o mode=0755,size=1m,nosuid,nodev,noexec freeagent-hide "$h"
  elif [ -e "$h" ]; then mount --bind /dev/null "$h"; fi
done
set +f; unset IFS
for d in /tmp /var/tmp /dev/shm /run/lock; do
  if [ -d "$d" ]; then mount -t tmpfs -o "mode=1777,nosuid,nodev${tmp_size:+,size=$tmp_size}" freeagent-tmp "$d"; fi
done
mkdir -p "$ws"
mount --no-canonicalize --bind /proc/self/fd/3 "$ws"
exec 3<&-
cd "$cwd"
if [ -n "$nproc" ]; then "$prlimit" --pid $$ --nproc="$nproc:$nproc"; fi
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
    /// Processes, memory and CPU a build may use (`limits`).
    resources: Resources,
    /// Each build's file system of its own (`disk`); none without a disk quota.
    disk: Option<Disks>,
    /// What a build's network reaches (`network`); none when builds are not sandboxed.
    network: Option<Network>,
    /// The worker binary, which applies the build's system-call filter (`seccomp`); none when
    /// the filter is off.
    seccomp: Option<PathBuf>,
    /// The farm's own paths builds must not see (`hidden`).
    hide: Vec<PathBuf>,
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
    max_processes: Option<(PathBuf, u32)>,
    hide: Vec<PathBuf>,
    /// The build's control group (memory and CPU), which its processes join before it starts.
    cgroup: Option<Arc<BuildCgroup>>,
    /// What the build's own file system holds (`disk`), to tell a full one afterwards.
    disk: Option<DiskLimits>,
    /// The program and arguments that enter the build's own network namespace (`isolated`).
    enter_net: Option<[String; 2]>,
    /// Loopback only (`FREEAGENT_BUILD_NETWORK=none`): a fresh, empty network namespace.
    no_net: bool,
    /// A resolv.conf the build sees instead of the machine's.
    resolv_conf: Option<PathBuf>,
    /// The worker binary that applies the system-call filter before the build's shell.
    seccomp: Option<PathBuf>,
    /// Keeps the build's network namespace and firewall table until the build is done.
    _net: Option<Arc<BuildNet>>,
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
    /// `builds_at_once` is how many builds the worker runs at once (each gets its share of the
    /// machine by default).
    pub fn from_env(work_dir: Option<&Path>, builds_at_once: usize) -> Result<Self, ConfigError> {
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
        let resources = Resources::from_env(level, builds_at_once)?;
        let disk = Disks::from_env(level, work_dir, builds_at_once)?;
        let network = match level {
            Level::None => None,
            _ => Some(Network::from_env(level == Level::Uid)?),
        };
        let seccomp = match level {
            Level::None => None,
            _ if !seccomp::from_env()? => None,
            _ => Some(seccomp::worker_binary().map_err(|e| {
                ConfigError::new(
                    seccomp::VAR,
                    "default",
                    format!("none: the worker cannot find its own binary to filter builds' system calls ({e})"),
                )
            })?),
        };
        let sandbox = Sandbox {
            level,
            explicit: requested != Requested::Auto,
            base_uid,
            ids,
            unshare: find_tool("unshare").unwrap_or_else(|| "unshare".into()),
            setpriv: find_tool("setpriv").unwrap_or_else(|| "setpriv".into()),
            resources,
            disk,
            network,
            seccomp,
            hide: hidden::from_env()?,
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
        let ws = sandbox.workspace(work_dir).map_err(|e| {
            if let WorkspaceError::Disk(e) = &e {
                return ConfigError::new(disk::DISK_VAR, "", format!("0 (no quota): {e}"));
            }
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
                "own PID, mount and IPC namespaces; uids {}-{}; each build: {}; {}; {}",
                self.base_uid,
                self.base_uid + UID_SPAN - 1,
                self.resources.describe(),
                Disks::describe(self.disk.as_ref()),
                self.network
                    .as_ref()
                    .map_or(String::new(), Network::describe)
            ),
            Level::Userns => format!(
                "own user, PID, mount and IPC namespaces; the worker's uid {}; each build: {}; {}",
                self.ids.0,
                self.resources.describe(),
                self.network
                    .as_ref()
                    .map_or(String::new(), Network::describe)
            ),
            Level::None => "none".into(),
        }
    }

    /// A new workspace in `parent`, on a file system of its own when builds have a disk quota
    /// (blocking: it runs `mkfs` and `mount`).
    pub fn workspace(&self, parent: Option<&Path>) -> Result<Workspace, WorkspaceError> {
        Workspace::create_sized(parent, self.disk.as_ref())
    }

    pub fn disks(&self) -> Option<&Disks> {
        self.disk.as_ref()
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
        let cgroup = match (&self.resources.cgroups, self.level) {
            (Some(c), Level::Uid | Level::Userns) => {
                Some(Arc::new(c.create(self.resources.limits)?))
            }
            _ => None,
        };
        let net = match (&self.network, &lease) {
            (Some(n), Some(l)) if n.mode == network::Mode::Isolated => {
                Some(Arc::new(n.attach(l.uid)?))
            }
            _ => None,
        };
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
            max_processes: self.resources.max_processes.clone(),
            hide: self.hide.clone(),
            cgroup,
            disk: ws.disk_limits(),
            enter_net: match (&self.network, &net) {
                (Some(n), Some(b)) => Some(n.enter(b)),
                _ => None,
            },
            no_net: self
                .network
                .as_ref()
                .is_some_and(|n| n.mode == network::Mode::None),
            resolv_conf: self.network.as_ref().and_then(|n| n.resolv_conf.clone()),
            seccomp: self.seccomp.clone(),
            _net: net,
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
        "mount and PID namespaces (in a container: --privileged, or CAP_SYS_ADMIN with seccomp, AppArmor and systempaths unconfined), and for the process limit prlimit (FREEAGENT_SANDBOX_MAX_PROCESSES=0 turns it off)"
    } else {
        "and unprivileged user namespaces (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, kernel.apparmor_restrict_unprivileged_userns=0), or a worker running as root"
    };
    format!(
        "this worker cannot isolate builds ({reason}). Builds need util-linux's unshare and setpriv, {needs}; or set FREEAGENT_SANDBOX=none to run builds unisolated (docs/sandbox.md)"
    )
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

#[cfg(test)]
mod tests;
