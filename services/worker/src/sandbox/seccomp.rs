//! The system calls a build may not make. Namespaces and a uid of its own leave a build the
//! kernel's whole interface; the calls below serve no build and are how sandboxes are escaped
//! or the kernel attacked: new user namespaces (which unlock every namespaced privilege),
//! `ptrace`, mounts, BPF, kernel modules, keyrings, `kexec`, entering other namespaces. The
//! worker binary itself applies the filter, as the last step before the build's shell
//! (`freeagent-worker __seccomp-exec -- /bin/sh -c …`): seccomp filters are inherited by every
//! process the build starts and cannot be lifted. `FREEAGENT_BUILD_SECCOMP=none` turns it off
//! for builds that need one of these (a browser's own sandbox, bubblewrap).

use freeagent_shared::config::{self, ConfigError};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// The first argument of the worker binary that makes it apply the filter and exec the rest.
pub const EXEC_ARG: &str = "__seccomp-exec";
pub const VAR: &str = "FREEAGENT_BUILD_SECCOMP";

/// Refused with EPERM, whatever their arguments.
const DENIED: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("setns", libc::SYS_setns),
    ("bpf", libc::SYS_bpf),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("keyctl", libc::SYS_keyctl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("acct", libc::SYS_acct),
];

/// Whether builds get the filter (`default`) or not (`none`).
pub fn from_env() -> Result<bool, ConfigError> {
    let raw = config::string(VAR, "default");
    match raw.trim() {
        "default" => Ok(true),
        "none" => {
            tracing::warn!(
                "FREEAGENT_BUILD_SECCOMP=none: builds may make any system call (new user namespaces, ptrace, bpf, …)"
            );
            Ok(false)
        }
        _ => Err(ConfigError::new(VAR, &raw, "default or none")),
    }
}

/// The `freeagent-worker` binary: this process's own, or (when the sandbox runs inside a test
/// executable) the one built beside it.
pub fn worker_binary() -> Result<std::path::PathBuf, String> {
    const NAME: &str = "freeagent-worker";
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    if me.file_name().is_some_and(|n| n == NAME) {
        return Ok(me);
    }
    me.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(NAME))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no {NAME} beside {} (build the workspace first)",
                me.display()
            )
        })
}

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for {}: {e}", std::env::consts::ARCH))
}

/// The two programs: EPERM for the denied calls and for `clone`/`unshare` asking for a new user
/// namespace; ENOSYS for `clone3`, whose flags live in memory a filter cannot read (C libraries
/// then fall back to `clone`, which the first program checks).
pub fn programs() -> Result<Vec<BpfProgram>, String> {
    let arch = arch()?;
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(_, nr)| (*nr, vec![])).collect();
    let new_user_ns = || -> Result<Vec<SeccompRule>, String> {
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_NEWUSER as u64),
            libc::CLONE_NEWUSER as u64,
        )
        .map_err(|e| e.to_string())?;
        Ok(vec![
            SeccompRule::new(vec![cond]).map_err(|e| e.to_string())?,
        ])
    };
    denied.insert(libc::SYS_unshare, new_user_ns()?);
    denied.insert(libc::SYS_clone, new_user_ns()?);
    let eperm = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    [eperm, clone3]
        .into_iter()
        .map(|f| BpfProgram::try_from(f).map_err(|e| e.to_string()))
        .collect()
}

/// `freeagent-worker __seccomp-exec -- PROGRAM ARGS…`: applies the filter to this process and
/// becomes PROGRAM. Returns only on failure (the build then fails, saying why).
pub fn exec(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let Some(program) = args
        .iter()
        .position(|a| a == "--")
        .and_then(|i| args.get(i + 1..))
    else {
        eprintln!("freeagent-worker {EXEC_ARG}: usage: {EXEC_ARG} -- PROGRAM [ARGS…]");
        return std::process::ExitCode::from(2);
    };
    let Some((first, rest)) = program.split_first() else {
        eprintln!("freeagent-worker {EXEC_ARG}: no program to run");
        return std::process::ExitCode::from(2);
    };
    let applied = programs().and_then(|ps| {
        ps.iter()
            .try_for_each(|p| seccompiler::apply_filter(p).map_err(|e| e.to_string()))
    });
    if let Err(e) = applied {
        eprintln!("[freeagent] the build's system-call filter could not be applied: {e}");
        return std::process::ExitCode::from(126);
    }
    // The descriptor this binary was run through (and anything else the set-up left open) does
    // not reach the build.
    close_inherited();
    let e = std::process::Command::new(first).args(rest).exec();
    eprintln!("[freeagent] cannot run {}: {e}", first.to_string_lossy());
    std::process::ExitCode::from(127)
}

/// Marks every descriptor above stderr close-on-exec.
fn close_inherited() {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
}

#[cfg(test)]
mod tests {
    /// A worker binary under /tmp (a fresh clone's target directory, say) is hidden from the
    /// build by its private /tmp; the set-up reaches it through a descriptor opened before the
    /// mounts, the filter applies, and the descriptor does not reach the build.
    #[test]
    fn the_filter_applies_from_a_worker_binary_the_build_cannot_see() {
        use crate::sandbox::{Build, Level, Sandbox};
        use crate::workspace::Workspace;
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let mut sandbox = Sandbox::from_env(Some(&work), 1).unwrap();
        if sandbox.level() == Level::None || sandbox.seccomp.is_none() {
            return;
        }
        let hidden = tempfile::Builder::new()
            .prefix("bin-")
            .tempdir_in("/tmp")
            .unwrap();
        let copy = hidden.path().join("freeagent-worker");
        std::fs::copy(super::worker_binary().unwrap(), &copy).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(hidden.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        sandbox.seccomp = Some(copy.clone());
        let build = Build {
            id: "b".into(),
            attempt: "1".into(),
            platform: "android".into(),
        };
        let ws = Workspace::create(Some(&work)).unwrap();
        let launch = sandbox.prepare(&ws, &build, None).unwrap();
        let script = format!(
            "test -e {} && echo 'binary visible' || echo 'binary hidden'\n\
             ls /proc/$$/fd\n\
             unshare --user true 2>/dev/null && echo 'userns allowed' || echo 'userns refused'\n",
            copy.display()
        );
        let out = launch.command(&script).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains("binary hidden"), "{stdout}");
        assert!(stdout.contains("userns refused"), "{stdout}");
        let fds: Vec<&str> = stdout
            .lines()
            .filter(|l| l.chars().all(|c| c.is_ascii_digit()))
            .collect();
        assert!(
            fds.iter().all(|fd| ["0", "1", "2"].contains(fd)),
            "{stdout}"
        );
    }

    #[test]
    fn the_filter_compiles_for_this_machine() {
        let programs = super::programs().unwrap();
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty()));
    }
}
