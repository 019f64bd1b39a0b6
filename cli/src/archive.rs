//! Packs a project directory as a tar.gz in a temporary file (streamed to disk, never to memory),
//! leaving out what the project says is not source: whatever its `.gitignore` files ignore
//! (in a repository or not), what a `.freeagentignore` lists (same syntax), and `.git` itself.
//! Checks that a file given instead is an archive the farm unpacks.

use anyhow::Context;
use std::io::Read;
use std::path::Path;

/// What was packed.
pub struct Packed {
    pub file: tempfile::NamedTempFile,
    pub files: u64,
    /// Bytes of the files before compression, and of the archive.
    pub raw_bytes: u64,
    pub packed_bytes: u64,
}

/// The file next to `.gitignore` that lists more paths to leave out of a submission.
pub const IGNORE_FILE: &str = ".freeagentignore";

pub fn pack_dir(dir: &Path) -> anyhow::Result<Packed> {
    let file = tempfile::Builder::new()
        .prefix("freeagent-source-")
        .suffix(".tar.gz")
        .tempfile()?;
    let gz = flate2::write::GzEncoder::new(file.reopen()?, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let walk = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .ignore(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git")
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let (mut files, mut raw_bytes) = (0u64, 0u64);
    for entry in walk {
        let entry = entry.context("reading the project directory")?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(dir) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let name = Path::new(".").join(rel);
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() {
            tar.append_dir(&name, path)?;
        } else {
            tar.append_path_with_name(path, &name)
                .with_context(|| format!("packing {}", path.display()))?;
            files += 1;
            if meta.is_file() {
                raw_bytes += meta.len();
            }
        }
    }
    tar.into_inner()?.finish()?;
    let packed_bytes = file.as_file().metadata()?.len();
    Ok(Packed {
        file,
        files,
        raw_bytes,
        packed_bytes,
    })
}

/// Refuses a file that is not a .zip, .tar.gz or .tar before anything is uploaded.
pub fn check_archive(path: &Path) -> anyhow::Result<()> {
    let mut head = [0u8; 262];
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let n = f.read(&mut head)?;
    let head = &head[..n];
    let zip = head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06");
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let tar = head.len() >= 262 && &head[257..262] == b"ustar";
    if zip || gzip || tar {
        return Ok(());
    }
    Err(crate::exit::Usage(format!(
        "{} is not an archive the farm unpacks: give a project directory, or a .zip or .tar.gz",
        path.display()
    ))
    .into())
}

/// A size as people read it.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Packed) -> Vec<String> {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(p.file.path()).unwrap());
        let mut a = tar::Archive::new(gz);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn ignored_paths_and_git_stay_out_of_the_archive() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w(".gitignore", "node_modules/\n*.log\n");
        w(".freeagentignore", "big/\n");
        w("src/main.js", "x");
        w("node_modules/dep/index.js", "dep");
        w("debug.log", "log");
        w("big/blob", "blob");
        w(".git/HEAD", "ref");
        w(".env.example", "A=1");
        let p = pack_dir(d.path()).unwrap();
        let n = names(&p);
        assert!(n.iter().any(|x| x.ends_with("src/main.js")), "{n:?}");
        assert!(n.iter().any(|x| x.ends_with(".env.example")), "{n:?}");
        assert!(n.iter().any(|x| x.ends_with(".gitignore")), "{n:?}");
        for gone in ["node_modules", "debug.log", "big", ".git"] {
            assert!(
                !n.iter()
                    .any(|x| Path::new(x).components().any(|c| c.as_os_str() == gone)),
                "{gone}: {n:?}"
            );
        }
        assert_eq!(p.files, 4, "{n:?}");
    }

    #[test]
    fn only_archives_are_taken_as_files() {
        let d = tempfile::tempdir().unwrap();
        let text = d.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        assert!(check_archive(&text).is_err());
        let gz = d.path().join("a.tar.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(check_archive(&gz).is_ok());
        let zip = d.path().join("a.zip");
        std::fs::write(&zip, b"PK\x03\x04rest").unwrap();
        assert!(check_archive(&zip).is_ok());
    }

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(65 << 20), "65.0 MiB");
    }
}
