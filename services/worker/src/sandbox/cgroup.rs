//! A control group per build, so that the kernel caps what the build's processes use — memory
//! including its tmpfs and shared-memory pages, and CPU — and says afterwards whether it ran out
//! of memory. Both hierarchies exist in the field: v2 (one tree, `cgroup2`) and v1 (one tree per
//! controller). Builds' groups are made below the worker's own group, where an operator's limit
//! on the worker (a systemd unit, a container) also bounds its builds. This is a handful of file
//! writes into the kernel's interface, kept here rather than behind a general cgroup library.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Builds' CPU weight against the worker's (v1 `cpu.shares` against 1024 per task, v2
/// `cpu.weight` against 100): under contention the worker's heartbeats and log pumps win.
const V1_BUILD_SHARES: u32 = 256;
const V2_BUILD_WEIGHT: u32 = 25;
/// The CFS period a CPU quota is counted in (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// Where a v2 worker moves itself so that its own group may have children with controllers
/// (a v2 group holding processes cannot hand controllers down).
const V2_WORKER_LEAF: &str = "freeagent-worker";
const BUILD_PREFIX: &str = "freeagent-build-";

/// What one build may use.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
}

/// The hierarchy the worker lives in, with the directory of its own group in each controller.
#[derive(Debug, Clone, PartialEq)]
pub enum Hierarchy {
    V1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
    },
    V2 {
        own: PathBuf,
    },
}

/// Numbers this process's build groups (one counter for the process: names never repeat).
static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);

/// Where this worker makes its builds' groups.
#[derive(Debug)]
pub struct Cgroups {
    hierarchy: Hierarchy,
}

/// One build's group: its processes join it before any build code runs; removed when dropped
/// (the kernel keeps a group until its last process is gone, so removal is retried briefly).
#[derive(Debug)]
pub struct BuildCgroup {
    dirs: Vec<PathBuf>,
    memory_dir: PathBuf,
    version: u8,
    limits: Limits,
}

impl Cgroups {
    /// Finds the worker's groups from `/proc/self/cgroup` and `/proc/self/mountinfo`; on v2
    /// moves the worker into a leaf of its group and hands the memory and cpu controllers down.
    pub fn detect() -> Result<Self, String> {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let hierarchy = locate(&cgroup, &mountinfo)?;
        match &hierarchy {
            Hierarchy::V2 { own } => delegate_v2(own, std::process::id())?,
            // v1 needs the right to make groups in each tree (root): found out now, at start,
            // not at the first build.
            Hierarchy::V1 { memory, cpu } => {
                for dir in std::iter::once(memory).chain(cpu) {
                    let probe = dir.join(format!("{BUILD_PREFIX}probe-{}", std::process::id()));
                    std::fs::create_dir(&probe)
                        .and_then(|()| std::fs::remove_dir(&probe))
                        .map_err(|e| {
                            format!(
                                "cannot make a group under {} ({e}; not root?)",
                                dir.display()
                            )
                        })?;
                }
            }
        }
        let cgroups = Cgroups { hierarchy };
        cgroups.remove_leftovers();
        Ok(cgroups)
    }

    pub fn version(&self) -> u8 {
        match self.hierarchy {
            Hierarchy::V1 { .. } => 1,
            Hierarchy::V2 { .. } => 2,
        }
    }

    /// The memory limit on the worker's own group, if any (what its builds share).
    pub fn own_memory_limit(&self) -> Option<u64> {
        let (file, dir) = match &self.hierarchy {
            Hierarchy::V1 { memory, .. } => ("memory.limit_in_bytes", memory),
            Hierarchy::V2 { own } => ("memory.max", own),
        };
        // v1 reports "no limit" as a huge page-rounded number, v2 as `max`.
        read_number(&dir.join(file)).filter(|n| *n < 1 << 60)
    }

