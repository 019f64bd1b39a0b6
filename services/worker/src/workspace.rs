//! A scratch directory per build: download the source (checking its SHA-256), unpack it (zip or
//! tar.gz, refusing any entry that would land outside the directory, and links), and hold the
//! output directory the build writes its artifact to. Also the build's private scratch
//! directory (its `HOME`) and temp directory (`TMPDIR`). Removed when dropped, whatever
//! permissions the build left on it.

use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("could not download {what}: {reason}")]
    Download {
        what: &'static str,
        reason: String,
        /// Worth another try (the connection failed, or storage answered 502–504).
        transient: bool,
    },
    #[error("{what} checksum mismatch: expected {expected}, got {actual}")]
    Checksum {
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("the source archive is not a zip or tar.gz file")]
    UnknownFormat,
    #[error("the source archive is unsafe: entry {0:?} would land outside the build directory")]
    Escape(String),
    #[error("the source archive is unreadable: {0}")]
    Archive(String),
    #[error("the source archive unpacks to more than {limit} bytes ({why}); nothing was kept")]
    TooBig { limit: u64, why: String },
    #[error(
        "the source archive has more than {limit} entries (FREEAGENT_UNPACK_ENTRIES); nothing was kept"
    )]
    TooManyEntries { limit: usize },
    #[error("could not make the build's file system: {0}")]
    Disk(#[from] crate::sandbox::DiskError),
    #[error("workspace I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Workspace {
    /// The build's own file system, mounted on `dir` (`sandbox::Disks`): unmounted before
    /// `dir` is removed, which then finds an empty directory.
    disk: Option<crate::sandbox::BuildDisk>,
    dir: tempfile::TempDir,
    /// The sandbox uid the build ran as: released only after `dir` is removed (fields drop in
    /// order), so no later build with that uid can ever find this one's files.
    lease: std::sync::OnceLock<crate::sandbox::UidLease>,
}

impl Workspace {
    pub fn create(parent: Option<&Path>) -> Result<Self, WorkspaceError> {
        Self::create_sized(parent, None)
    }

    /// A workspace on a file system of its own made by `disks` (blocking: `mkfs`, `mount`).
    pub fn create_sized(
        parent: Option<&Path>,
        disks: Option<&crate::sandbox::Disks>,
    ) -> Result<Self, WorkspaceError> {
        let dir = match parent {
            Some(p) => {
                std::fs::create_dir_all(p)?;
                tempfile::Builder::new().prefix("build-").tempdir_in(p)?
            }
            None => tempfile::Builder::new()
                .prefix("freeagent-build-")
                .tempdir()?,
        };
        // Dropped before `dir` on any error below: unmounted before the directory goes.
        let disk = disks.map(|d| d.mount(dir.path())).transpose()?;
        std::fs::create_dir(dir.path().join("src"))?;
        std::fs::create_dir(dir.path().join("out"))?;
        std::fs::create_dir(dir.path().join("home"))?;
        std::fs::create_dir(dir.path().join("tmp"))?;
        Ok(Self {
            disk,
            dir,
            lease: std::sync::OnceLock::new(),
        })
    }

    pub fn source_dir(&self) -> PathBuf {
        self.dir.path().join("src")
    }
    pub fn output_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    /// The build's private `HOME`, deleted with the workspace.
    pub fn scratch_dir(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    /// The build's `TMPDIR` (on disk, unlike its private `/tmp`), deleted with the workspace.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// Makes the workspace the build's alone: mode 0700, and with `owner`, everything in it
    /// owned by the build's uid and gid. Called before the build starts (nothing in it is a
    /// link: unpacking refuses them).
    pub fn hand_over(&self, owner: Option<(u32, u32)>) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.root(), std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = owner {
            walk(self.root(), &mut |p| {
                std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            })?;
        }
        Ok(())
    }

    /// What the workspace's own file system holds, if it has one.
    pub fn disk_limits(&self) -> Option<crate::sandbox::DiskLimits> {
        self.disk.as_ref().map(|d| d.limits())
    }

    /// Why writing into the workspace failed, when its own file system is full.
    pub fn disk_full(&self) -> Option<String> {
        self.disk_limits()?.exhausted(self.root())
    }

