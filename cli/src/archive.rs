//! Packs a project directory as a tar.gz in a temporary file (streamed to disk, never to memory).

use std::path::Path;

pub fn pack_dir(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let file = tempfile::Builder::new()
        .prefix("freeagent-source-")
        .suffix(".tar.gz")
        .tempfile()?;
    let gz = flate2::write::GzEncoder::new(file.reopen()?, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)?;
    tar.into_inner()?.finish()?;
    Ok(file)
}
