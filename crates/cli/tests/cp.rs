//! `nunet cp` between real daemons on loopback (issue 17, item 3): a directory to a peer and
//! back, byte for byte, and from one peer to another through the caller's node; symlinks inside it skipped and listed; a second run that finds
//! everything in place; a copy interrupted by killing the CLI that the next run resumes; the
//! bytes on a direct connection, and on the libp2p connection to a node that turned that off;
//! paths outside the peer's file area (`..`, absolute paths, a symlink out of the area)
//! refused; a node the peer does not trust refused by its capability check, then, granted
//! `/dms/node/files/read` only, able to fetch and still refused a write.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::path::Path;
use std::time::{Duration, Instant};

use deploy_support::{Devnet, devnet_manifest, kill, nunet, nunet_cmd, restart, stranger, text};

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(root.join("sub/deeper/zero"), b"").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(root.join("sub/big.bin"), big).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("sub/link")).unwrap();
}

/// Every regular file and directory under `root`, files with their length and a hash of
/// their bytes (symlinks left out).
fn listing(root: &Path) -> Vec<(String, Option<(usize, u64)>)> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.push((rel, None));
                stack.push(p);
            } else if m.is_file() {
                let b = std::fs::read(&p).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                b.hash(&mut h);
                out.push((rel, Some((b.len(), h.finish()))));
            }
        }
    }
    out.sort();
    out
}