    /// Keeps the build's sandbox uid taken until this workspace is removed.
    pub fn keep_until_removed(&self, lease: crate::sandbox::UidLease) {
        let _ = self.lease.set(lease);
    }
}

/// Calls `f` on `dir` and everything under it, directories before their contents; never
/// follows a link.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    f(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), f)?;
        } else {
            f(&entry.path())?;
        }
    }
    Ok(())
}

impl Drop for Workspace {
    /// A build may leave directories its owner cannot list or empty (`chmod 0`); give them
    /// back to the owner first, so that removing the workspace (and its scratch) succeeds.
    /// Root needs none of this; a non-root worker does. A file system of its own is simply
    /// unmounted first.
    fn drop(&mut self) {
        drop(self.disk.take());
        use std::os::unix::fs::PermissionsExt;
        let _ = walk(self.dir.path(), &mut |p| {
            if let Ok(m) = std::fs::symlink_metadata(p)
                && m.is_dir()
                && m.permissions().mode() & 0o700 != 0o700
            {
                let _ = std::fs::set_permissions(
                    p,
                    std::fs::Permissions::from_mode(m.permissions().mode() | 0o700),
                );
            }
            Ok(())
        });
    }
}

/// Streams `url` into `dest`, returning the hex SHA-256 of what was written.
pub async fn download(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    what: &'static str,
) -> Result<String, WorkspaceError> {
    use backon::{ExponentialBuilder, Retryable};
    // Storage or its database away for a moment (connection refused, 502–504) is worth a wait:
    // failing here would fail the build for an infrastructure hiccup. Refusals are final.
    let policy = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_total_delay(Some(std::time::Duration::from_secs(60)))
        .without_max_times()
        .with_jitter();
    (|| download_once(http, url, dest, what))
        .retry(policy)
        .when(|e| matches!(e, WorkspaceError::Download { transient: true, .. }))
        .notify(|e, d| tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "download failed; retrying"))
        .await
}

async fn download_once(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    what: &'static str,
) -> Result<String, WorkspaceError> {
    // reqwest's errors name the URL, which carries a capability: never let it into text.
    let fail = |reason: String, transient: bool| WorkspaceError::Download {
        what,
        reason: freeagent_shared::redact::redact(&reason).into_owned(),
        transient,
    };
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string(), true))?;
    let status = resp.status();
    if !status.is_success() {
        let transient = matches!(status.as_u16(), 502..=504);
        return Err(fail(format!("storage answered {status}"), transient));
    }
    let mut file = tokio::fs::File::create(dest).await?;
    let mut hasher = Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| fail(e.without_url().to_string(), true))?;
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(hex::encode(hasher.finalize()))
}

/// What an archive may unpack to: bytes written (counted as they are written, whatever the
/// headers claim) and entries (files and directories). Archive bombs stop at the limit.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// At most this many bytes, whatever the archive.
    pub max_bytes: u64,
    /// At most this many times the archive's own size (0: no ratio)...
    pub max_ratio: u64,
    /// ...but never less than this, so that small archives of text have room.
    pub ratio_floor: u64,
    pub max_entries: usize,
}

/// 8 × the default source limit, at most 100 × the archive (source code compresses 4–10×; a
/// bomb 1,000× and more) but at least 256 MiB, and 200,000 entries: generous, but finite.
pub const DEFAULT_UNPACK_LIMITS: UnpackLimits = UnpackLimits {
    max_bytes: 8 * (500 << 20),
    max_ratio: 100,
    ratio_floor: 256 << 20,
    max_entries: 200_000,
};

impl UnpackLimits {
    /// The byte limit for an archive of `archive_len` bytes, and which setting it comes from.
    pub fn bytes_for(&self, archive_len: u64) -> (u64, String) {
        let relative = (self.max_ratio > 0).then(|| {
            archive_len
                .saturating_mul(self.max_ratio)
                .max(self.ratio_floor)
        });
        match relative {
            Some(r) if r < self.max_bytes => (
                r,
                format!(
                    "{} × the archive's {archive_len} bytes, at least {}: FREEAGENT_UNPACK_RATIO",
                    self.max_ratio, self.ratio_floor
                ),
            ),
            _ => (self.max_bytes, "FREEAGENT_UNPACK_LIMIT".into()),
        }
    }
}

