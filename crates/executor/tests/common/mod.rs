//! Helpers shared by the executor integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The image `.ci/install-runtimes.sh` builds with `docker import`.
pub const IMAGE: &str = "nunet-test/busybox:latest";

/// Fails the test with the instruction CI follows.
pub fn missing(what: &str) -> ! {
    panic!("{what} is missing on this machine: run `sudo .ci/install-runtimes.sh` (CI always does)")
}

/// A node id unique to this test process and `name`, so tests do not see each other's work.
pub fn node(name: &str) -> String {
    format!("test-{}-{name}", std::process::id())
}

/// The newest Debian cloud kernel in /boot.
pub fn cloud_kernel() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64")
    });
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| missing("a Debian cloud kernel (/boot/vmlinuz-*-cloud-amd64)"))
}

/// The static busybox from busybox-static.
pub fn static_busybox() -> PathBuf {
    let p = PathBuf::from("/bin/busybox");
    let bytes = std::fs::read(&p).unwrap_or_else(|_| missing("busybox-static"));
    // A dynamically linked ELF has a PT_INTERP (type 3) program header.
    let u = |at: usize, n: usize| {
        bytes[at..at + n]
            .iter()
            .rev()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b))
    };
    let (phoff, phentsize, phnum) = (u(0x20, 8), u(0x36, 2), u(0x38, 2));
    if (0..phnum).any(|i| u(phoff + i * phentsize, 4) == 3) {
        missing("busybox-static (the installed busybox is dynamically linked)");
    }
    p
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        0,
        0,
        name.len() + 1,
        0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Writes an uncompressed newc initramfs with busybox and `/init` = `script` into `dir`.
pub fn initramfs(dir: &Path, script: &str) -> PathBuf {
    let busybox = std::fs::read(static_busybox()).unwrap();
    let mut out = Vec::new();
    let mut ino = 1;
    for d in ["bin", "dev", "proc", "sys", "tmp"] {
        cpio_entry(&mut out, ino, d, 0o040755, &[]);
        ino += 1;
    }
    cpio_entry(&mut out, ino, "bin/busybox", 0o100755, &busybox);
    cpio_entry(&mut out, ino + 1, "init", 0o100755, script.as_bytes());
    cpio_entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, out).unwrap();
    path
}
