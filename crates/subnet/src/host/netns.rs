//! A network namespace held by a parked thread of this process, for workloads that run as
//! threads of the daemon (WASM instances). The thread `unshare`s a fresh namespace and waits.
//! [`NetnsHolder::pid`] names the namespace to `ip` and `nsenter` (a thread id works wherever
//! they take a PID, so [`crate::EnsembleNet::attach`] takes it as it is), and
//! [`NetnsHolder::path`] is the file an instance thread `setns`es into.
//!
//! Dropping the holder ends the thread. The namespace, and the veth end inside it, go when
//! the last thread and socket in it are gone, so a crashed daemon leaves none behind.
//!
//! It must not configure the namespace (the attachment does) or outlive its owner.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, unshare};

use super::HostError;

/// A fresh, empty network namespace, alive as long as this value.
#[derive(Debug)]
pub struct NetnsHolder {
    tid: u32,
    done: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NetnsHolder {
    /// Creates the namespace (needs `CAP_SYS_ADMIN`).
    pub fn new() -> Result<Self, HostError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("netns-holder".into())
            .spawn(move || {
                let made = unshare(CloneFlags::CLONE_NEWNET)
                    .map(|()| nix::unistd::gettid().as_raw().unsigned_abs());
                let ok = made.is_ok();
                let _ = ready_tx.send(made);
                if ok {
                    // Parked until the holder is dropped (the sender goes away).
                    let _ = done_rx.recv();
                }
            })
            .map_err(|e| HostError::Netns(format!("cannot start the holder thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(tid)) => Ok(Self {
                tid,
                done: Some(done_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(HostError::Netns(format!(
                    "unshare(CLONE_NEWNET): {e} (root or CAP_SYS_ADMIN is needed)"
                )))
            }
            Err(_) => {
                let _ = thread.join();
                Err(HostError::Netns("the holder thread ended early".into()))
            }
        }
    }

    /// The holder thread's id: pass it where `ip`/`nsenter` want a PID.
    pub fn pid(&self) -> u32 {
        self.tid
    }

    /// `/proc/<pid>/task/<tid>/ns/net`: open it and `setns` to enter the namespace.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/task/{}/ns/net",
            std::process::id(),
            self.tid
        ))
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_is_new_and_goes_with_the_holder() {
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let h = NetnsHolder::new().unwrap();
        let path = h.path();
        let theirs = std::fs::read_link(&path).unwrap();
        assert_ne!(mine, theirs, "a fresh namespace");
        // `ip` sees only a loopback device in it, by the thread id.
        let out = std::process::Command::new("nsenter")
            .args(["-t", &h.pid().to_string(), "-n", "ip", "-o", "link"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(": lo:"), "{text}");
        drop(h);
        assert!(
            std::fs::read_link(&path).is_err(),
            "the holder thread is gone"
        );
    }
}
