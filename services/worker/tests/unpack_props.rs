//! Property tests for `workspace::unpack`: hostile tar.gz and zip archives (entry names with
//! `..`, absolute paths, links pointing outside, PAX and GNU long-name headers, declared sizes
//! that lie, bytes flipped or cut off, tight limits) never make it panic, never write outside
//! the directory it unpacks into, never leave a link in it, and leave it empty when refused.
//!
//! Every hostile path stays inside the test's own temporary directory (the destination sits
//! five levels down, names climb at most five, absolute names point into the test's directory),
//! so even a regression writes nothing elsewhere on the machine, and the test sees it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_worker::workspace::{DEFAULT_UNPACK_LIMITS, UnpackLimits, WorkspaceError, unpack};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Stands for the test directory in generated names and link targets.
const ROOT: &str = "{ROOT}";

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
    Fifo,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    kind: Kind,
    mode: u32,
    /// A size header that disagrees with the data (tar: the header's size field).
    declared: Option<u64>,
    /// A PAX header before the entry: `path` and/or `size` records.
    pax_path: Option<String>,
    pax_size: Option<u64>,
}

fn name() -> impl Strategy<Value = String> {
    let part = prop::sample::select(vec![
        "..", ".", "a", "b", "src", "outside", "x.txt", "", "evil", "sentinel",
    ]);
    prop_oneof![
        // Ordinary names, so that many archives unpack and later entries meet earlier ones.
        6 => "[a-c]{1,3}(/[a-c]{1,3}){0,2}/?",
        // Relative chains, `..` included: at most five parts, so at most five levels up.
        3 => prop::collection::vec(part.clone(), 1..=5).prop_map(|p| p.join("/")),
        // Absolute names into the test directory's `outside`.
        2 => prop::collection::vec(part, 0..3)
            .prop_map(|p| format!("{ROOT}/outside/{}", p.join("/"))),
        1 => Just(format!("{ROOT}/outside/sentinel")),
        // Long names (GNU long-name headers), some climbing.
        1 => ("(\\.\\./){0,5}", "[a-z]{90,160}").prop_map(|(up, n)| format!("{up}{n}")),
        // Anything else that cannot climb out of the test directory.
        2 => ".{0,24}".prop_filter("no ..", |s| !s.contains("..") && !s.starts_with('/')),
    ]
}

fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("{ROOT}/outside")),
        Just(format!("{ROOT}/outside/sentinel")),
        Just("../../../../../outside".to_owned()),
        Just("a".to_owned()),
        Just(".".to_owned()),
        Just("/".to_owned()),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Kind::File),
        3 => Just(Kind::Dir),
        1 => link_target().prop_map(Kind::Symlink),
        1 => link_target().prop_map(Kind::Hardlink),
        1 => Just(Kind::Fifo),
    ]
}

fn declared() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        16 => Just(None),
        1 => Just(Some(u64::MAX)),
        1 => Just(Some(1 << 40)),
        1 => Just(Some(0)),
        1 => (0u64..4096).prop_map(Some),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        name(),
        kind(),
        prop_oneof![
            Just(0o644u32),
            Just(0o755),
            Just(0o4777),
            Just(0),
            any::<u32>()
        ],
        declared(),
        prop::option::weighted(0.05, name()),
        prop::option::weighted(
            0.05,
            prop_oneof![Just(u64::MAX), Just(1u64 << 40), 0u64..100],
        ),
    )
        .prop_map(|(name, kind, mode, declared, pax_path, pax_size)| Entry {
            name,
            kind,
            mode,
            declared,
            pax_path,
            pax_size,
        })
}

fn limits() -> impl Strategy<Value = UnpackLimits> {
    prop_oneof![
        2 => Just(DEFAULT_UNPACK_LIMITS),
        1 => (0u64..200, 0usize..6, 0u64..3, 0u64..100).prop_map(
            |(max_bytes, max_entries, max_ratio, ratio_floor)| UnpackLimits {
                max_bytes,
                max_ratio,
                ratio_floor,
                max_entries,
            }
        ),
    ]
}

/// A change to the archive's bytes: flip one, or cut the archive short.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Flip(prop::sample::Index, u8),
    Cut(prop::sample::Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => Just(Damage::None),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
        1 => any::<prop::sample::Index>().prop_map(Damage::Cut),
    ]
}

fn apply(damage: &Damage, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    match damage {
        Damage::None => {}
        Damage::Flip(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Damage::Cut(i) => bytes.truncate(i.index(bytes.len())),
    }
}

fn pax_record(key: &str, value: &str) -> Vec<u8> {
    // "<len> <key>=<value>\n", where <len> counts itself.
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while (len.to_string().len() + body.len()) != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}").into_bytes()
}

