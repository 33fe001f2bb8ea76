//! `nunet deployment logs <id> [-f] [--allocation NAME]`: prints the allocations' output once,
//! or follows it.
//!
//! Once: each request carries the byte offsets already printed per allocation and stream,
//! and the node returns at most one chunk per stream and call, until nothing new is left.
//!
//! Follow (`-f`): the node opens a follow session and streams frames on the local API as
//! providers push them (no polling, no output cap; a slow terminal slows the providers'
//! streams, not the other way round). Every frame carries its offset, and the offsets
//! printed are kept: when the connection to the node breaks (the daemon restarted), the
//! command opens a new session from them, so output resumes with no gap and no duplicate.
//! Following stops when every selected allocation has ended and its output is drained, when
//! the deployment is over, or on Ctrl-C. With `--json`: the first reply as is, or with `-f`
//! one JSON line per frame.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use nunet_output::{Channel, Frame};
use nunet_protocol::calls::DeploymentLogsCall;
use nunet_protocol::{DeploymentLogsRequest, LogCursor};
use serde_json::json;

use super::{Caller, LogsArgs, show};
use crate::client::{Api, exit};
use crate::home::Home;

/// How long to keep trying to reach the node again after the connection broke.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// Runs the command.
pub fn run(home: &Home, a: &LogsArgs) -> Result<i32> {
    if a.follow {
        return follow(home, a);
    }
    let caller = Caller::new(home, &a.ids.context)?;
    let mut cursors: BTreeMap<String, LogCursor> = BTreeMap::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut errors: BTreeSet<String> = BTreeSet::new();
    let mut out = std::io::stdout().lock();
    loop {
        let req = DeploymentLogsRequest {
            id: a.ids.id.clone(),
            allocation: a.allocation.clone(),
            cursors: cursors.clone(),
            follow: false,
        };
        let (v, raw) =
            match caller.call_typed_raw::<DeploymentLogsCall>(&req, Duration::from_secs(60))? {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
        if a.ids.json {
            show(&raw, true)?;
            return Ok(exit::OK);
        }
        let mut fresh = false;
        for (name, l) in &v.logs {
            if let Some(e) = &l.error {
                if errors.insert(name.clone()) {
                    println!("== {name}: error: {e}");
                }
                continue;
            }
            fresh |= !l.stdout.is_empty() || !l.stderr.is_empty();
            cursors.insert(name.clone(), l.cursor());
            if seen.insert(name.clone()) {
                let status = l.status.map_or("?", |s| s.as_str());
                writeln!(out, "== {name} ({status})").or_else(quiet_pipe)?;
            }
            out.write_all(l.stdout.as_bytes()).or_else(quiet_pipe)?;
            eprint!("{}", l.stderr);
        }
        if out.flush().is_err() || !fresh {
            // Drained (or the reader went away, as with `| head`).
            return Ok(exit::OK);
        }
    }
}

/// A closed stdout (`| head`) ends the command quietly.
fn quiet_pipe(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(exit::OK);
    }
    Err(e)
}

/// What the follower has printed so far, and how it prints.
struct Follower {
    cursors: BTreeMap<String, LogCursor>,
    /// Print `== <key>` before output when several allocations are followed.
    headers: bool,
    last_key: Option<String>,
    json: bool,
    /// Frames received in all.
    frames: u64,
    /// Stdout through a 64 KiB buffer.
    out: Box<dyn Write>,
    err: Box<dyn Write>,
}

/// What a frame changed in the cursors.
enum Seen<'f> {
    /// Output not printed yet (the part of the frame after the cursor).
    New(&'f [u8]),
    /// Output already printed (a resent frame): nothing to print.
    Old,
    /// Bytes dropped by the provider's retention, this many.
    Dropped(u64),
    /// Not output.
    Other,
}

