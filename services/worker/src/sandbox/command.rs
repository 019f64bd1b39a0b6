//! The command that runs one build at its sandbox's level, and the whole environment it gets.

use super::{Launch, Level, SETUP, SETUP_PATH};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

impl Launch {
    pub fn level(&self) -> Level {
        self.level
    }

    /// Why the build failed, when the kernel killed its processes for lack of memory.
    pub fn out_of_memory(&self) -> Option<String> {
        let group = self.cgroup.as_ref()?;
        let kills = group.oom_kills();
        (kills > 0).then(|| {
            format!(
                "out of memory (limit {}): the kernel killed {kills} of the build's processes; FREEAGENT_BUILD_MEMORY on the worker sets the limit",
                group
                    .limits()
                    .memory
                    .map_or("none".into(), super::limits::human)
            )
        })
    }

    /// Why the build failed, when it filled its file system (`FREEAGENT_BUILD_DISK`, `_INODES`).
    pub fn disk_full(&self) -> Option<String> {
        self.disk?.exhausted(&self.workspace)
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
            if !self.hide.is_empty() {
                cmd.env("FREEAGENT_SANDBOX_HIDE", super::hidden::joined(&self.hide));
            }
            if let Some(group) = &self.cgroup {
                let files: Vec<PathBuf> = group.procs_files();
                cmd.env("FREEAGENT_SANDBOX_CGROUP", super::hidden::joined(&files));
                if let Some(bytes) = group.limits().memory {
                    cmd.env("FREEAGENT_SANDBOX_TMP_SIZE", bytes.to_string());
                }
            }
            if let Some(worker) = &self.seccomp {
                cmd.env("FREEAGENT_SANDBOX_SECCOMP", worker);
            }
            if let Some(r) = &self.resolv_conf {
                cmd.env("FREEAGENT_SANDBOX_RESOLV", r);
            }
            if let Some((prlimit, n)) = &self.max_processes {
                cmd.env("FREEAGENT_SANDBOX_PRLIMIT", prlimit)
                    .env("FREEAGENT_SANDBOX_NPROC", n.to_string());
            }
        }
        cmd
    }
}

/// The program and arguments that run `command` at the launch's level.
pub(super) fn argv(l: &Launch, command: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    if let Some(enter) = &l.enter_net {
        v.extend(enter.iter().map(OsString::from));
    }
    match l.level {
        Level::None => return ["/bin/sh", "-c", command].map(OsString::from).to_vec(),
        Level::Uid => v.push(l.unshare.clone().into()),
        Level::Userns => {
            v.push(l.unshare.clone().into());
            v.extend(["--user", "--map-root-user"].map(OsString::from));
        }
    }
    if l.no_net {
        v.push("--net".into());
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
    if l.seccomp.is_some() {
        // The set-up opened the worker binary on this descriptor before its mounts, which may
        // hide the binary's directory (a private /tmp, a hidden farm directory).
        v.push("--".into());
        v.push(super::SECCOMP_EXEC_PATH.into());
        v.push(super::seccomp::EXEC_ARG.into());
    }
    v.extend(["--", "/bin/sh", "-c", command].map(OsString::from));
    v
}

/// The build's variables, with paths as the build sees them.
pub(super) struct BuildVars<'a> {
    pub(super) id: &'a str,
    pub(super) attempt: &'a str,
    pub(super) platform: &'a str,
    pub(super) source_dir: PathBuf,
    pub(super) output_dir: PathBuf,
    pub(super) home: PathBuf,
    pub(super) tmp: PathBuf,
    pub(super) certs: Option<PathBuf>,
}

/// The whole environment of a build: the documented variables, `PATH`, `HOME`, `TMPDIR` and
/// `LANG`. Nothing else of the worker's environment (its API key, NATS URL, …) reaches it.
pub(super) fn build_env(v: &BuildVars<'_>, path: &str, lang: &str) -> Vec<(String, String)> {
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
