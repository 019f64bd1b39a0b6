//! A file system of its own per build, so that one build can fill neither the worker's disk nor
//! its inodes (and with them every other build and the worker). Each workspace is an ext4 image
//! of `FREEAGENT_BUILD_DISK` bytes and `FREEAGENT_BUILD_INODES` inodes, loop-mounted at the
//! workspace's path before the source is downloaded and unpacked, and unmounted and deleted
//! with the workspace. The image is a sparse file: it takes on the host only what the build
//! writes. e2fsprogs' `mkfs.ext4` and util-linux's `mount -o loop` do the work (no maintained
//! crate makes file systems), so only a root worker gives builds a quota.

use super::Level;
use super::limits::human;
use freeagent_shared::config::{self, ConfigError};
use nix::mount::MntFlags;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const DISK_VAR: &str = "FREEAGENT_BUILD_DISK";
pub const INODES_VAR: &str = "FREEAGENT_BUILD_INODES";
/// Below this the workspace's own directories and the start-up probe hardly fit.
const MIN_BUILD_DISK: u64 = 16 << 20;
const MIN_BUILD_INODES: u64 = 128;
/// The file system's block size: no file system can use more than one inode per block.
const BLOCK: u64 = 4096;
/// ext4's own default ratio: one inode per 16 KiB (65,536 per GiB).
const BYTES_PER_INODE: u64 = 16 << 10;
/// Images are named after the worker's pid, so that a worker can tell a dead worker's.
const IMAGE_PREFIX: &str = "freeagent-disk-";
/// Mounted without set-uid, devices or access times; the kernel never zeroes the inode tables
/// in the background (`mkfs` left them unwritten: zeroing would write them all to the host).
const MOUNT_OPTIONS: &str = "loop,nosuid,nodev,noatime,noinit_itable";

/// Numbers this process's images (one counter for the process: names never repeat).
static NEXT_IMAGE: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What one build's file system holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLimits {
    pub bytes: u64,
    pub inodes: u64,
}

/// How this worker makes its builds' file systems.
#[derive(Debug, Clone)]
pub struct Disks {
    limits: DiskLimits,
    /// Where the images live: the work dir, whose space they take.
    images: PathBuf,
    mkfs: PathBuf,
    mount: PathBuf,
}

/// One build's mounted file system: unmounted, and its image deleted, when dropped.
#[derive(Debug)]
pub struct BuildDisk {
    image: PathBuf,
    mountpoint: PathBuf,
    limits: DiskLimits,
}

impl Disks {
    /// Reads `FREEAGENT_BUILD_DISK` and `FREEAGENT_BUILD_INODES`, removes what dead workers
    /// left, and makes a trial file system. Where builds cannot get one (not root, sandbox off,
    /// tools missing) the worker says so once and builds have no quota; an operator who set a
    /// size gets it or no worker. By default each build gets an equal share of the work dir's
    /// free space (less a reserve, as for memory), so that the images of the builds running at
    /// once fit in what is free: a sparse image larger than that would not protect the disk.
    pub fn from_env(
        level: Level,
        work_dir: Option<&Path>,
        builds_at_once: usize,
    ) -> Result<Option<Self>, ConfigError> {
        let raw = config::var(DISK_VAR);
        let asked = match raw.as_deref().map(parse_disk).transpose()? {
            Some(None) => return Ok(None),
            other => other.flatten(),
        };
        let inodes = config::var(INODES_VAR)
            .as_deref()
            .map(parse_inodes)
            .transpose()?;
        let give_up = |why: String| -> Result<Option<Self>, ConfigError> {
            match (asked, level) {
                (Some(_), Level::Uid | Level::Userns) => Err(ConfigError::new(
                    DISK_VAR,
                    raw.as_deref().unwrap_or_default(),
                    format!("0 (no quota): {why}"),
                )),
                _ => {
                    tracing::warn!(
                        reason = %why,
                        "builds have no disk quota: one build can fill the work dir's file system (or its inodes) and break every other build. Run the worker as root with FREEAGENT_SANDBOX=auto or uid (docs/sandbox.md)"
                    );
                    Ok(None)
                }
            }
        };
        match level {
            Level::Uid => {}
            Level::Userns => {
                return give_up("mounting a file system per build needs a root worker".into());
            }
            Level::None => return give_up("FREEAGENT_SANDBOX=none".into()),
        }
        let images = work_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let (Some(mkfs), Some(mount)) = (super::find_tool("mkfs.ext4"), super::find_tool("mount"))
        else {
            return give_up("e2fsprogs' mkfs.ext4 or util-linux's mount is not installed".into());
        };
        let free = std::fs::create_dir_all(&images)
            .and_then(|()| nix::sys::statvfs::statvfs(&images).map_err(std::io::Error::from));
        let free = match free {
            Ok(s) => free_in(&s).0,
            Err(e) => return give_up(format!("cannot read {}: {e}", images.display())),
        };
        remove_leftovers(&images);
        let bytes = asked.unwrap_or_else(|| {
            super::limits::default_share(free, builds_at_once).max(MIN_BUILD_DISK) / BLOCK * BLOCK
        });
        if asked.is_some() && bytes.saturating_mul(builds_at_once as u64) > free {
            tracing::warn!(
                free = %human(free),
                "FREEAGENT_BUILD_DISK × FREEAGENT_WORKER_MAX_CONCURRENT is more than the work dir's free space: builds together can still fill it"
            );
        }
        let inodes = match inodes {
            None => bytes / BYTES_PER_INODE,
            Some(0) => bytes / BLOCK,
            Some(n) if n <= bytes / BLOCK => n,
            Some(n) => {
                return Err(ConfigError::new(
                    INODES_VAR,
                    &n.to_string(),
                    format!(
                        "at most one per 4 KiB of FREEAGENT_BUILD_DISK ({})",
                        bytes / BLOCK
                    ),
                ));
            }
        }
        .max(MIN_BUILD_INODES);
        let disks = Disks {
            limits: DiskLimits { bytes, inodes },
            images,
            mkfs,
            mount,
        };
        let trial = tempfile::Builder::new()
            .prefix("disk-trial-")
            .tempdir_in(&disks.images)
            .map_err(DiskError::from)
            .and_then(|dir| disks.mount(dir.path()).map(drop));
        match trial {
            Ok(()) => Ok(Some(disks)),
            Err(e) => give_up(format!("a trial file system failed: {e}")),
        }
    }

