//! What one build may use of the machine: processes (`FREEAGENT_SANDBOX_MAX_PROCESSES`), memory
//! with its tmpfs and shared-memory pages (`FREEAGENT_BUILD_MEMORY`) and CPU
//! (`FREEAGENT_BUILD_CPUS`). The defaults share the machine among the builds the worker runs at
//! once and keep a reserve for the worker and the OS, so that no build can starve them.

use super::Level;
use super::cgroup::{Cgroups, Limits};
use freeagent_shared::config::{self, ConfigError};
use std::path::PathBuf;
use std::sync::Arc;

/// The most processes (and threads) a build's uid may run at once, by default: far above what
/// compilers and test runners start, far below what stops the machine.
pub const DEFAULT_MAX_PROCESSES: u32 = 4096;
/// Below this the set-up and the start-up probe cannot run.
pub(super) const MIN_MAX_PROCESSES: u32 = 32;
/// Below this no build tool starts, and the start-up probe would fail for the wrong reason.
const MIN_BUILD_MEMORY: u64 = 32 << 20;
/// Kept for the worker and the OS from the default share: a tenth of the memory, at least this.
const MIN_RESERVE: u64 = 1 << 30;

pub const MEMORY_VAR: &str = "FREEAGENT_BUILD_MEMORY";
pub const CPUS_VAR: &str = "FREEAGENT_BUILD_CPUS";

/// Every limit a build of this worker runs under.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// util-linux's `prlimit` and the most processes a build's uid may have (root workers).
    pub max_processes: Option<(PathBuf, u32)>,
    /// Where builds' control groups are made; none when the machine offers none to the worker.
    pub cgroups: Option<Arc<Cgroups>>,
    pub limits: Limits,
}

impl Resources {
    pub fn from_env(level: Level, builds_at_once: usize) -> Result<Self, ConfigError> {
        let max_processes = process_limit(level)?;
        if level == Level::None {
            return Ok(Resources {
                max_processes,
                ..Default::default()
            });
        }
        let memory_raw = config::var(MEMORY_VAR);
        let cpus_raw = config::var(CPUS_VAR);
        let memory = match &memory_raw {
            None => None,
            Some(v) => Some(parse_memory(v)?),
        };
        let cpus = match &cpus_raw {
            None => None,
            Some(v) => Some(parse_cpus(v)?),
        };
        let cgroups = match Cgroups::detect() {
            Ok(c) => c,
            Err(why) => {
                // An operator who asked for a limit gets it or no worker.
                for (var, raw, asked) in [
                    (MEMORY_VAR, &memory_raw, memory.flatten().is_some()),
                    (CPUS_VAR, &cpus_raw, cpus.flatten().is_some()),
                ] {
                    if asked {
                        return Err(ConfigError::new(
                            var,
                            raw.as_deref().unwrap_or_default(),
                            format!(
                                "0 (no limit): this worker cannot make control groups for its builds ({why})"
                            ),
                        ));
                    }
                }
                tracing::warn!(
                    reason = %why,
                    "builds have no memory or CPU limit: one build can use all of this machine's memory. Run the worker as root (or give it a delegated cgroup v2 subtree)"
                );
                return Ok(Resources {
                    max_processes,
                    ..Default::default()
                });
            }
        };
        let builds = builds_at_once.max(1);
        let limits = Limits {
            memory: memory.unwrap_or_else(|| {
                let total = machine_memory().unwrap_or(4 << 30);
                let available = cgroups.own_memory_limit().map_or(total, |l| l.min(total));
                Some(default_share(available, builds))
            }),
            cpus: cpus.unwrap_or_else(|| {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                Some(cores as f64 / builds as f64)
            }),
        };
        Ok(Resources {
            max_processes,
            cgroups: Some(Arc::new(cgroups)),
            limits,
        })
    }