impl Follower {
    /// Moves the cursors past `f`: a new source starts at 0, output and skips advance.
    fn advance<'f>(&mut self, f: &'f Frame) -> Seen<'f> {
        match f {
            Frame::Begin { key, source } => {
                let c = self.cursors.entry(key.clone()).or_default();
                if c.source.as_deref() != Some(source.as_str()) {
                    *c = LogCursor {
                        source: Some(source.clone()),
                        ..LogCursor::default()
                    };
                }
                Seen::Other
            }
            Frame::Output {
                key,
                channel,
                offset,
                data,
            } => {
                let at = offset_of(self.cursors.entry(key.clone()).or_default(), *channel);
                let end = offset + data.len() as u64;
                if end <= *at {
                    return Seen::Old;
                }
                let skip = usize::try_from(at.saturating_sub(*offset)).unwrap_or(data.len());
                *at = end;
                Seen::New(&data[skip.min(data.len())..])
            }
            Frame::Skipped { key, channel, to } => {
                let at = offset_of(self.cursors.entry(key.clone()).or_default(), *channel);
                let dropped = to.saturating_sub(*at);
                *at = (*at).max(*to);
                Seen::Dropped(dropped)
            }
            _ => Seen::Other,
        }
    }

    /// Prints one frame; the deployment's status once following is over.
    fn on(&mut self, f: Frame) -> std::io::Result<Option<String>> {
        self.frames += 1;
        let seen = self.advance(&f);
        if self.json {
            return self.json_line(&f, seen);
        }
        match (&f, seen) {
            (Frame::Output { key, channel, .. }, Seen::New(data)) => {
                if self.headers && self.last_key.as_deref() != Some(key.as_str()) {
                    self.err.flush()?;
                    writeln!(self.out, "== {key}")?;
                    self.last_key = Some(key.clone());
                }
                match channel {
                    Channel::Stdout => self.out.write_all(data)?,
                    Channel::Stderr => {
                        self.out.flush()?;
                        self.err.write_all(data)?;
                    }
                }
            }
            (Frame::Skipped { key, channel, .. }, Seen::Dropped(n)) if n > 0 => {
                self.out.flush()?;
                writeln!(
                    self.err,
                    "== {key}: {n} bytes of {} were dropped by the provider's retention limit",
                    channel.as_str()
                )?;
            }
            (Frame::State { key, state }, _) if self.headers => {
                let code = state
                    .exit_code
                    .map(|c| format!(", exit code {c}"))
                    .unwrap_or_default();
                writeln!(self.out, "== {key} ({}{code})", state.status.as_str())?;
                self.last_key = None;
            }
            (Frame::Error { key, message }, _) => {
                self.out.flush()?;
                let who = if key.is_empty() {
                    String::new()
                } else {
                    format!("{key}: ")
                };
                writeln!(self.err, "== {who}{message}")?;
            }
            (Frame::Done { status }, _) => {
                self.out.flush()?;
                return Ok(Some(status.clone()));
            }
            _ => {}
        }
        Ok(None)
    }

    /// One JSON line per frame that says something.
    fn json_line(&mut self, f: &Frame, seen: Seen<'_>) -> std::io::Result<Option<String>> {
        let line = match (f, seen) {
            (Frame::Output { key, channel, .. }, Seen::New(d)) => {
                let at = offset_of(self.cursors.entry(key.clone()).or_default(), *channel);
                let offset = *at - d.len() as u64;
                json!({"allocation": key, "stream": channel.as_str(), "offset": offset,
                    "data": String::from_utf8_lossy(d)})
            }
            (Frame::Skipped { key, channel, to }, Seen::Dropped(n)) => {
                json!({"allocation": key, "stream": channel.as_str(), "skipped_to": to, "dropped": n})
            }
            (Frame::State { key, state }, _) => {
                json!({"allocation": key, "status": state.status, "exit_code": state.exit_code})
            }
            (Frame::Error { key, message }, _) => json!({"allocation": key, "error": message}),
            (Frame::Done { status }, _) => json!({"done": status}),
            _ => return Ok(None),
        };
        writeln!(self.out, "{line}")?;
        if let Frame::Done { status } = f {
            self.out.flush()?;
            return Ok(Some(status.clone()));
        }
        Ok(None)
    }
}

fn offset_of(c: &mut LogCursor, channel: Channel) -> &mut u64 {
    match channel {
        Channel::Stdout => &mut c.stdout_offset,
        Channel::Stderr => &mut c.stderr_offset,
    }
}

