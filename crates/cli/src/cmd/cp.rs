//! `nunet cp SRC DST`: copies a file or a directory between this machine and a peer node,
//! through the local daemon. This command reads and writes the local side itself (with the
//! invoking user's own permissions); the daemon only pipes bytes to and from the peer.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use nunet_actor::Handle;
use nunet_files::manifest::source_path;
use nunet_files::receive::{Receiver, make_dirs, plan, targets};
use nunet_files::{
    Destination, FetchRequest, FilesFetch, FilesSend, Kind, Manifest, SendRequest, manifest,
};
use serde_json::Value;

use crate::client::{Api, exit};
use crate::cmd::deployment::Caller;
use crate::home::Home;

/// How long the daemon may take to list, hash or check a source or destination on the peer
/// (it gives the peer `nunet_files::service::CALL_TIMEOUT`).
const CALL_TTL: Duration = Duration::from_secs(320);
/// How long the daemon may take to answer a file request: opening the stream, the peer
/// hashing what a resumed file holds, or checking and syncing a file sent.
const FIRST_BYTE: Duration = Duration::from_secs(320);
/// Copy buffer.
const BUF: usize = 1 << 20;

/// Copy files or directories between this machine and another DMS node, or between two.
///
/// SRC, DST or both name a peer, as `<DID or peer id>:<path>`. With both, the bytes go
/// through your node (never this machine's disk), which needs read on SRC's peer and write
/// on DST's. On the peer a
/// relative path is in its file area (`<data_dir>/files`; `""` is the area itself) and an
/// absolute one must be under its `files.roots`; the peer checks that your node holds
/// `/dms/node/files/read` (copying from it) or `/dms/node/files/write` (copying to it).
/// Directories are copied whole (symlinks and special files inside are skipped and listed).
/// As with `cp -r`, an existing directory DST receives the source under its own name;
/// otherwise DST becomes the copy.
///
/// Every file is checked against the sender's BLAKE3 digest before it is put in place. After an
/// interruption run the same command again: files already there are skipped, a partly
/// received file continues where it stopped.
#[derive(Args, Debug)]
pub struct CpArgs {
    /// What to copy: a local path, or <peer>:<path>.
    pub src: String,
    /// Where to: a local path, or <peer>:<path>.
    pub dst: String,
    /// Capability context that signs the requests to the local node.
    #[arg(short = 'c', long, default_value = "user")]
    pub context: String,
    /// No progress on stderr (the summary is still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    Local(PathBuf),
    Peer { peer: String, path: String },
}

/// `did:<method>:<id>:<path>` or `<peer id>:<path>` name a peer; anything else is local.
fn side(s: &str) -> Result<Side> {
    if s.starts_with("did:") {
        let parts: Vec<&str> = s.splitn(4, ':').collect();
        let [_, _, _, path] = parts[..] else {
            bail!(
                "{s:?}: give the path on the peer after its DID: did:key:…:<path> (\"\" for its file area)"
            );
        };
        let peer = s[..s.len() - path.len() - 1].to_string();
        Handle::parse(&peer).map_err(|e| anyhow!("{peer:?}: {e}"))?;
        return Ok(Side::Peer {
            peer,
            path: path.to_string(),
        });
    }
    if let Some((peer, path)) = s.split_once(':')
        && !peer.contains('/')
        && Handle::parse(peer).is_ok()
    {
        return Ok(Side::Peer {
            peer: peer.to_string(),
            path: path.to_string(),
        });
    }
    Ok(Side::Local(PathBuf::from(s)))
}

