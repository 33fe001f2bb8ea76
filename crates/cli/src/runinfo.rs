//! `<general.data_dir>/run.json`: what a running daemon actually bound.
//!
//! `nunet run` writes it (atomically: a temporary file renamed over it) once the REST API and
//! the p2p listeners are bound, and removes it on a clean exit. With `rest.port: 0` or a p2p
//! listen address on port 0 the kernel picks the port while the daemon binds it, so nobody
//! has to guess a free port for someone else to bind later; this file is how the CLI
//! (`rest.port: 0`), `nunet devnet` and the tests learn the result. A file left by a daemon
//! that was killed names a process that is gone: [`RunInfo::read_live`] ignores it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Name of the report file in the data directory.
pub const FILE_NAME: &str = "run.json";

/// What a running daemon bound.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The daemon's process id.
    pub pid: u32,
    /// Its DID.
    pub did: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// The socket address the REST API listens on (port 0 resolved).
    pub rest: SocketAddr,
    /// The p2p addresses it listens on (port 0 resolved), each ending in `/p2p/<peer id>`.
    pub listen: Vec<String>,
}

/// Where a daemon with data directory `data_dir` reports.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

impl RunInfo {
    /// Writes the report atomically (readers see the old file or the whole new one).
    pub fn write(&self, data_dir: &Path) -> Result<()> {
        let dest = path(data_dir);
        let tmp = data_dir.join(format!(".{FILE_NAME}.{}", self.pid));
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &dest).with_context(|| format!("writing {}", dest.display()))?;
        Ok(())
    }

    /// The report in `data_dir`, if there is one (whether or not its daemon still runs).
    pub fn read(data_dir: &Path) -> Result<Option<RunInfo>> {
        let p = path(data_dir);
        match std::fs::read_to_string(&p) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// The report of the daemon running with `data_dir`; an error that says what to do when
    /// there is none, or when its daemon is gone.
    pub fn read_live(data_dir: &Path) -> Result<RunInfo> {
        let p = path(data_dir);
        match Self::read(data_dir)? {
            Some(r) if alive(r.pid) => Ok(r),
            Some(r) => bail!(
                "the daemon that wrote {} (pid {}) is not running; start it with `nunet run`",
                p.display(),
                r.pid
            ),
            None => bail!(
                "no daemon reported its address in {} (is `nunet run` running with this home?)",
                p.display()
            ),
        }
    }

    /// Removes the report if it is this process's own (a daemon started later with the same
    /// data directory keeps its file).
    pub fn remove_own(data_dir: &Path) {
        let own = Self::read(data_dir)
            .ok()
            .flatten()
            .is_some_and(|r| r.pid == std::process::id());
        if own {
            let _ = std::fs::remove_file(path(data_dir));
        }
    }

    /// The first reported TCP address (not QUIC), preferring one on `host`: what other nodes
    /// use as bootstrap peer.
    pub fn tcp_addr(&self, host: &str) -> Option<&str> {
        let tcp = |a: &&String| a.contains("/tcp/") && !a.contains("/quic") && !a.contains("/ws");
        self.listen
            .iter()
            .filter(tcp)
            .find(|a| a.starts_with(&format!("/ip4/{host}/")))
            .or_else(|| self.listen.iter().find(tcp))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(pid: u32) -> RunInfo {
        RunInfo {
            pid,
            did: "did:key:z6Mk".into(),
            peer_id: "12D3Koo".into(),
            rest: "127.0.0.1:41234".parse().unwrap(),
            listen: vec![
                "/ip4/127.0.0.1/udp/40001/quic-v1/p2p/12D3Koo".into(),
                "/ip4/10.0.0.5/tcp/40000/p2p/12D3Koo".into(),
                "/ip4/127.0.0.1/tcp/40000/p2p/12D3Koo".into(),
            ],
        }
    }

    #[test]
    fn written_reports_read_back_and_only_the_owner_removes_them() -> Result<()> {
        let d = tempfile::tempdir()?;
        assert!(RunInfo::read(d.path())?.is_none());
        assert!(RunInfo::read_live(d.path()).is_err());
        let mine = sample(std::process::id());
        mine.write(d.path())?;
        assert_eq!(RunInfo::read(d.path())?, Some(mine.clone()));
        assert_eq!(RunInfo::read_live(d.path())?, mine);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(d.path())?.count(), 1);
        // Another process's report stays.
        let other = sample(u32::MAX);
        other.write(d.path())?;
        RunInfo::remove_own(d.path());
        assert_eq!(RunInfo::read(d.path())?, Some(other));
        // …and names a process that is gone.
        let e = RunInfo::read_live(d.path()).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("not running")));
        mine.write(d.path())?;
        RunInfo::remove_own(d.path());
        assert!(RunInfo::read(d.path())?.is_none());
        Ok(())
    }

    #[test]
    fn bootstrap_address_is_tcp_on_the_wanted_host() {
        let r = sample(1);
        assert_eq!(
            r.tcp_addr("127.0.0.1"),
            Some("/ip4/127.0.0.1/tcp/40000/p2p/12D3Koo")
        );
        assert_eq!(
            r.tcp_addr("172.31.0.2"),
            Some("/ip4/10.0.0.5/tcp/40000/p2p/12D3Koo")
        );
    }
}
