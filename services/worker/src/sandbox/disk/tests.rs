use super::*;

#[test]
fn sizes_and_inode_counts_parse_with_zero_for_off() {
    assert_eq!(parse_disk("20G").unwrap(), Some(20 << 30));
    assert_eq!(parse_disk("512MiB").unwrap(), Some(512 << 20));
    assert_eq!(parse_disk("0").unwrap(), None);
    // Whole blocks only.
    assert_eq!(parse_disk("16777217").unwrap(), Some(16 << 20));
    assert!(parse_disk("1M").is_err());
    assert!(parse_disk("lots").is_err());
    assert_eq!(parse_inodes("1_000_000").unwrap(), 1_000_000);
    assert_eq!(parse_inodes("0").unwrap(), 0);
    assert!(parse_inodes("10").is_err());
    assert!(parse_inodes("-1").is_err());
}

#[test]
fn full_means_nearly_nothing_left() {
    let l = DiskLimits {
        bytes: 64 << 20,
        inodes: 2000,
    };
    assert_eq!(l.verdict(32 << 20, 1000), None);
    // What ext4 left free after `dd` met the end of a 64 MiB file system.
    let full = l.verdict(192_512, 1989).unwrap();
    assert!(
        full.starts_with("disk full (limit 64 MiB, FREEAGENT_BUILD_DISK)"),
        "{full}"
    );
    let out = l.verdict(32 << 20, 0).unwrap();
    assert!(
        out.starts_with("out of inodes (limit 2000, FREEAGENT_BUILD_INODES)"),
        "{out}"
    );
}

#[test]
fn loop_mounts_and_their_owners_are_read_from_mountinfo() {
    let mountinfo = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
        301 22 7:3 / /srv/work\\040dir/build-x1 rw,nosuid - ext4 /dev/loop3 rw\n\
        302 22 7:4 / /snap/core rw shared:5 - squashfs /dev/loop4 ro\n";
    assert_eq!(
        loop_mounts(mountinfo),
        vec![(PathBuf::from("/srv/work dir/build-x1"), "loop3".to_owned())]
    );
    assert_eq!(owner(Path::new("/w/freeagent-disk-4242-7.img")), Some(4242));
    assert_eq!(owner(Path::new("/w/build-abc")), None);
    assert!(!dead_owner(Path::new(&format!(
        "/w/freeagent-disk-{}-0.img",
        std::process::id()
    ))));
}

/// This machine's tools and a root worker, or nothing to test.
fn disks(images: &Path, limits: DiskLimits) -> Option<Disks> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| super::super::own_ids(&s))
        .is_some_and(|(uid, _)| uid == 0);
    let (mkfs, mount) = (
        super::super::find_tool("mkfs.ext4")?,
        super::super::find_tool("mount")?,
    );
    if !root || !Path::new("/dev/loop-control").exists() {
        eprintln!("not root, or no loop devices: nothing to test");
        return None;
    }
    Some(Disks {
        limits,
        images: images.to_path_buf(),
        mkfs,
        mount,
    })
}

fn mounted(at: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    loop_mounts(&mountinfo).iter().any(|(p, _)| p == at)
}

/// Whether a loop device still holds `image` (the kernel detaches one shortly after its last
/// unmount).
fn attached(image: &Path) -> bool {
    let needle = image.display().to_string();
    std::fs::read_dir("/sys/block").unwrap().flatten().any(|d| {
        std::fs::read_to_string(d.path().join("loop/backing_file"))
            .is_ok_and(|b| b.trim_end().trim_end_matches(" (deleted)") == needle)
    })
}

