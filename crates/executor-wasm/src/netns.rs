//! Networked WASM instances: the instance thread enters the network namespace the caller
//! prepared (so every socket the guest opens through `wasi:sockets` lives there), and `stop`
//! shuts those sockets down, because a guest blocked in `accept` or `read` sits in a host call
//! that epoch interruption cannot reach.
//!
//! It must not touch sockets outside that namespace: every socket of this process is matched
//! against the namespace's inode before it is shut down.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::sched::{CloneFlags, setns};

/// `ioctl(socket, SIOCGSKNS)`: a new descriptor of the socket's network namespace.
const SIOCGSKNS: u64 = 0x894C;

/// Moves the calling thread into the network namespace `ns`.
pub(crate) fn enter(ns: &File) -> Result<(), String> {
    setns(ns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot enter the network namespace: {e} (CAP_SYS_ADMIN is needed)"))
}

/// The namespace a socket descriptor belongs to, as an inode number.
fn namespace_of_socket(fd: i32) -> Option<u64> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor or -1.
    #[allow(unsafe_code)]
    let ns = unsafe { nix::libc::ioctl(fd, SIOCGSKNS as _) };
    if ns < 0 {
        return None;
    }
    // SAFETY: `ns` is a descriptor the kernel just created for us and nobody else owns.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(ns) };
    File::from(owned).metadata().ok().map(|m| m.ino())
}

/// Shuts down (both directions) every socket of this process that lives in namespace `ns`;
/// returns how many. Blocked `accept`, `read` and `recv` calls on them return at once.
pub(crate) fn shutdown_sockets_in(ns: &File) -> usize {
    let Ok(target) = ns.metadata().map(|m| m.ino()) else {
        return 0;
    };
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut n = 0;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket || fd == ns.as_raw_fd() {
            continue;
        }
        // Work on a duplicate: it keeps the socket it names open, so the descriptor number
        // being closed and reused meanwhile cannot make us shut down something else.
        // SAFETY: dup of any number is safe; it fails with EBADF when nothing is open there.
        #[allow(unsafe_code)]
        let dup = unsafe { nix::libc::dup(fd) };
        if dup < 0 {
            continue;
        }
        // SAFETY: `dup` is a descriptor the kernel just created for us.
        #[allow(unsafe_code)]
        let dup = unsafe { OwnedFd::from_raw_fd(dup) };
        if namespace_of_socket(dup.as_raw_fd()) != Some(target) {
            continue;
        }
        // SAFETY: shutdown on a socket we hold open has no memory effects.
        #[allow(unsafe_code)]
        let r = unsafe { nix::libc::shutdown(dup.as_raw_fd(), nix::libc::SHUT_RDWR) };
        if r == 0 {
            n += 1;
        }
    }
    n
}