/// The running totals of one unpack.
struct Budget {
    limits: UnpackLimits,
    max_bytes: u64,
    why: String,
    bytes: u64,
    entries: usize,
}

impl Budget {
    fn entry(&mut self) -> Result<(), WorkspaceError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(WorkspaceError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Copies `from` into a new file at `to`, stopping at the byte budget.
    fn copy(&mut self, from: &mut impl Read, to: &Path) -> Result<(), WorkspaceError> {
        let mut out = std::fs::File::create(to)?;
        let left = self.max_bytes.saturating_sub(self.bytes);
        // One byte past the budget tells "exactly at the limit" from "over it".
        let n = std::io::copy(&mut from.take(left + 1), &mut out)?;
        self.bytes += n;
        if n > left {
            return Err(WorkspaceError::TooBig {
                limit: self.max_bytes,
                why: self.why.clone(),
            });
        }
        Ok(())
    }
}

/// Unpacks a zip or tar.gz archive into `dest` (blocking; call from `spawn_blocking`). On any
/// error `dest` is emptied: a refused archive leaves no files behind. Except when the disk is
/// full: what is left tells which limit of the build's own disk it met (and the workspace goes
/// with the failed build anyway).
pub fn unpack(archive: &Path, dest: &Path, limits: UnpackLimits) -> Result<usize, WorkspaceError> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(archive)?;
    let n = file.read(&mut magic)?;
    let (max_bytes, why) = limits.bytes_for(file.metadata()?.len());
    let mut budget = Budget {
        limits,
        max_bytes,
        why,
        bytes: 0,
        entries: 0,
    };
    let result = match &magic[..n.min(4)] {
        [0x50, 0x4b, 0x03, 0x04] | [0x50, 0x4b, 0x05, 0x06] => {
            unpack_zip(archive, dest, &mut budget)
        }
        [0x1f, 0x8b, ..] => unpack_tar_gz(archive, dest, &mut budget),
        _ => Err(WorkspaceError::UnknownFormat),
    };
    let no_space =
        matches!(&result, Err(WorkspaceError::Io(e)) if e.raw_os_error() == Some(libc::ENOSPC));
    if result.is_err() && !no_space {
        let _ = std::fs::remove_dir_all(dest);
        let _ = std::fs::create_dir_all(dest);
    }
    result
}

/// The path of an entry inside `dest`, or an error if it is absolute or climbs out.
fn contained(dest: &Path, name: &Path) -> Result<PathBuf, WorkspaceError> {
    let mut out = dest.to_path_buf();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return Err(WorkspaceError::Escape(name.display().to_string())),
        }
    }
    Ok(out)
}

fn unpack_zip(archive: &Path, dest: &Path, budget: &mut Budget) -> Result<usize, WorkspaceError> {
    let bad = |e: zip::result::ZipError| WorkspaceError::Archive(e.to_string());
    let mut zip = zip::ZipArchive::new(std::fs::File::open(archive)?).map_err(bad)?;
    let mut files = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(bad)?;
        budget.entry()?;
        let raw = entry.name().map_err(bad)?.into_owned();
        let target = contained(dest, Path::new(&raw))?;
        if entry.is_symlink() {
            return Err(WorkspaceError::Escape(raw));
        }
        if entry.is_dir() {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        budget.copy(&mut entry, &target)?;
        #[cfg(unix)]
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode & 0o755))?;
        }
        files += 1;
    }
    Ok(files)
}

