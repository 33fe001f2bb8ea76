//! Test tooling: a userspace link emulator. It forwards every Ethernet frame between two
//! network interfaces, each direction after a delay (plus a uniform jitter, frames kept in
//! order) and with a share of the frames dropped — what `tc netem` does, which the kernels
//! this project is tested on lack. The namespace devnet (`nunet devnet up --netns --wan …`)
//! puts one between each node and the switch, in a namespace of its own, so the node's
//! traffic crosses a WAN-like link.
//!
//! Frames are read and written with `AF_PACKET` sockets carrying virtio-net headers, so
//! segmentation-offloaded (GSO) frames pass whole, as they would over the veth pair the
//! emulator replaces.
//!
//! What it must not do: touch any interface but the two it is given, or be used on a path a
//! production node depends on (it is a test instrument; it holds each frame in memory for
//! the length of the delay, at most [`QUEUE_FRAMES`] per direction).

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Frames waiting in one direction at most; a frame arriving over it is dropped (a full
/// queue, as on a real link).
pub const QUEUE_FRAMES: usize = 16384;
/// Largest frame read: a GSO super-frame (64 KiB) plus its virtio-net header.
const FRAME_BUF: usize = 65536 + 64;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The link parameters could not be read.
    #[error("link parameters {spec:?}: {reason}")]
    Params {
        /// What was given.
        spec: String,
        /// Why it is wrong.
        reason: String,
    },
    /// An interface or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What one direction of the link does to each frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkParams {
    /// Added to every frame.
    pub delay: Duration,
    /// Each frame's delay varies uniformly within ±`jitter` (never below zero, never ahead
    /// of the frame before it).
    pub jitter: Duration,
    /// Share of frames dropped, 0.0–1.0.
    pub loss: f64,
}

fn duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        _ => return None,
    };
    (secs.is_finite() && (0.0..=60.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

impl FromStr for LinkParams {
    type Err = LinkError;

    /// `delay=40ms,jitter=10ms,loss=1%` (each key optional; durations in `us`, `ms` or `s`,
    /// at most 60 s; loss in percent).
    fn from_str(spec: &str) -> Result<Self, LinkError> {
        let bad = |reason: String| LinkError::Params {
            spec: spec.to_string(),
            reason,
        };
        let mut p = LinkParams {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
        };
        for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not key=value")))?;
            match k.trim() {
                "delay" | "jitter" => {
                    let d = duration(v.trim()).ok_or_else(|| {
                        bad(format!("{v:?} is not a duration (40ms, 1.5s) up to 60 s"))
                    })?;
                    if k.trim() == "delay" {
                        p.delay = d;
                    } else {
                        p.jitter = d;
                    }
                }
                "loss" => {
                    let pct: f64 = v
                        .trim()
                        .strip_suffix('%')
                        .ok_or_else(|| bad(format!("loss {v:?}: write a percentage, e.g. 1%")))?
                        .parse()
                        .map_err(|_| bad(format!("loss {v:?} is not a number")))?;
                    if !(0.0..=100.0).contains(&pct) {
                        return Err(bad(format!("loss {v:?} is not within 0–100 %")));
                    }
                    p.loss = pct / 100.0;
                }
                other => return Err(bad(format!("unknown key {other:?}: delay, jitter, loss"))),
            }
        }
        Ok(p)
    }
}

impl std::fmt::Display for LinkParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delay={}ms,jitter={}ms,loss={}%",
            self.delay.as_secs_f64() * 1e3,
            self.jitter.as_secs_f64() * 1e3,
            self.loss * 100.0
        )
    }
}

/// When each frame of one direction leaves: the pure part of the emulator.
pub struct Schedule {
    params: LinkParams,
    last_due: Option<Instant>,
    rng: StdRng,
}