    /// Makes a group for one build with `limits`.
    pub fn create(&self, limits: Limits) -> std::io::Result<BuildCgroup> {
        let name = format!(
            "{BUILD_PREFIX}{}-{}",
            std::process::id(),
            NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
        );
        let (memory_dir, version) = match &self.hierarchy {
            Hierarchy::V1 { memory, .. } => (memory.join(&name), 1),
            Hierarchy::V2 { own } => (own.join(&name), 2),
        };
        let mut group = BuildCgroup {
            dirs: vec![],
            memory_dir,
            version,
            limits,
        };
        // Each directory is recorded as soon as it exists, so that a failure removes it.
        match &self.hierarchy {
            Hierarchy::V1 { memory, cpu } => {
                let mem = memory.join(&name);
                std::fs::create_dir(&mem)?;
                group.dirs.push(mem.clone());
                if let Some(bytes) = limits.memory {
                    write(&mem, "memory.limit_in_bytes", bytes)?;
                    // With swap accounting, memory plus swap gets the same cap: no swapping
                    // out of the limit. Without it the file is absent.
                    let memsw = mem.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        std::fs::write(memsw, bytes.to_string())?;
                    }
                }
                if let Some(cpu) = cpu {
                    let dir = cpu.join(&name);
                    std::fs::create_dir(&dir)?;
                    group.dirs.push(dir.clone());
                    write(&dir, "cpu.shares", V1_BUILD_SHARES)?;
                    if let Some(cpus) = limits.cpus {
                        write(&dir, "cpu.cfs_period_us", CPU_PERIOD_US)?;
                        write(&dir, "cpu.cfs_quota_us", quota_us(cpus))?;
                    }
                }
            }
            Hierarchy::V2 { own } => {
                let dir = own.join(&name);
                std::fs::create_dir(&dir)?;
                group.dirs.push(dir.clone());
                if let Some(bytes) = limits.memory {
                    write(&dir, "memory.max", bytes)?;
                    if dir.join("memory.swap.max").exists() {
                        write(&dir, "memory.swap.max", 0)?;
                    }
                }
                // An out-of-memory kill ends the whole build, not one process of it.
                write(&dir, "memory.oom.group", 1)?;
                write(&dir, "cpu.weight", V2_BUILD_WEIGHT)?;
                if let Some(cpus) = limits.cpus {
                    std::fs::write(
                        dir.join("cpu.max"),
                        format!("{} {CPU_PERIOD_US}", quota_us(cpus)),
                    )?;
                }
            }
        }
        Ok(group)
    }

    /// Groups a worker that died left behind (named after its pid; empty ones only: the kernel
    /// refuses the rest). Other live workers' groups are theirs, even before a build joins one.
    fn remove_leftovers(&self) {
        let parents: Vec<&PathBuf> = match &self.hierarchy {
            Hierarchy::V1 { memory, cpu } => std::iter::once(memory).chain(cpu).collect(),
            Hierarchy::V2 { own } => vec![own],
        };
        for parent in parents {
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let owner = name
                    .strip_prefix(BUILD_PREFIX)
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|pid| pid.parse::<u32>().ok());
                if owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
}

impl BuildCgroup {
    /// The files a process writes `0` into to join this group (one per hierarchy).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How many processes of the build the kernel killed for lack of memory.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            1 => "memory.oom_control",
            _ => "memory.events",
        };
        std::fs::read_to_string(self.memory_dir.join(file))
            .ok()
            .and_then(|s| field(&s, "oom_kill"))
            .unwrap_or(0)
    }
}

impl Drop for BuildCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            // The build's last processes may still be exiting when the job ends.
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
    }
}

/// The worker's group directories, from its `/proc/self/cgroup` and the cgroup mounts.
pub(super) fn locate(cgroup: &str, mountinfo: &str) -> Result<Hierarchy, String> {
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
    let v1 = |controller: &str| -> Option<PathBuf> {
        let path = cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls.split(',').any(|c| c == controller).then_some(path)
        })?;
        let m = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == controller))?;
        Some(m.dir_of(path))
    };
    if let Some(memory) = v1("memory") {
        return Ok(Hierarchy::V1 {
            memory,
            cpu: v1("cpu"),
        });
    }
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("the worker is in no memory cgroup (neither v1 nor v2)")?;
    let m = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or("cgroup v2 is not mounted in the worker's view (/sys/fs/cgroup)")?;
    Ok(Hierarchy::V2 {
        own: m.dir_of(path),
    })
}

/// On v2 a group with processes cannot enable controllers for its children: the worker moves
/// into a leaf of its own group first, with every other process of the group (`freeagent dev`
/// starts the services and workers in one group; a container's shell may share the worker's),
/// then enables memory and cpu below it. Needs the group delegated to the worker (root, or
/// systemd's `Delegate=yes`).
pub(super) fn delegate_v2(own: &Path, pid: u32) -> Result<(), String> {
    let available = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    for c in ["memory", "cpu"] {
        if !available.split_whitespace().any(|a| a == c) {
            return Err(format!(
                "the {c} controller is not delegated to the worker's cgroup {} (systemd: Delegate=yes)",
                own.display()
            ));
        }
    }
    let enabled = std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap_or_default();
    if ["memory", "cpu"]
        .iter()
        .all(|c| enabled.split_whitespace().any(|e| e == *c))
    {
        return Ok(());
    }
    let leaf = own.join(V2_WORKER_LEAF);
    let fail = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", own.display());
    if !leaf.is_dir() {
        std::fs::create_dir(&leaf).map_err(|e| fail("cannot make the worker's leaf group", e))?;
    }
    std::fs::write(leaf.join("cgroup.procs"), pid.to_string())
        .map_err(|e| fail("cannot move the worker into its leaf group", e))?;
    // The group's other processes follow (one that exits meanwhile is simply gone); a process
    // started meanwhile makes the kernel refuse the controllers, so a few rounds are tried.
    let mut last = None;
    for _ in 0..5 {
        let others = std::fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
        for other in others.split_whitespace().filter(|p| *p != pid.to_string()) {
            let _ = std::fs::write(leaf.join("cgroup.procs"), other);
        }
        match std::fs::write(own.join("cgroup.subtree_control"), "+memory +cpu") {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(fail(
        "cannot enable the memory and cpu controllers",
        last.unwrap_or_else(|| std::io::Error::other("busy")),
    ))
}

/// One cgroup mount from `/proc/self/mountinfo`.
struct Mount<'a> {
    root: &'a str,
    point: &'a str,
    fstype: &'a str,
    options: &'a str,
}

impl<'a> Mount<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (left, right) = line.split_once(" - ")?;
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        Some(Mount {
            root: l.get(3)?,
            point: l.get(4)?,
            fstype: r.first()?,
            options: r.get(2).copied().unwrap_or(""),
        })
    }

    /// The directory of the group at `path` (as `/proc/self/cgroup` names it) under this mount,
    /// which may show only a subtree (in a container its root is the container's group).
    fn dir_of(&self, path: &str) -> PathBuf {
        let rel = path
            .strip_prefix(self.root)
            .unwrap_or(path)
            .trim_start_matches('/');
        Path::new(self.point).join(rel)
    }
}