fn unpack_tar_gz(
    archive: &Path,
    dest: &Path,
    budget: &mut Budget,
) -> Result<usize, WorkspaceError> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(archive)?);
    let mut tar = tar::Archive::new(gz);
    tar.set_preserve_permissions(false);
    let mut files = 0;
    for entry in tar
        .entries()
        .map_err(|e| WorkspaceError::Archive(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| WorkspaceError::Archive(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| WorkspaceError::Archive(e.to_string()))?
            .into_owned();
        let target = contained(dest, &path)?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                budget.entry()?;
                std::fs::create_dir_all(&target)?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                budget.entry()?;
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                // Written by us, not `entry.unpack`: the bytes are counted as they land, and
                // the mode is ours (0644; 0755 when any execute bit was set).
                let mode = entry.header().mode().unwrap_or(0o644);
                budget.copy(&mut entry, &target)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
                }
                files += 1;
            }
            // pax headers and the like carry no files.
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName => {}
            _ => return Err(WorkspaceError::Escape(path.display().to_string())),
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz_with(name: &str, link: Option<&str>) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(f.reopen().unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        match link {
            Some(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_link_name(target).unwrap();
                h.set_path(name).unwrap();
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            None => {
                h.set_size(5);
                h.set_mode(0o644);
                // set_path refuses "..", so write the raw name as an attacker would.
                let bytes = name.as_bytes();
                h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
                h.set_cksum();
                b.append(&h, &b"hello"[..]).unwrap();
            }
        }
        b.into_inner().unwrap().finish().unwrap();
        f
    }

    #[test]
    fn tar_gz_unpacks_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let f = tar_gz_with("a/b.txt", None);
        assert_eq!(
            unpack(f.path(), dir.path(), DEFAULT_UNPACK_LIMITS).unwrap(),
            1
        );
        assert_eq!(std::fs::read(dir.path().join("a/b.txt")).unwrap(), b"hello");
    }

    #[test]
    fn escaping_entries_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            tar_gz_with("../evil.txt", None),
            tar_gz_with("/etc/evil", None),
            tar_gz_with("link", Some("/etc")),
        ] {
            assert!(matches!(
                unpack(f.path(), dir.path(), DEFAULT_UNPACK_LIMITS),
                Err(WorkspaceError::Escape(_))
            ));
        }
        assert!(!dir.path().parent().unwrap().join("evil.txt").exists());
    }

    #[test]
    fn zip_slip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut z = zip::ZipWriter::new(f.reopen().unwrap());
        z.start_file("../../evil.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut z, b"x").unwrap();
        z.finish().unwrap();
        assert!(matches!(
            unpack(f.path(), dir.path(), DEFAULT_UNPACK_LIMITS),
            Err(WorkspaceError::Escape(_))
        ));
    }

    /// The attack: a 2.4 MiB archive unpacked to 2.4 GiB under the absolute limit alone. Here
    /// a small archive of zeros meets its ratio long before the absolute limit.
    #[test]
    fn an_archive_unpacks_to_at_most_its_ratio_of_its_own_size() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(f.reopen().unwrap(), flate2::Compression::best());
        let mut b = tar::Builder::new(gz);
        let zeros = vec![0u8; 8 << 20];
        let mut h = tar::Header::new_gnu();
        h.set_size(zeros.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "zeros", &zeros[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap().flush().unwrap();
        let archive_len = std::fs::metadata(f.path()).unwrap().len();
        assert!(archive_len * 100 < zeros.len() as u64, "{archive_len}");
        let limits = UnpackLimits {
            ratio_floor: 1 << 20,
            ..DEFAULT_UNPACK_LIMITS
        };
        match unpack(f.path(), dir.path(), limits) {
            Err(WorkspaceError::TooBig { limit, why }) => {
                assert_eq!(limit, (archive_len * 100).max(1 << 20));
                assert!(why.contains("FREEAGENT_UNPACK_RATIO"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // With no ratio, the absolute limit alone applies, and the same archive unpacks.
        let no_ratio = UnpackLimits {
            max_ratio: 0,
            ..DEFAULT_UNPACK_LIMITS
        };
        assert_eq!(unpack(f.path(), dir.path(), no_ratio).unwrap(), 1);
    }

    #[test]
    fn the_limit_is_the_smaller_of_the_ratio_and_the_absolute_limit() {
        let l = DEFAULT_UNPACK_LIMITS;
        assert_eq!(l.bytes_for(1 << 10).0, 256 << 20);
        assert_eq!(l.bytes_for(10 << 20).0, 1000 << 20);
        assert_eq!(l.bytes_for(100 << 20).0, l.max_bytes);
        assert!(l.bytes_for(100 << 20).1.contains("FREEAGENT_UNPACK_LIMIT"));
    }

    #[test]
    fn other_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"plain text").unwrap();
        assert!(matches!(
            unpack(f.path(), dir.path(), DEFAULT_UNPACK_LIMITS),
            Err(WorkspaceError::UnknownFormat)
        ));
    }
}
