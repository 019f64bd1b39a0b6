//! Finding and signalling a build's processes: those left under a sandbox uid by a worker that
//! died, and every member of a running build's PID namespace.

use super::Level;
use std::io::Read;
use std::time::Duration;

/// Kills what a sandbox uid still runs before a build gets it: only a build of a worker that
/// died (and so never ended its namespace) can have left anything.
pub(super) fn kill_leftovers(uid: u32) {
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
pub(super) fn namespace_members(unshare_pid: u32) -> Option<Vec<i32>> {
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