/// A header with `name` written raw (as an attacker would; `set_path` refuses `..`), preceded
/// by a GNU long-name entry when it does not fit.
fn append_raw(b: &mut tar::Builder<&mut Vec<u8>>, name: &str, mut h: tar::Header, data: &[u8]) {
    let bytes = name.as_bytes();
    if bytes.len() >= 100 {
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        let mut data = bytes.to_vec();
        data.push(0);
        long.set_size(data.len() as u64);
        long.set_cksum();
        b.append(&long, data.as_slice()).unwrap();
    }
    let n = bytes.len().min(100);
    h.as_old_mut().name = [0; 100];
    h.as_old_mut().name[..n].copy_from_slice(&bytes[..n]);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn tar_gz(entries: &[Entry], root: &str, damage: &Damage, damage_compressed: bool) -> Vec<u8> {
    let fill = |s: &str| s.replace(ROOT, root);
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        for e in entries {
            if e.pax_path.is_some() || e.pax_size.is_some() {
                let mut records = Vec::new();
                if let Some(p) = &e.pax_path {
                    records.extend(pax_record("path", &fill(p)));
                }
                if let Some(s) = e.pax_size {
                    records.extend(pax_record("size", &s.to_string()));
                }
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::XHeader);
                h.set_size(records.len() as u64);
                append_raw(&mut b, "PaxHeader", h, &records);
            }
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode);
            let data: &[u8] = match &e.kind {
                Kind::File(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    d
                }
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    &[]
                }
                Kind::Symlink(t) | Kind::Hardlink(t) => {
                    h.set_entry_type(if matches!(e.kind, Kind::Symlink(_)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    let t = fill(t);
                    let n = t.len().min(100);
                    h.as_old_mut().linkname[..n].copy_from_slice(&t.as_bytes()[..n]);
                    &[]
                }
                Kind::Fifo => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    &[]
                }
            };
            h.set_size(e.declared.unwrap_or(data.len() as u64));
            append_raw(&mut b, &fill(&e.name), h, data);
        }
        b.finish().unwrap();
    }
    if !damage_compressed {
        apply(damage, &mut tar_bytes);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let mut out = gz.finish().unwrap();
    if damage_compressed {
        apply(damage, &mut out);
    }
    out
}

/// A lie in the end-of-central-directory record: which field, and its new value.
#[derive(Debug, Clone, Copy)]
struct EocdLie {
    field: usize,
    value: u32,
}

fn eocd_lie() -> impl Strategy<Value = Option<EocdLie>> {
    prop::option::weighted(
        0.2,
        (
            0usize..6,
            prop_oneof![Just(u32::MAX), Just(0xffff), Just(0), any::<u32>()],
        )
            .prop_map(|(field, value)| EocdLie { field, value }),
    )
}

fn zip(
    entries: &[Entry],
    root: &str,
    deflate: bool,
    sizes: Option<u32>,
    eocd: Option<EocdLie>,
    damage: &Damage,
) -> Vec<u8> {
    let fill = |s: &str| s.replace(ROOT, root);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    for e in entries {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .unix_permissions(e.mode);
        let name = fill(&e.name);
        match &e.kind {
            Kind::Dir => {
                let _ = w.add_directory(name, opts);
            }
            Kind::Symlink(t) => {
                let _ = w.add_symlink(name, fill(t), opts);
            }
            // Zip has no hard links or fifos: plain files under those names.
            Kind::File(_) | Kind::Hardlink(_) | Kind::Fifo => {
                let data = match &e.kind {
                    Kind::File(d) => d.as_slice(),
                    _ => &[],
                };
                if w.start_file(name, opts).is_ok() {
                    w.write_all(data).unwrap();
                }
            }
        }
    }
    let mut bytes = w.finish().unwrap().into_inner();
    if let Some(size) = sizes {
        // Lie about every entry's sizes, in the local headers and the central directory.
        let size = size.to_le_bytes();
        let mut i = 0;
        while i + 4 <= bytes.len() {
            let at = match &bytes[i..i + 4] {
                [0x50, 0x4b, 0x03, 0x04] => Some(i + 18),
                [0x50, 0x4b, 0x01, 0x02] => Some(i + 20),
                _ => None,
            };
            if let Some(at) = at
                && at + 8 <= bytes.len()
            {
                bytes[at..at + 4].copy_from_slice(&size);
                bytes[at + 4..at + 8].copy_from_slice(&size);
            }
            i += 1;
        }
    }
    if let Some(lie) = eocd
        && let Some(at) = bytes
            .windows(4)
            .rposition(|w| w == [0x50, 0x4b, 0x05, 0x06])
    {
        // Disk numbers, entry counts (2 bytes each), then directory size and offset (4 each).
        let (offset, width) = [(4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4)][lie.field];
        let value = lie.value.to_le_bytes();
        if at + offset + width <= bytes.len() {
            bytes[at + offset..at + offset + width].copy_from_slice(&value[..width]);
        }
    }
    apply(damage, &mut bytes);
    bytes
}

