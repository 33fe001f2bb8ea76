//! The sandbox image, built in memory: a 129-byte static `pause` executable in one layer,
//! packed as a `docker save` archive for `POST /images/load`.
//!
//! Every byte of the archive is fixed (file times, the config's `created`), so the image id
//! (the SHA-256 of its config) is the same on every node and for every load. Two processes
//! loading it at once therefore tag the same image, and neither can leave the other's
//! container pointing at a copy that a prune then removes (what `docker import`, which
//! stamps the current time into each copy, allowed).

use sha2::{Digest, Sha256};

/// A static x86_64 Linux executable: `loop { pause() }`, one PT_LOAD segment at 0x400000.
pub fn pause_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const EHDR: u16 = 64;
    const PHDR: u16 = 56;
    // mov eax, 34 (SYS_pause); syscall; jmp back to the mov.
    const CODE: [u8; 9] = [0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7];
    let header_len = u64::from(EHDR + PHDR);
    let total = header_len + CODE.len() as u64;
    let mut f = Vec::with_capacity(total as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI, padding.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(BASE + header_len).to_le_bytes()); // e_entry
    f.extend_from_slice(&u64::from(EHDR).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&EHDR.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&PHDR.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type: LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    f.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    f.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    f.extend_from_slice(&total.to_le_bytes()); // p_filesz
    f.extend_from_slice(&total.to_le_bytes()); // p_memsz
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    f.extend_from_slice(&CODE);
    f
}

/// One member of a tar archive.
pub(crate) enum Entry<'a> {
    Dir(&'a str),
    File {
        name: &'a str,
        mode: u32,
        data: &'a [u8],
    },
}

/// A POSIX ustar archive of `entries` (names < 100 bytes), owner root, mtime 0.
pub(crate) fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (name, mode, data, kind) = match e {
            Entry::Dir(name) => (*name, 0o755, &[][..], b'5'),
            Entry::File { name, mode, data } => (*name, *mode, *data, b'0'),
        };
        let mut h = [0u8; 512];
        let mut field = |at: usize, v: &[u8]| h[at..at + v.len()].copy_from_slice(v);
        field(0, name.as_bytes());
        field(100, format!("{mode:07o}\0").as_bytes());
        field(108, b"0000000\0"); // uid
        field(116, b"0000000\0"); // gid
        field(124, format!("{:011o}\0", data.len()).as_bytes()); // size
        field(136, b"00000000000\0"); // mtime: fixed, for a reproducible archive
        field(148, b"        "); // checksum counts as spaces while summing
        field(156, &[kind]);
        field(257, b"ustar\x0000");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]); // end of archive
    out
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sandbox image as a `docker save` archive tagged `tag`; `label` is set to `1` on it.
pub(crate) fn archive(tag: &str, label: &str) -> Vec<u8> {
    let elf = pause_elf();
    let layer = tar(&[Entry::File {
        name: "pause",
        mode: 0o755,
        data: &elf,
    }]);
    let diff_id = sha256_hex(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": { "Cmd": ["/pause"], "Labels": { label: "1" } },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created": "2026-01-01T00:00:00Z", "created_by": "nunet sandbox: /pause" }],
    })
    .to_string();
    let config_hex = sha256_hex(config.as_bytes());
    let config_name = format!("{config_hex}.json");
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": [layer_name],
    }])
    .to_string();
    let dir = format!("{diff_id}/");
    tar(&[
        Entry::Dir(&dir),
        Entry::File {
            name: &layer_name,
            mode: 0o644,
            data: &layer,
        },
        Entry::File {
            name: &config_name,
            mode: 0o644,
            data: config.as_bytes(),
        },
        Entry::File {
            name: "manifest.json",
            mode: 0o644,
            data: manifest.as_bytes(),
        },
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_binary_is_a_small_static_elf() {
        let elf = pause_elf();
        assert_eq!(elf.len(), 129);
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, 0x40_0000 + 120);
        assert_eq!(elf[120], 0xb8, "entry point is the mov");
    }

    #[test]
    fn the_tar_holds_the_file_with_a_valid_checksum() {
        let t = tar(&[Entry::File {
            name: "pause",
            mode: 0o755,
            data: b"abc",
        }]);
        assert_eq!(t.len(), 512 * 2 + 1024);
        assert_eq!(&t[..5], b"pause");
        assert_eq!(&t[100..107], b"0000755");
        assert_eq!(&t[512..515], b"abc");
        let stored = u32::from_str_radix(std::str::from_utf8(&t[148..154]).unwrap(), 8).unwrap();
        let mut h = t[..512].to_vec();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|b| u32::from(*b)).sum::<u32>());
    }

    #[test]
    fn the_archive_is_the_same_every_time_and_names_its_config() {
        let a = archive("nunet/sandbox:t", "nunet.sandbox");
        assert_eq!(a, archive("nunet/sandbox:t", "nunet.sandbox"));
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains(r#""RepoTags":["nunet/sandbox:t"]"#));
        assert!(text.contains(r#""Labels":{"nunet.sandbox":"1"}"#));
        // The manifest names the config file by its hash, as `docker load` checks.
        let at = text.find(r#""Config":""#).unwrap() + 10;
        let hex = &text[at..at + 64];
        let config_start = text.find(r#"{"architecture""#).unwrap();
        let config_end = config_start + text[config_start..].find('\0').unwrap();
        assert_eq!(sha256_hex(text[config_start..config_end].as_bytes()), hex);
    }
}