    pub fn limits(&self) -> DiskLimits {
        self.limits
    }

    /// Makes a file system for one build and mounts it on the empty directory `at`.
    pub fn mount(&self, at: &Path) -> Result<BuildDisk, DiskError> {
        use std::os::unix::fs::OpenOptionsExt;
        let image = self.images.join(format!(
            "{IMAGE_PREFIX}{}-{}.img",
            std::process::id(),
            NEXT_IMAGE.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&image)?;
        // From here on, whatever fails, dropping `disk` unmounts and deletes what was made.
        let disk = BuildDisk {
            image,
            mountpoint: at.to_path_buf(),
            limits: self.limits,
        };
        file.set_len(self.limits.bytes)?;
        drop(file);
        // No journal (the file system dies with the build, or at the next start after a
        // crash), no reserve for root, inode tables left unwritten: fast, and sparse.
        let mut mkfs = std::process::Command::new(&self.mkfs);
        mkfs.args(["-q", "-F", "-b", "4096", "-m", "0", "-O", "^has_journal"])
            .args(["-E", "lazy_itable_init=1,nodiscard", "-N"])
            .arg(self.limits.inodes.to_string())
            .arg("--")
            .arg(&disk.image);
        run(mkfs)?;
        // `mount -o loop` sets the loop device to detach itself when the last mount goes.
        let mut mount = std::process::Command::new(&self.mount);
        mount
            .args(["-t", "ext4", "-o", MOUNT_OPTIONS])
            .arg(&disk.image)
            .arg(at);
        run(mount)?;
        // The build finds its workspace as without a quota.
        std::fs::remove_dir(at.join("lost+found"))?;
        Ok(disk)
    }

    /// One line for the worker's log.
    pub fn describe(disks: Option<&Disks>) -> String {
        match disks {
            Some(d) => format!(
                "disk {} and {} inodes (a file system of its own)",
                human(d.limits.bytes),
                d.limits.inodes
            ),
            None => "no disk quota".into(),
        }
    }
}

impl BuildDisk {
    pub fn limits(&self) -> DiskLimits {
        self.limits
    }
}

impl Drop for BuildDisk {
    /// Detached at once, busy or not: the build's processes are gone, and the kernel frees
    /// the loop device (and with it the deleted image's blocks) when the last reference to
    /// the file system goes.
    fn drop(&mut self) {
        match nix::mount::umount2(&self.mountpoint, MntFlags::MNT_DETACH) {
            // Not mounted: making it failed.
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                tracing::warn!(mountpoint = %self.mountpoint.display(), error = %e, "cannot unmount a build's file system")
            }
        }
        if let Err(e) = std::fs::remove_file(&self.image)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(image = %self.image.display(), error = %e, "cannot delete a build's file system image");
        }
    }
}