fn write(dir: &Path, file: &str, value: impl std::fmt::Display) -> std::io::Result<()> {
    std::fs::write(dir.join(file), value.to_string())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

fn quota_us(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64) as u64).max(1_000)
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `name N` from a flat-keyed cgroup file (`memory.events`, `memory.oom_control`).
fn field(s: &str, name: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_CGROUP: &str =
        "9:name=systemd:/\n4:memory:/process_api/9a3e\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    const V1_MOUNTS: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
        35 31 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
    const V2_CGROUP: &str = "0::/system.slice/freeagent-worker.service\n";
    const V2_MOUNTS: &str =
        "25 20 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn v1_finds_the_workers_memory_and_cpu_groups() {
        assert_eq!(
            locate(V1_CGROUP, V1_MOUNTS).unwrap(),
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory/process_api/9a3e".into(),
                cpu: Some("/sys/fs/cgroup/cpu".into()),
            }
        );
    }

    #[test]
    fn v1_with_cpu_and_cpuacct_joined_is_found_by_either_name() {
        let cgroup = "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n";
        let mounts = "40 31 0:33 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n\
            41 31 0:34 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
        // In a container the mount's root is the container's own group.
        assert_eq!(
            locate(cgroup, mounts).unwrap(),
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                cpu: Some("/sys/fs/cgroup/cpu,cpuacct".into()),
            }
        );
    }

    #[test]
    fn v2_finds_the_workers_group() {
        assert_eq!(
            locate(V2_CGROUP, V2_MOUNTS).unwrap(),
            Hierarchy::V2 {
                own: "/sys/fs/cgroup/system.slice/freeagent-worker.service".into()
            }
        );
        assert!(locate("0::/\n", "").is_err());
    }

    /// The v2 path on a directory standing for the worker's group (this machine has v1 only):
    /// the worker moves into a leaf, the controllers are handed down, a build's group gets
    /// its limits in v2's files.
    #[test]
    fn v2_delegation_and_limits_are_written_as_the_kernel_expects() {
        let own = tempfile::tempdir().unwrap();
        std::fs::write(
            own.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        std::fs::write(own.path().join("cgroup.subtree_control"), "").unwrap();
        // Another process shares the worker's group (a dev farm's service): it moves too.
        std::fs::write(own.path().join("cgroup.procs"), "4242\n77\n").unwrap();
        delegate_v2(own.path(), 4242).unwrap();
        let read = |p: &str| std::fs::read_to_string(own.path().join(p)).unwrap();
        // (A plain file keeps the last pid written; the kernel's adds each.)
        assert_eq!(read("freeagent-worker/cgroup.procs"), "77");
        assert_eq!(read("cgroup.subtree_control"), "+memory +cpu");

        let cgroups = Cgroups {
            hierarchy: Hierarchy::V2 {
                own: own.path().into(),
            },
        };
        let limits = Limits {
            memory: Some(64 << 20),
            cpus: Some(1.5),
        };
        let group = cgroups.create(limits).unwrap();
        let dir = &group.dirs[0];
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("memory.oom.group"), "1");
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("cpu.weight"), "25");
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(group.oom_kills(), 2);
    }

    #[test]
    fn v2_without_the_memory_controller_is_refused_with_the_fix() {
        let own = tempfile::tempdir().unwrap();
        std::fs::write(own.path().join("cgroup.controllers"), "cpu pids").unwrap();
        let e = delegate_v2(own.path(), 1).unwrap_err();
        assert!(e.contains("memory") && e.contains("Delegate=yes"), "{e}");
    }

    #[test]
    fn oom_kills_are_read_from_v1s_oom_control() {
        assert_eq!(
            field("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(quota_us(0.5), 50_000);
    }
}