/// `logs -f`: sessions from the printed offsets until following is over.
fn follow(home: &Home, a: &LogsArgs) -> Result<i32> {
    let mut caller = Caller::new(home, &a.ids.context)?;
    let mut f = Follower {
        cursors: BTreeMap::new(),
        headers: false,
        last_key: None,
        json: a.ids.json,
        frames: 0,
        out: Box::new(std::io::BufWriter::with_capacity(
            64 << 10,
            std::io::stdout().lock(),
        )),
        err: Box::new(std::io::stderr()),
    };
    let mut first = true;
    // Since when the node could not be reached (while it restarts).
    let mut broken: Option<Instant> = None;
    loop {
        let req = DeploymentLogsRequest {
            id: a.ids.id.clone(),
            allocation: a.allocation.clone(),
            cursors: f.cursors.clone(),
            follow: true,
        };
        let reply = match caller.call_typed_raw::<DeploymentLogsCall>(&req, Duration::from_secs(60))
        {
            Ok(Ok((v, _))) => v,
            Ok(Err(code)) => return Ok(code),
            Err(e) => {
                let since = *broken.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    return Err(e.context("the node stayed unreachable while following"));
                }
                std::thread::sleep(Duration::from_secs(1));
                // A restarted daemon may listen on another port (`rest.port` 0).
                if let Ok(c) = Caller::new(home, &a.ids.context) {
                    caller = c;
                }
                continue;
            }
        };
        if first {
            f.headers = reply.logs.len() > 1;
            first = false;
        }
        let Some(session) = reply.session else {
            return Err(anyhow!(
                "the node answered without a follow session (is it older than this CLI?)"
            ));
        };
        let before = f.frames;
        match stream(&caller, &session, &mut f) {
            Ok(Some(_status)) => return Ok(exit::OK),
            Ok(None) => {}
            Err(e) if is_broken_pipe(&e) => return Ok(exit::OK),
            Err(e) => {
                if broken.is_some_and(|since| since.elapsed() > RECONNECT_FOR) {
                    return Err(e);
                }
            }
        }
        // Cut before the end: resume from what was printed. A session that brought frames
        // was a success, so the time to give up counts again from here.
        if f.frames > before {
            broken = None;
        }
        if broken.is_none() {
            let _ = writeln!(
                f.err,
                "== connection to the node lost; resuming where it stopped"
            );
        }
        broken.get_or_insert_with(Instant::now);
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Reads one session's frames and prints them: `Some(status)` when following is over,
/// `None` when the stream was cut before.
fn stream(caller: &Caller, session: &str, f: &mut Follower) -> Result<Option<String>> {
    let (addr, port) = caller.endpoint();
    let api = Api::for_transfers(addr, port, Duration::from_secs(30));
    let mut r = api.get_raw(&format!("/output/{session}"))?;
    if r.status() != 200 {
        let v: serde_json::Value = r.body_mut().read_json().unwrap_or_default();
        let why = v["error"]["message"]
            .as_str()
            .or(v["message"].as_str())
            .unwrap_or("no reason given");
        return Err(anyhow!("following failed: HTTP {}: {why}", r.status()));
    }
    let mut body = r.into_body().into_reader();
    let mut buf = bytes::BytesMut::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 256 << 10];
    loop {
        while let Some(frame) = Frame::take(&mut buf)? {
            if let Some(status) = f.on(frame)? {
                return Ok(Some(status));
            }
        }
        // Everything received is printed before waiting for more.
        f.out.flush()?;
        let n = match body.read(&mut chunk) {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn follower() -> Follower {
        Follower {
            cursors: BTreeMap::new(),
            headers: false,
            last_key: None,
            json: false,
            frames: 0,
            out: Box::new(std::io::sink()),
            err: Box::new(std::io::sink()),
        }
    }

    fn out(offset: u64, data: &'static [u8]) -> Frame {
        Frame::Output {
            key: "n.a".into(),
            channel: Channel::Stdout,
            offset,
            data: bytes::Bytes::from_static(data),
        }
    }

    #[test]
    fn cursors_print_each_byte_once_and_restart_for_a_new_source() {
        let mut f = follower();
        let begin = |s: &str| Frame::Begin {
            key: "n.a".into(),
            source: s.into(),
        };
        assert!(matches!(f.advance(&begin("p1")), Seen::Other));
        assert!(matches!(
            f.advance(&out(0, b"hello ")),
            Seen::New(b"hello ")
        ));
        // A frame resent from before the cursor: only its new part.
        assert!(matches!(
            f.advance(&out(3, b"lo world")),
            Seen::New(b"world")
        ));
        assert!(matches!(f.advance(&out(0, b"hello")), Seen::Old));
        assert_eq!(f.cursors["n.a"].stdout_offset, 11);
        let skip = Frame::Skipped {
            key: "n.a".into(),
            channel: Channel::Stdout,
            to: 20,
        };
        assert!(matches!(f.advance(&skip), Seen::Dropped(9)));
        // The same source again keeps the offsets; another one starts at 0.
        f.advance(&begin("p1"));
        assert_eq!(f.cursors["n.a"].stdout_offset, 20);
        f.advance(&begin("p2"));
        assert_eq!(f.cursors["n.a"].stdout_offset, 0);
        assert_eq!(f.cursors["n.a"].source.as_deref(), Some("p2"));
        assert!(matches!(f.advance(&out(0, b"new")), Seen::New(b"new")));
    }
}