impl DiskLimits {
    /// Why the build failed, when its file system at `root` is (nearly) full.
    pub fn exhausted(&self, root: &Path) -> Option<String> {
        let (bytes, inodes) = free_in(&nix::sys::statvfs::statvfs(root).ok()?);
        self.verdict(bytes, inodes)
    }

    /// "Full" leaves some slack: ext4 refuses a write with a little space still free (what a
    /// large write needs at once, blocks kept for its own metadata).
    fn verdict(&self, bytes_free: u64, inodes_free: u64) -> Option<String> {
        if inodes_free <= (self.inodes / 1000).max(8) {
            Some(format!(
                "out of inodes (limit {}, {INODES_VAR}): the build's workspace can hold no more files or directories",
                self.inodes
            ))
        } else if bytes_free < (self.bytes / 1000).max(1 << 20) {
            Some(format!(
                "disk full (limit {}, {DISK_VAR}): the build's workspace (its source, output, HOME and TMPDIR) has no space left",
                human(self.bytes)
            ))
        } else {
            None
        }
    }
}

/// The bytes and inodes an unprivileged user may still take (the kernel's types are 32 bits
/// wide on some machines: hence the conversions).
#[allow(clippy::useless_conversion)]
fn free_in(s: &nix::sys::statvfs::Statvfs) -> (u64, u64) {
    (
        u64::from(s.blocks_available()) * u64::from(s.fragment_size()),
        u64::from(s.files_available()),
    )
}

/// `FREEAGENT_BUILD_DISK`: a size, or 0 for no quota.
fn parse_disk(raw: &str) -> Result<Option<u64>, ConfigError> {
    let bad = || {
        ConfigError::new(
            DISK_VAR,
            raw,
            format!(
                "a size of at least {} such as 20G or 512MiB, or 0 for no quota",
                human(MIN_BUILD_DISK)
            ),
        )
    };
    match config::parse_bytes(raw).ok_or_else(bad)? {
        0 => Ok(None),
        n if n < MIN_BUILD_DISK => Err(bad()),
        n => Ok(Some(n / BLOCK * BLOCK)),
    }
}

/// `FREEAGENT_BUILD_INODES`: a number of files and directories, or 0 for as many as the disk
/// can hold (one per block).
fn parse_inodes(raw: &str) -> Result<u64, ConfigError> {
    match raw.trim().replace('_', "").parse::<u64>() {
        Ok(n) if n == 0 || n >= MIN_BUILD_INODES => Ok(n),
        _ => Err(ConfigError::new(
            INODES_VAR,
            raw,
            format!(
                "a number of files of at least {MIN_BUILD_INODES}, or 0 for one per 4 KiB of FREEAGENT_BUILD_DISK"
            ),
        )),
    }
}

fn run(mut cmd: std::process::Command) -> Result<(), DiskError> {
    let out = cmd
        .env_clear()
        .env("PATH", super::SETUP_PATH)
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(DiskError::Tool {
        tool: cmd.get_program().to_string_lossy().into_owned(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// File systems and images a dead worker left (named after its pid): unmounted and deleted,
/// with the empty directory one was mounted on. Live workers' disks are theirs.
fn remove_leftovers(images: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for (mountpoint, device) in loop_mounts(&mountinfo) {
        let Ok(backing) = std::fs::read_to_string(format!("/sys/block/{device}/loop/backing_file"))
        else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let backing = Path::new(backing.strip_suffix(" (deleted)").unwrap_or(backing));
        if dead_owner(backing) {
            tracing::warn!(mountpoint = %mountpoint.display(), "removing a build file system a dead worker left");
            let _ = nix::mount::umount2(&mountpoint, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(&mountpoint);
            let _ = std::fs::remove_file(backing);
        }
    }
    for entry in std::fs::read_dir(images).into_iter().flatten().flatten() {
        if dead_owner(&entry.path()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The pid of the worker that made an image, from its name.
fn owner(image: &Path) -> Option<u32> {
    image
        .file_name()?
        .to_str()?
        .strip_prefix(IMAGE_PREFIX)?
        .strip_suffix(".img")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn dead_owner(image: &Path) -> bool {
    owner(image).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// The mount point and loop device (`loop3`) of every loop-mounted ext4 in a mountinfo.
fn loop_mounts(mountinfo: &str) -> Vec<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let (fstype, device) = (r.next()?, r.next()?.strip_prefix("/dev/")?);
            (fstype == "ext4" && device.starts_with("loop"))
                .then(|| (unescape(point), device.to_owned()))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests;