fn did_of(dn: &Devnet, node: usize) -> String {
    devnet_manifest(dn)["nodes"][node - 1]["did"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn directories_go_to_a_peer_and_back_and_an_interrupted_copy_resumes() {
    let dn = Devnet::up(0);
    let peer = did_of(&dn, 2);
    let local = dn.dir.join("local");
    let src = local.join("tree");
    write_tree(&src);
    let area = dn.dir.join("node-2/data/files");

    // To the peer's file area (`""`: the area itself; the tree lands under its own name).
    let (code, out) = dn.run(1, &["cp", "-q", src.to_str().unwrap(), &format!("{peer}:")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("copied 3 file(s)"), "{out}");
    assert!(
        out.contains("tree/sub/link: a symlink (not followed)"),
        "{out}"
    );
    assert_eq!(listing(&area.join("tree")), listing(&src));
    assert!(!area.join("tree/sub/link").exists());

    // Again: everything is there already, nothing moves.
    let (code, out) = dn.run(1, &["cp", "-q", src.to_str().unwrap(), &format!("{peer}:")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("nothing to copy: 3 file(s) already there"),
        "{out}"
    );

    // Back, under a new name.
    let back = local.join("back");
    let (code, out) = dn.run(
        1,
        &["cp", "-q", &format!("{peer}:tree"), back.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(listing(&back), listing(&src));

    // A copy interrupted half-way (the CLI killed) resumes from what arrived.
    let big = local.join("big.bin");
    let body: Vec<u8> = (0..200_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &body).unwrap();
    let mut child = nunet_cmd(
        &dn.dir,
        None,
        Some("node-1"),
        &[
            "cp",
            "-q",
            big.to_str().unwrap(),
            &format!("{peer}:big.bin"),
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let part = || {
        std::fs::read_dir(&area)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".nunet-part"))
            .map(|e| e.metadata().unwrap().len())
    };
    let t0 = Instant::now();
    let cut = loop {
        if let Some(n) = part().filter(|n| *n >= 20_000_000) {
            break n;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no partial file grew"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !area.join("big.bin").exists(),
        "interrupted after {cut} bytes, yet complete"
    );
    let (code, out) = dn.run(
        1,
        &[
            "cp",
            "-q",
            big.to_str().unwrap(),
            &format!("{peer}:big.bin"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("MiB not sent again"), "no resume: {out}");
    assert_eq!(std::fs::read(area.join("big.bin")).unwrap(), body);
    assert!(part().is_none(), "partial file left behind");

    // A large file's bytes go over a connection of their own (small ones stay on the
    // stream); a node with `files.direct` off keeps them on the libp2p connection, and the
    // copy says so either way.
    let again = local.join("again.bin");
    let (code, out) = dn.run(
        1,
        &[
            "cp",
            "-q",
            &format!("{peer}:big.bin"),
            again.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("over a direct connection"), "{out}");
    assert_eq!(std::fs::read(&again).unwrap(), body);
    kill(&dn.dir, 3, "-TERM");
    let (code, out) = dn.run(3, &["config", "set", "files.direct", "false"]);
    assert_eq!(code, 0, "{out}");
    restart(&dn, 3);
    let third = did_of(&dn, 3);
    let (code, out) = dn.run(
        1,
        &["cp", "-q", big.to_str().unwrap(), &format!("{third}:")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("over the libp2p connection"), "{out}");
    assert_eq!(
        std::fs::read(dn.dir.join("node-3/data/files/big.bin")).unwrap(),
        body
    );

    // Between two peers, through this node: node-2's tree to node-3, none of it on
    // node-1's disk; a second run finds it there.
    let (code, out) = dn.run(
        1,
        &["cp", "-q", &format!("{peer}:tree"), &format!("{third}:")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("copied 3 file(s)"), "{out}");
    assert_eq!(
        listing(&dn.dir.join("node-3/data/files/tree")),
        listing(&src)
    );
    assert!(!dn.dir.join("node-1/data/files/tree").exists());
    let (code, out) = dn.run(
        1,
        &["cp", "-q", &format!("{peer}:tree"), &format!("{third}:")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to copy"), "{out}");

    // Nothing outside the area, however it is spelled.
    std::os::unix::fs::symlink("/etc", area.join("etc")).unwrap();
    for bad in ["../../dms_config.json", "/etc/hostname", "etc/hostname"] {
        let (code, out) = dn.run(
            1,
            &[
                "cp",
                &format!("{peer}:{bad}"),
                local.join("x").to_str().unwrap(),
            ],
        );
        assert_ne!(code, 0, "{bad}: {out}");
        assert!(
            out.contains("outside what this node shares"),
            "{bad}: {out}"
        );
    }
    let (code, out) = dn.run(1, &["cp", src.to_str().unwrap(), &format!("{peer}:etc")]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("outside what this node shares"), "{out}");
    assert!(!Path::new("/etc/tree").exists());

    // A node the peer does not trust: its node's request is refused by the peer's
    // capability check, and nothing is handed out.
    let (_daemon, stranger_did, _) = stranger(&dn);
    let as_stranger = |args: &[&str]| {
        let o = nunet(&dn.dir, Some("stranger"), args);
        (o.status.code(), text(&o))
    };
    let stolen = local.join("stolen");
    let (code, out) = as_stranger(&[
        "cp",
        "-c",
        "dms",
        &format!("{peer}:tree"),
        stolen.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("Denied"), "{out}");
    assert!(!stolen.exists());

    // The organisation grants it reading only: it may fetch, and still not write.
    let o = nunet(
        &dn.dir,
        Some("org"),
        &[
            "cap",
            "grant",
            "-c",
            "org",
            "--cap",
            "/dms/node/files/read",
            "--duration",
            "1h",
            &stranger_did,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (code, out) = as_stranger(&["cap", "anchor", "-c", "dms", "--provide", &token]);
    assert_eq!(code, Some(0), "{out}");
    let read = local.join("read");
    let t0 = Instant::now();
    loop {
        // The daemon reloads its context within a second of the change.
        let (code, out) = as_stranger(&[
            "cp",
            "-q",
            "-c",
            "dms",
            &format!("{peer}:tree"),
            read.to_str().unwrap(),
        ]);
        if code == Some(0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "read still refused: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(listing(&read), listing(&src));
    let (code, out) = as_stranger(&[
        "cp",
        "-c",
        "dms",
        big.to_str().unwrap(),
        &format!("{peer}:from-stranger.bin"),
    ]);
    // Its grant covers no write, so no chain the peer accepts can be made for one.
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("Denied"), "{out}");
    assert!(!area.join("from-stranger.bin").exists());
}