fn wait_detached(image: &Path) {
    for _ in 0..250 {
        if !attached(image) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("a loop device still holds {}", image.display());
}

#[test]
fn a_disk_holds_its_limit_and_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let limits = DiskLimits {
        bytes: 16 << 20,
        inodes: 256,
    };
    let Some(disks) = disks(work.path(), limits) else {
        return;
    };
    let at = work.path().join("ws");
    std::fs::create_dir(&at).unwrap();
    let started = std::time::Instant::now();
    let disk = disks.mount(&at).unwrap();
    eprintln!("mkfs and mount took {:?}", started.elapsed());
    let image = disk.image.clone();
    assert!(mounted(&at));
    assert_eq!(std::fs::read_dir(&at).unwrap().count(), 0, "no lost+found");
    assert_eq!(limits.exhausted(&at), None);
    // Files until the inodes run out.
    let made = (0..1000)
        .take_while(|i| std::fs::write(at.join(i.to_string()), b"x").is_ok())
        .count();
    assert!((200..256).contains(&made), "{made}");
    let why = limits.exhausted(&at).unwrap();
    assert!(why.starts_with("out of inodes (limit 256"), "{why}");
    for i in 0..made {
        std::fs::remove_file(at.join(i.to_string())).unwrap();
    }
    // Bytes until the space runs out; the host's image stays within the limit.
    let err = std::fs::write(at.join("big"), vec![0u8; 32 << 20]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let why = limits.exhausted(&at).unwrap();
    assert!(why.starts_with("disk full (limit 16 MiB"), "{why}");
    assert!(std::fs::metadata(&image).unwrap().len() <= 16 << 20);

    let started = std::time::Instant::now();
    drop(disk);
    eprintln!("unmount and delete took {:?}", started.elapsed());
    assert!(!mounted(&at));
    assert!(!image.exists());
    assert_eq!(std::fs::read_dir(&at).unwrap().count(), 0);
    wait_detached(&image);
}

/// A worker that died left a mounted file system: the next one removes it, and leaves a live
/// worker's alone.
#[test]
fn a_dead_workers_disks_are_removed_at_start() {
    let work = tempfile::tempdir().unwrap();
    let limits = DiskLimits {
        bytes: 16 << 20,
        inodes: 256,
    };
    let Some(disks) = disks(work.path(), limits) else {
        return;
    };
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let (left_at, live_at) = (
        work.path().join("build-dead"),
        work.path().join("build-live"),
    );
    std::fs::create_dir(&left_at).unwrap();
    std::fs::create_dir(&live_at).unwrap();
    let left = disks.mount(&left_at).unwrap();
    let live = disks.mount(&live_at).unwrap();
    // The image renamed after a dead pid stands for a dead worker's; the loop device follows.
    let left_image = work.path().join(format!("{IMAGE_PREFIX}{dead}-0.img"));
    std::fs::rename(&left.image, &left_image).unwrap();
    let stray = work.path().join(format!("{IMAGE_PREFIX}{dead}-1.img"));
    std::fs::write(&stray, b"").unwrap();

    remove_leftovers(work.path());
    assert!(!mounted(&left_at));
    assert!(!left_at.exists());
    assert!(!left_image.exists());
    assert!(!stray.exists());
    wait_detached(&left_image);
    assert!(mounted(&live_at));
    assert!(live.image.exists());
    drop(left);
    drop(live);
    assert!(!mounted(&live_at));
}

/// A real sandboxed build in a 16 MiB workspace: writing past it fails with ENOSPC inside the
/// build, and the launch reports the disk as the reason; then the same for inodes. Nothing
/// stays mounted. Another workspace's file system is not in the build's view, and stays
/// mounted on the host (the set-up's unmounts stay in the build's namespace).
#[test]
fn a_build_meets_its_disk_limit() {
    use crate::sandbox::{Build, Sandbox};
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let mut sandbox = Sandbox::from_env(Some(&work), 1).unwrap();
    let Some(disks) = sandbox.disk.as_mut() else {
        eprintln!("this worker gives builds no disk quota: nothing to test");
        return;
    };
    disks.limits = DiskLimits {
        bytes: 16 << 20,
        inodes: 256,
    };
    let build = Build {
        id: "b".into(),
        attempt: "1".into(),
        platform: "android".into(),
    };
    let other = sandbox.workspace(Some(&work)).unwrap();
    let seen = format!(
        "grep -c ' {} ' /proc/self/mountinfo; exit 1",
        other.root().display()
    );
    let ws = sandbox.workspace(Some(&work)).unwrap();
    let out = sandbox
        .prepare(&ws, &build, None)
        .unwrap()
        .command(&seen)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{out:?}");
    drop(ws);
    for (script, expect) in [
        (
            "head -c 32M /dev/zero > big; echo \"rc=$?\"; exit 1",
            "disk full (limit 16 MiB, FREEAGENT_BUILD_DISK)",
        ),
        (
            "i=0; while [ $i -lt 1000 ]; do : > f$i || break; i=$((i+1)); done; echo \"made $i\"; exit 1",
            "out of inodes (limit 256, FREEAGENT_BUILD_INODES)",
        ),
    ] {
        let ws = sandbox.workspace(Some(&work)).unwrap();
        let root = ws.root().to_path_buf();
        assert!(mounted(&root));
        let launch = sandbox.prepare(&ws, &build, None).unwrap();
        let out = launch.command(script).output().unwrap();
        assert!(!out.status.success(), "{out:?}");
        let why = launch.disk_full().unwrap_or_default();
        assert!(why.starts_with(expect), "{why} {out:?}");
        drop(launch);
        drop(ws);
        assert!(!mounted(&root));
        assert!(!root.exists());
        assert!(mounted(other.root()));
    }
    drop(other);
    let images: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(IMAGE_PREFIX))
        .collect();
    assert!(images.is_empty(), "{images:?}");
}