/// Everything under `root` except `skip`: path, kind, and content for files.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(p).unwrap() {
            let path = e.unwrap().path();
            if path == skip {
                continue;
            }
            let m = std::fs::symlink_metadata(&path).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link to {:?}", std::fs::read_link(&path).unwrap())
            } else if m.is_dir() {
                walk(&path, skip, out);
                "dir".to_owned()
            } else {
                format!("file {:?}", std::fs::read(&path).unwrap())
            };
            out.insert(path, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

/// Nothing in `dir` is a link (symbolic or hard).
fn no_links(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(!m.file_type().is_symlink(), "a link was unpacked: {path:?}");
        if m.is_dir() {
            no_links(&path);
        } else {
            assert!(m.is_file(), "not a plain file: {path:?}");
            assert_eq!(m.nlink(), 1, "a hard link was unpacked: {path:?}");
        }
    }
}

/// Unpacks the archive `make` builds (given the test directory) and checks the properties.
fn check(
    make: impl FnOnce(&str) -> Vec<u8>,
    limits: UnpackLimits,
) -> Result<usize, WorkspaceError> {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("w1/w2/w3/w4/src");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(root.path().join("outside")).unwrap();
    std::fs::write(root.path().join("outside/sentinel"), b"untouched").unwrap();
    let archive = root.path().join("archive");
    std::fs::write(&archive, make(root.path().to_str().unwrap())).unwrap();
    let before = snapshot(root.path(), &dest);

    let result = unpack(&archive, &dest, limits);

    assert_eq!(
        snapshot(root.path(), &dest),
        before,
        "something outside the destination changed ({result:?})"
    );
    assert!(dest.is_dir(), "the destination is gone ({result:?})");
    no_links(&dest);
    if result.is_err() {
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "a refused archive left files behind ({result:?})"
        );
    }
    result
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hostile_tar_gz_stays_inside(
        entries in prop::collection::vec(entry(), 0..6),
        damage in damage(),
        damage_compressed in any::<bool>(),
        limits in limits(),
    ) {
        let result = check(|root| tar_gz(&entries, root, &damage, damage_compressed), limits);
        if let Ok(files) = result {
            prop_assert!(files <= entries.len());
        }
    }

    #[test]
    fn hostile_zip_stays_inside(
        entries in prop::collection::vec(entry(), 0..6),
        deflate in any::<bool>(),
        sizes in prop::option::weighted(0.2, prop_oneof![Just(u32::MAX), Just(u32::MAX - 1), any::<u32>()]),
        eocd in eocd_lie(),
        damage in damage(),
        limits in limits(),
    ) {
        let result = check(|root| zip(&entries, root, deflate, sizes, eocd, &damage), limits);
        if let Ok(files) = result {
            prop_assert!(files <= entries.len());
        }
    }

    #[test]
    fn arbitrary_bytes_behind_an_archive_magic_stay_inside(
        magic in prop::sample::select(vec![
            vec![0x50u8, 0x4b, 0x03, 0x04],
            vec![0x50, 0x4b, 0x05, 0x06],
            vec![0x1f, 0x8b],
            vec![0x1f, 0x8b, 0x08, 0x00],
        ]),
        rest in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let _ = check(|_| [magic.as_slice(), rest.as_slice()].concat(), DEFAULT_UNPACK_LIMITS);
    }
}

/// The generators above do reach the interesting cases: a link whose target is outside, and a
/// later entry that would write through it, is refused before anything is written.
#[test]
fn a_link_then_a_write_through_it_is_refused() {
    let link = Entry {
        name: "l".into(),
        kind: Kind::Symlink(format!("{ROOT}/outside")),
        mode: 0o777,
        declared: None,
        pax_path: None,
        pax_size: None,
    };
    let through = Entry {
        name: "l/sentinel".into(),
        kind: Kind::File(b"pwned".to_vec()),
        ..link.clone()
    };
    let entries = [link, through];
    assert!(matches!(
        check(
            |r| tar_gz(&entries, r, &Damage::None, false),
            DEFAULT_UNPACK_LIMITS
        ),
        Err(WorkspaceError::Escape(_))
    ));
    assert!(matches!(
        check(
            |r| zip(&entries, r, false, None, None, &Damage::None),
            DEFAULT_UNPACK_LIMITS
        ),
        Err(WorkspaceError::Escape(_))
    ));
}

#[test]
fn a_pax_path_that_climbs_is_refused() {
    let e = Entry {
        name: "fine.txt".into(),
        kind: Kind::File(b"x".to_vec()),
        mode: 0o644,
        declared: None,
        pax_path: Some("../../../../../outside/sentinel".into()),
        pax_size: None,
    };
    assert!(matches!(
        check(
            |r| tar_gz(&[e], r, &Damage::None, false),
            DEFAULT_UNPACK_LIMITS
        ),
        Err(WorkspaceError::Escape(_))
    ));
}