impl Schedule {
    /// A schedule drawing jitter and loss from `seed`.
    pub fn new(params: LinkParams, seed: u64) -> Self {
        Self {
            params,
            last_due: None,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// When a frame that arrived at `now` leaves, or `None` when it is lost.
    pub fn admit(&mut self, now: Instant) -> Option<Instant> {
        if self.params.loss > 0.0 && self.rng.r#gen::<f64>() < self.params.loss {
            return None;
        }
        let mut due = now + self.params.delay;
        if !self.params.jitter.is_zero() {
            let j = self.params.jitter.as_secs_f64() * self.rng.gen_range(-1.0..=1.0);
            due = if j >= 0.0 {
                due + Duration::from_secs_f64(j)
            } else {
                due.checked_sub(Duration::from_secs_f64(-j))
                    .unwrap_or(now)
                    .max(now)
            };
        }
        // A link does not reorder: a frame never leaves before the one ahead of it.
        if let Some(last) = self.last_due {
            due = due.max(last);
        }
        self.last_due = Some(due);
        Some(due)
    }
}

fn io_err(what: impl Into<String>) -> LinkError {
    LinkError::Io {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

/// An `AF_PACKET` socket bound to one interface, in promiscuous mode, with virtio-net
/// headers.
struct PacketSocket {
    fd: OwnedFd,
    name: String,
}

impl PacketSocket {
    fn open(name: &str) -> Result<Self, LinkError> {
        let cname = CString::new(name).map_err(|_| LinkError::Params {
            spec: name.to_string(),
            reason: "interface name with a NUL byte".into(),
        })?;
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
        #[allow(unsafe_code)]
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(io_err(format!("interface {name}")));
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked before use.
        #[allow(unsafe_code)]
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        if raw < 0 {
            return Err(io_err("socket(AF_PACKET) (needs root)"));
        }
        // SAFETY: `raw` is a freshly created, valid descriptor that nothing else owns.
        #[allow(unsafe_code)]
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = Self {
            fd,
            name: name.to_string(),
        };
        let one: libc::c_int = 1;
        s.setsockopt(libc::PACKET_VNET_HDR, &one, "PACKET_VNET_HDR")?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        #[allow(unsafe_code)]
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::bind(
                s.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io_err(format!("bind to {name}")));
        }
        // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
        #[allow(unsafe_code)]
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = index as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        s.setsockopt(libc::PACKET_ADD_MEMBERSHIP, &mreq, "promiscuous mode")?;
        Ok(s)
    }

    fn setsockopt<T>(&self, opt: libc::c_int, v: &T, what: &str) -> Result<(), LinkError> {
        // SAFETY: `v` points to a live `T` of the size passed.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                opt,
                (v as *const T).cast(),
                std::mem::size_of::<T>() as u32,
            )
        };
        if r < 0 {
            return Err(io_err(format!("{what} on {}", self.name)));
        }
        Ok(())
    }