    /// One line for the worker's log.
    pub fn describe(&self) -> String {
        let processes = match &self.max_processes {
            Some((_, n)) => format!("at most {n} processes"),
            None => "no process limit".into(),
        };
        match &self.cgroups {
            None => format!("{processes}; no memory or CPU limit"),
            Some(c) => format!(
                "{processes}; memory {}; CPUs {} (cgroup v{})",
                self.limits.memory.map_or("unlimited".into(), human),
                self.limits
                    .cpus
                    .map_or("unlimited".into(), |c| format!("{c:.2}")),
                c.version()
            ),
        }
    }
}

/// `FREEAGENT_BUILD_MEMORY`: a size, or 0 for no limit.
fn parse_memory(raw: &str) -> Result<Option<u64>, ConfigError> {
    let bad = || {
        ConfigError::new(
            MEMORY_VAR,
            raw,
            format!(
                "a size of at least {} such as 4GiB, or 0 for no limit",
                human(MIN_BUILD_MEMORY)
            ),
        )
    };
    match config::parse_bytes(raw).ok_or_else(bad)? {
        0 => Ok(None),
        n if n < MIN_BUILD_MEMORY => Err(bad()),
        n => Ok(Some(n)),
    }
}

/// `FREEAGENT_BUILD_CPUS`: a number of CPUs (fractions allowed), or 0 for no limit.
fn parse_cpus(raw: &str) -> Result<Option<f64>, ConfigError> {
    match raw.trim().parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(n) if n.is_finite() && n >= 0.01 => Ok(Some(n)),
        _ => Err(ConfigError::new(
            CPUS_VAR,
            raw,
            "a number of CPUs such as 2 or 0.5, or 0 for no limit",
        )),
    }
}

/// Each build's memory by default: what the worker may use, less a reserve for the worker and
/// the OS, shared among the builds it runs at once.
pub(super) fn default_share(available: u64, builds: usize) -> u64 {
    let reserve = (available / 10).max(MIN_RESERVE).min(available / 2);
    ((available - reserve) / builds.max(1) as u64).max(MIN_BUILD_MEMORY)
}

fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// A size as people read it: `64 MiB`, `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if bytes >= GIB {
        let g = bytes as f64 / GIB as f64;
        if bytes.is_multiple_of(GIB) {
            format!("{} GiB", bytes / GIB)
        } else {
            format!("{g:.1} GiB")
        }
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// `FREEAGENT_SANDBOX_MAX_PROCESSES` (0: no limit), and the `prlimit` that sets it. Only where
/// each build has a uid of its own: the limit counts a uid's processes, and a build that shares
/// the worker's uid would share the count with the worker and every other build.
fn process_limit(level: Level) -> Result<Option<(PathBuf, u32)>, ConfigError> {
    let n: u32 = config::parse(
        "FREEAGENT_SANDBOX_MAX_PROCESSES",
        DEFAULT_MAX_PROCESSES,
        "the most processes and threads a build may run at once (0: no limit)",
    )?;
    if n != 0 && n < MIN_MAX_PROCESSES {
        return Err(ConfigError::new(
            "FREEAGENT_SANDBOX_MAX_PROCESSES",
            &n.to_string(),
            format!("0 (no limit) or at least {MIN_MAX_PROCESSES}"),
        ));
    }
    if level != Level::Uid || n == 0 {
        return Ok(None);
    }
    // Never above the worker's own hard limit: raising it needs a capability the worker may
    // lack (the set-up would fail), and an operator's lower limit stands.
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC)
        .map_or(u64::MAX, |(_, hard)| hard);
    let n = match u32::try_from(hard) {
        Ok(hard) if hard < n => {
            tracing::warn!(
                limit = hard,
                "the worker's own process limit is below FREEAGENT_SANDBOX_MAX_PROCESSES; builds get the worker's"
            );
            hard
        }
        _ => n,
    };
    match super::find_tool("prlimit") {
        Some(p) => Ok(Some((p, n))),
        None => {
            tracing::warn!(
                "util-linux's prlimit is not installed: builds have no process limit, and a fork bomb can starve this machine"
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_share_leaves_a_reserve_and_splits_the_rest() {
        // 24 GiB, one build at a time: a tenth stays with the worker and the OS.
        assert_eq!(
            default_share(24 << 30, 1),
            (24u64 << 30) - (24u64 << 30) / 10
        );
        // 4 GiB, two at once: at least 1 GiB stays, the rest is halved.
        assert_eq!(default_share(4 << 30, 2), 3 << 29);
        // Tiny machines still give each build something a tool can start in.
        assert_eq!(default_share(64 << 20, 8), MIN_BUILD_MEMORY);
    }

    #[test]
    fn memory_and_cpus_parse_with_zero_for_no_limit() {
        assert_eq!(parse_memory("2GiB").unwrap(), Some(2 << 30));
        assert_eq!(parse_memory("0").unwrap(), None);
        assert!(parse_memory("1MiB").is_err());
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_cpus("1.5").unwrap(), Some(1.5));
        assert_eq!(parse_cpus("0").unwrap(), None);
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("NaN").is_err());
    }

    /// A real sandboxed build under 64 MiB and half a CPU: it joins its group (memory and cpu),
    /// offers itself first to the out-of-memory killer, gets temp directories sized to its
    /// limit, and filling two of them past the limit (each under its own size) ends the build
    /// with the kernel's out-of-memory kill, which the launch reports.
    #[test]
    fn a_build_meets_its_memory_limit_with_tmpfs_pages_counted() {
        use crate::sandbox::{Build, Sandbox};
        use crate::workspace::Workspace;
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let mut sandbox = Sandbox::from_env(Some(&work), 1).unwrap();
        if sandbox.resources.cgroups.is_none() {
            eprintln!("this machine gives the worker no cgroups: nothing to test");
            return;
        }
        sandbox.resources.limits = Limits {
            memory: Some(64 << 20),
            cpus: Some(0.5),
        };
        let build = Build {
            id: "b".into(),
            attempt: "1".into(),
            platform: "android".into(),
        };
        let ws = Workspace::create(Some(&work)).unwrap();
        let launch = sandbox.prepare(&ws, &build, None).unwrap();
        let group = launch.cgroup.clone().unwrap();
        let quota = match group.procs_files().as_slice() {
            // v1: the cpu hierarchy's group holds the quota.
            [_, cpu] => std::fs::read_to_string(cpu.with_file_name("cpu.cfs_quota_us")),
            [one] => std::fs::read_to_string(one.with_file_name("cpu.max")),
            other => panic!("{other:?}"),
        }
        .unwrap();
        assert!(quota.starts_with("50000"), "{quota}");
        let script = "cat /proc/self/oom_score_adj
                      grep -c freeagent-build- /proc/self/cgroup
                      grep ' /dev/shm ' /proc/mounts | tail -n 1
                      set -e
                      head -c 40M /dev/zero > /dev/shm/a
                      head -c 40M /dev/zero > /tmp/b
                      echo survived
";
        let out = launch.command(script).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.first(), Some(&"1000"), "{out:?}");
        assert_eq!(
            lines.get(1).copied(),
            Some(group.procs_files().len().to_string().as_str()),
            "{out:?}"
        );
        assert!(
            lines.get(2).is_some_and(|l| l.contains("size=65536k")),
            "{out:?}"
        );
        assert!(!out.status.success(), "{out:?}");
        assert!(!stdout.contains("survived"), "{out:?}");
        let why = launch
            .out_of_memory()
            .expect("the kernel's out-of-memory kill");
        assert!(why.starts_with("out of memory (limit 64 MiB)"), "{why}");

        // The next build, in a group of its own, runs as if nothing happened.
        let ws = Workspace::create(Some(&work)).unwrap();
        let launch = sandbox.prepare(&ws, &build, None).unwrap();
        let out = launch
            .command("head -c 16M /dev/zero > /dev/shm/a && echo fine")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(launch.out_of_memory(), None);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(2 << 30), "2 GiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