/// `b` bytes for people: B, KiB, MiB, GiB or TiB with one decimal.
fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Progress on stderr: a line rewritten in place on a terminal, a line every 5 s otherwise.
struct Progress {
    total: u64,
    done: u64,
    /// Of `done`, what was already there (not counted in the rate).
    skipped: u64,
    /// Files sent (whole or resumed) and files found in place.
    copied: usize,
    in_place: usize,
    started: Instant,
    shown: Instant,
    quiet: bool,
    tty: bool,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Self {
        use std::io::IsTerminal;
        let now = Instant::now();
        Self {
            total,
            done: 0,
            skipped: 0,
            copied: 0,
            in_place: 0,
            started: now,
            shown: now,
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn rate(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let moved = self.done - self.skipped;
        format!("{}/s", fmt_bytes((moved as f64 / secs) as u64))
    }

    /// A file of `size` bytes whose receiver starts at `offset` (`None`: already there);
    /// the offset when there is something to send.
    fn begin(&mut self, size: u64, offset: Option<u64>) -> Option<u64> {
        match offset {
            None => {
                self.skip(size);
                self.in_place += 1;
                None
            }
            Some(o) => {
                let o = o.min(size);
                self.skip(o);
                self.copied += 1;
                Some(o)
            }
        }
    }

    /// `n` bytes that were already there.
    fn skip(&mut self, n: u64) {
        self.skipped += n;
        self.add(n);
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.quiet {
            return;
        }
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.shown.elapsed() < every {
            return;
        }
        self.shown = Instant::now();
        let pct = if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        };
        let line = format!(
            "{} of {} ({pct:.0} %), {}",
            fmt_bytes(self.done),
            fmt_bytes(self.total),
            self.rate()
        );
        if self.tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    fn end(&self) {
        if self.tty && !self.quiet {
            eprint!("\r\x1b[K");
        }
    }
}

/// Text that came from a peer, safe to print: control characters (a terminal's escape
/// sequences) become `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The HTTP error answer of the daemon as a message.
fn api_error(status: u16, v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .map(clean)
        .unwrap_or_else(|| format!("the daemon answered HTTP {status}"))
}

/// How the bytes of the files copied went: over a direct connection, over the libp2p
/// connection, or some each way.
#[derive(Default)]
struct Paths {
    direct: usize,
    stream: usize,
}

impl Paths {
    fn add(&mut self, path: Option<&str>) {
        if path == Some("direct") {
            self.direct += 1;
        } else {
            self.stream += 1;
        }
    }

    fn describe(&self) -> &'static str {
        match (self.direct, self.stream) {
            (_, 0) => "over a direct connection",
            (0, _) => "over the libp2p connection",
            _ => "partly over a direct connection, partly over the libp2p connection",
        }
    }
}

/// The last line: files copied and files found in place.
fn summary(moved: u64, p: &Progress, m: &Manifest, paths: &Paths) {
    let (copied, in_place) = (p.copied, p.in_place);
    let secs = p.started.elapsed().as_secs_f64();
    let mut s = if copied == 0 {
        format!("nothing to copy: {in_place} file(s) already there")
    } else {
        let mut s = format!(
            "copied {copied} file(s), {} in {secs:.1} s ({}, {})",
            fmt_bytes(moved),
            p.rate(),
            paths.describe()
        );
        if in_place > 0 {
            s.push_str(&format!("; {in_place} file(s) already there"));
        }
        s
    };
    if p.skipped > 0 {
        s.push_str(&format!(" ({} not sent again)", fmt_bytes(p.skipped)));
    }
    println!("{s}");
    if m.skipped_total > 0 {
        println!("not copied ({}):", m.skipped_total);
        for k in &m.skipped {
            println!("  {}", clean(k));
        }
    }
}

/// Runs `nunet cp`.
pub fn run(home: &Home, a: CpArgs) -> Result<i32> {
    let caller = Caller::new(home, &a.context)?;
    match (side(&a.src)?, side(&a.dst)?) {
        (Side::Peer { peer, path }, Side::Local(dst)) => {
            fetch(&caller, &peer, &path, &dst, a.quiet)
        }
        (Side::Local(src), Side::Peer { peer, path }) => send(&caller, &src, &peer, &path, a.quiet),
        (Side::Local(_), Side::Local(_)) => {
            bail!("neither side names a peer (<DID or peer id>:<path>); use cp for local copies")
        }
        (
            Side::Peer { peer, path },
            Side::Peer {
                peer: to,
                path: dst,
            },
        ) => relay(&caller, (&peer, &path), (&to, &dst), a.quiet),
    }
}

fn fetch(caller: &Caller, peer: &str, path: &str, dst: &Path, quiet: bool) -> Result<i32> {
    let req = FetchRequest {
        peer: peer.to_string(),
        path: path.to_string(),
    };
    let r = match caller.call_typed::<FilesFetch>(&req, CALL_TTL)? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let wants_dir = dst.as_os_str().to_string_lossy().ends_with('/');
    let dest = match std::fs::metadata(dst) {
        Ok(m) if m.is_dir() => Destination::Into(dst.to_path_buf()),
        _ if wants_dir => bail!(
            "{}: no such directory (a path ending in / names one)",
            dst.display()
        ),
        Ok(_) => Destination::File(dst.to_path_buf()),
        Err(_) => {
            let parent = dst.parent().filter(|p| !p.as_os_str().is_empty());
            if parent.is_some_and(|p| !p.is_dir()) {
                bail!("{}: its directory does not exist", dst.display());
            }
            Destination::New(dst.to_path_buf())
        }
    };
    let places = targets(&dest, &r.manifest)?;
    if !quiet {
        eprintln!(
            "{} from {peer}: {} file(s), {}",
            clean(&r.source),
            r.manifest.files(),
            fmt_bytes(r.manifest.bytes())
        );
    }
    let (addr, port) = caller.endpoint();
    let api = Api::for_transfers(addr, port, FIRST_BYTE);
    let mut p = Progress::new(r.manifest.bytes(), quiet);
    let mut moved = 0u64;
    let mut paths = Paths::default();
    let (offsets, _) = plan(&r.manifest, &places)?;
    make_dirs(&r.manifest, &places)?;
    for (i, ((e, at), offset)) in r
        .manifest
        .entries
        .iter()
        .zip(&places)
        .zip(offsets)
        .enumerate()
    {
        let Some(digest) = e.blake3.as_deref().filter(|_| e.kind == Kind::File) else {
            continue;
        };
        let Some(offset) = p.begin(e.size, offset) else {
            continue;
        };
        // What a resumed file holds is hashed before the peer starts sending.
        let rx = Receiver::open(at, e.size, digest, e.mode, offset)?;
        let mut resp = api.get_raw(&format!("/files/{}/{i}?offset={offset}", r.session))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let v = resp.body_mut().read_json().unwrap_or(Value::Null);
            p.end();
            eprintln!("error: {}: {}", e.path, api_error(status, &v));
            return Ok(exit::FAILED);
        }
        paths.add(
            resp.headers()
                .get("x-nunet-path")
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = resp.body_mut().as_reader();
        let got = receive(&mut body, rx, &mut p).map_err(|(held, err)| {
            p.end();
            anyhow!(
                "{}: interrupted after {} of {} ({err}); run the same command again to resume",
                at.display(),
                fmt_bytes(held),
                fmt_bytes(e.size)
            )
        })?;
        moved += got;
    }
    p.end();
    summary(moved, &p, &r.manifest, &paths);
    Ok(exit::OK)
}

/// Reads `body` into `rx` and finishes it; the bytes moved, or what `rx` held and why it
/// stopped. Reading and writing overlap: the hashing and the disk work run on a thread of
/// their own, fed through a short queue, buffers coming back for reuse.
fn receive(
    body: &mut dyn Read,
    rx: Receiver,
    p: &mut Progress,
) -> std::result::Result<u64, (u64, anyhow::Error)> {
    const QUEUE: usize = 4;
    let start = rx.written();
    let (tx, chunks) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(QUEUE);
    let (give_back, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE + 1);
    let writer = std::thread::spawn(move || {
        let mut rx = rx;
        for (buf, n) in chunks {
            if let Err(e) = rx.write(&buf[..n]) {
                return (rx, Err(e));
            }
            let _ = give_back.try_send(buf);
        }
        (rx, Ok(()))
    });
    let mut moved = 0u64;
    let mut read_err = None;
    loop {
        let mut buf = spare.try_recv().unwrap_or_else(|_| vec![0u8; BUF]);
        match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                moved += n as u64;
                p.add(n as u64);
                if tx.send((buf, n)).is_err() {
                    break; // the writer stopped; its error is below
                }
            }
            Err(e) => {
                read_err = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let (rx, wrote) = writer
        .join()
        .map_err(|_| (start, anyhow!("the writing thread panicked")))?;
    let held = rx.written();
    wrote.map_err(|e| (held, e.into()))?;
    if let Some(e) = read_err {
        return Err((held, e.into()));
    }
    rx.finish().map_err(|e| (held, e.into()))?;
    Ok(moved)
}

/// Counts what is read through it.
struct Counted<'a, R> {
    inner: R,
    progress: &'a mut Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// A copy between two peers through this node: it fetches from one and sends to the other
/// with the caller's capabilities on each (read on the source, write on the destination);
/// the bytes pass through the daemon's memory, never this machine's disk.
fn relay(
    caller: &Caller,
    (from, src): (&str, &str),
    (to, dst): (&str, &str),
    quiet: bool,
) -> Result<i32> {
    let req = FetchRequest {
        peer: from.to_string(),
        path: src.to_string(),
    };
    let r = match caller.call_typed::<FilesFetch>(&req, CALL_TTL)? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let req = SendRequest {
        peer: to.to_string(),
        path: dst.to_string(),
        manifest: r.manifest.clone(),
    };
    let w = match caller.call_typed::<FilesSend>(&req, CALL_TTL)? {
        Ok(w) => w,
        Err(code) => return Ok(code),
    };
    let m = &r.manifest;
    if !quiet {
        eprintln!(
            "{} on {from} to {} on {to}: {} file(s), {} (through this node)",
            clean(&r.source),
            clean(&w.target),
            m.files(),
            fmt_bytes(m.bytes())
        );
    }
    let (addr, port) = caller.endpoint();
    let api = Api::for_relays(addr, port);
    let mut p = Progress::new(m.bytes(), quiet);
    let mut moved = 0u64;
    let mut paths = Paths::default();
    for (i, (e, &offset)) in m.entries.iter().zip(&w.offsets).enumerate() {
        if e.kind != Kind::File {
            continue;
        }
        let Some(offset) = p.begin(e.size, offset) else {
            continue;
        };
        let (status, v) = api
            .post_empty(&format!(
                "/files/{}/{i}/to/{}?offset={offset}",
                r.session, w.session
            ))
            .map_err(|err| {
                anyhow!(
                    "{}: interrupted ({err:#}); run the same command again to resume",
                    e.path
                )
            })?;
        if status != 200 {
            p.end();
            eprintln!(
                "error: {}: {}; run the same command again to resume",
                clean(&e.path),
                api_error(status, &v)
            );
            return Ok(exit::FAILED);
        }
        paths.add(v["path"].as_str());
        p.add(e.size - offset);
        moved += e.size - offset;
    }
    p.end();
    summary(moved, &p, m, &paths);
    std::io::stdout().flush()?;
    Ok(exit::OK)
}

fn send(caller: &Caller, src: &Path, peer: &str, path: &str, quiet: bool) -> Result<i32> {
    let src = src
        .canonicalize()
        .with_context(|| format!("{}", src.display()))?;
    let mut hashing = Progress::new(0, quiet);
    let m = manifest::build(&src, &mut |n| {
        let d = n - hashing.done;
        hashing.add(d);
    })?;
    hashing.end();
    let req = SendRequest {
        peer: peer.to_string(),
        path: path.to_string(),
        manifest: m.clone(),
    };
    let r = match caller.call_typed::<FilesSend>(&req, CALL_TTL)? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    if !quiet {
        eprintln!(
            "to {} on {peer}: {} file(s), {}",
            clean(&r.target),
            m.files(),
            fmt_bytes(m.bytes())
        );
    }
    let (addr, port) = caller.endpoint();
    let api = Api::for_transfers(addr, port, FIRST_BYTE);
    let mut p = Progress::new(m.bytes(), quiet);
    let mut moved = 0u64;
    let mut paths = Paths::default();
    for (i, (e, &offset)) in m.entries.iter().zip(&r.offsets).enumerate() {
        if e.kind != Kind::File {
            continue;
        }
        let Some(offset) = p.begin(e.size, offset) else {
            continue;
        };
        let file = source_path(&src, &e.path);
        let mut f = std::fs::File::open(&file).with_context(|| file.display().to_string())?;
        f.seek(std::io::SeekFrom::Start(offset))?;
        let len = e.size - offset;
        let mut body = Counted {
            inner: f.take(len),
            progress: &mut p,
        };
        let (status, v) = api
            .put_raw(
                &format!("/files/{}/{i}?offset={offset}", r.session),
                &mut body,
                len,
            )
            .map_err(|err| {
                anyhow!(
                    "{}: interrupted ({err:#}); run the same command again to resume",
                    file.display()
                )
            })?;
        if status != 200 {
            p.end();
            eprintln!(
                "error: {}: {}; run the same command again to resume",
                file.display(),
                api_error(status, &v)
            );
            return Ok(exit::FAILED);
        }
        paths.add(v["path"].as_str());
        moved += len;
    }
    p.end();
    summary(moved, &p, &m, &paths);
    std::io::stdout().flush()?;
    Ok(exit::OK)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_text_cannot_drive_the_terminal() {
        assert_eq!(clean("a\x1b[2Jb\n"), "a?[2Jb?");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(50_000_000), "47.7 MiB");
        assert_eq!(fmt_bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn peers_are_named_by_did_or_peer_id_and_everything_else_is_local() {
        let did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
        assert_eq!(
            side(&format!("{did}:models/a.bin")).unwrap(),
            Side::Peer {
                peer: did.into(),
                path: "models/a.bin".into()
            }
        );
        assert_eq!(
            side(&format!("{did}:")).unwrap(),
            Side::Peer {
                peer: did.into(),
                path: String::new()
            }
        );
        assert!(side(did).is_err(), "a DID without a path");
        let peer = Handle::parse(did).unwrap().addr.host;
        assert_eq!(
            side(&format!("{peer}:/srv/x")).unwrap(),
            Side::Peer {
                peer: peer.clone(),
                path: "/srv/x".into()
            }
        );
        for local in ["./a:b", "/tmp/x", "c:\\x", "notapeer:x", "dir/12D3:x"] {
            assert_eq!(side(local).unwrap(), Side::Local(local.into()), "{local}");
        }
    }
}