    /// Reads one frame that arrived on the interface into `buf` (frames this host sent out
    /// of it are skipped); its length.
    fn recv(&self, buf: &mut [u8]) -> Result<usize, LinkError> {
        loop {
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            #[allow(unsafe_code)]
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` and `from` are valid for writes of the sizes passed.
            #[allow(unsafe_code)]
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LinkError::Io {
                    what: format!("reading from {}", self.name),
                    source: e,
                });
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(n as usize);
        }
    }

    /// Writes one frame (with its virtio-net header) out of the interface.
    fn send(&self, frame: &[u8]) -> Result<(), LinkError> {
        // SAFETY: `frame` is valid for reads of its length.
        #[allow(unsafe_code)]
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(io_err(format!("writing to {}", self.name)));
        }
        Ok(())
    }
}

/// Counters of one direction, printed when the emulator stops.
#[derive(Default, Debug)]
struct Counts {
    forwarded: u64,
    lost: u64,
    overflow: u64,
}

/// Forwards frames from `from` to `to` through `schedule`, until a socket fails.
fn direction(from: PacketSocket, to: PacketSocket, mut schedule: Schedule) -> LinkError {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(QUEUE_FRAMES);
    let writer = std::thread::spawn(move || -> LinkError {
        let mut pending: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        loop {
            let next = match pending.front() {
                Some(_) => None,
                None => match rx.recv() {
                    Ok(f) => Some(f),
                    Err(_) => {
                        return LinkError::Params {
                            spec: to.name.clone(),
                            reason: "reader stopped".into(),
                        };
                    }
                },
            };
            if let Some(f) = next {
                pending.push_back(f);
            }
            while let Ok(f) = rx.try_recv() {
                pending.push_back(f);
            }
            let Some((due, _)) = pending.front() else {
                continue;
            };
            let now = Instant::now();
            if *due > now {
                // Frames behind it are due no earlier (the schedule keeps order).
                std::thread::sleep(*due - now);
                continue;
            }
            if let Some((_, frame)) = pending.pop_front()
                && let Err(e) = to.send(&frame)
            {
                // A frame too big for the far side (MTU) is the sender's problem, as on a
                // real link; anything else ends the link.
                if !matches!(&e, LinkError::Io { source, .. } if source.raw_os_error() == Some(libc::EMSGSIZE))
                {
                    return e;
                }
            }
        }
    });
    let mut counts = Counts::default();
    let mut buf = vec![0u8; FRAME_BUF];
    let err = loop {
        let n = match from.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => break e,
        };
        let Some(due) = schedule.admit(Instant::now()) else {
            counts.lost += 1;
            continue;
        };
        match tx.try_send((due, buf[..n].to_vec())) {
            Ok(()) => counts.forwarded += 1,
            Err(mpsc::TrySendError::Full(_)) => counts.overflow += 1,
            Err(mpsc::TrySendError::Disconnected(_)) => {
                break writer.join().unwrap_or_else(|_| LinkError::Params {
                    spec: from.name.clone(),
                    reason: "writer panicked".into(),
                });
            }
        }
    };
    eprintln!("link {}: {counts:?}", from.name);
    err
}

/// Runs the link between interfaces `a` and `b` (in the calling thread's network namespace)
/// with `params` in each direction, until an interface goes away; returns why it stopped.
pub fn run(a: &str, b: &str, params: LinkParams, seed: u64) -> LinkError {
    let open = || -> Result<_, LinkError> {
        Ok((
            PacketSocket::open(a)?,
            PacketSocket::open(b)?,
            PacketSocket::open(a)?,
            PacketSocket::open(b)?,
        ))
    };
    let (a_rx, b_tx, a_tx, b_rx) = match open() {
        Ok(s) => s,
        Err(e) => return e,
    };
    // Whichever direction stops first stops the link: half a link is no link.
    let (done, first) = mpsc::channel();
    let back = done.clone();
    std::thread::spawn(move || {
        let _ = back.send(direction(
            b_rx,
            a_tx,
            Schedule::new(params, seed.wrapping_add(1)),
        ));
    });
    std::thread::spawn(move || {
        let _ = done.send(direction(a_rx, b_tx, Schedule::new(params, seed)));
    });
    first.recv().unwrap_or_else(|_| LinkError::Params {
        spec: format!("{a} <-> {b}"),
        reason: "both directions stopped without a reason".into(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn params_read_delay_jitter_and_loss() {
        let p: LinkParams = "delay=40ms,jitter=10ms,loss=1%".parse().unwrap();
        assert_eq!(p.delay, Duration::from_millis(40));
        assert_eq!(p.jitter, Duration::from_millis(10));
        assert!((p.loss - 0.01).abs() < 1e-12);
        let p: LinkParams = "delay=1.5s".parse().unwrap();
        assert_eq!(p.delay, Duration::from_millis(1500));
        assert_eq!(p.loss, 0.0);
        assert_eq!(
            p.to_string().parse::<LinkParams>().unwrap(),
            p,
            "Display reads back"
        );
    }

    #[test]
    fn bad_params_say_what_is_wrong() {
        let err = |s: &str| s.parse::<LinkParams>().unwrap_err().to_string();
        assert!(err("delay=40").contains("not a duration"));
        assert!(err("delay=2min").contains("not a duration"));
        assert!(err("delay=61s").contains("up to 60 s"));
        assert!(err("loss=1").contains("percentage"));
        assert!(err("loss=101%").contains("0–100"));
        assert!(err("rate=1mbit").contains("unknown key"));
        assert!(err("delay").contains("key=value"));
    }

    #[test]
    fn frames_leave_after_the_delay_in_order_and_the_loss_rate_holds() {
        let p = LinkParams {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
            loss: 0.1,
        };
        let mut s = Schedule::new(p, 7);
        let t0 = Instant::now();
        let mut last = t0;
        let (mut lost, n) = (0, 20_000);
        for i in 0..n {
            let now = t0 + Duration::from_micros(100 * i);
            match s.admit(now) {
                None => lost += 1,
                Some(due) => {
                    assert!(due >= last, "reordered");
                    assert!(
                        due >= now + Duration::from_millis(30),
                        "under delay - jitter"
                    );
                    last = due;
                }
            }
        }
        let rate = f64::from(lost) / n as f64;
        assert!((0.08..0.12).contains(&rate), "loss rate {rate}");
        // Without jitter every frame takes exactly the delay.
        let mut s = Schedule::new(
            LinkParams {
                jitter: Duration::ZERO,
                loss: 0.0,
                ..p
            },
            1,
        );
        assert_eq!(s.admit(t0), Some(t0 + Duration::from_millis(50)));
    }
}
