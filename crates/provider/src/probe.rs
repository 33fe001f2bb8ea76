//! Link measurements between two nodes, for edge constraints: the round trip (the network's
//! on-demand ping, best of three) and a bounded throughput probe on its own protocol,
//! [`PROBE_PROTOCOL`].
//!
//! Probe wire format: the sender opens a stream, writes raw bytes (at most [`SEND_BYTES`],
//! for at most [`SEND_TIME`]) and closes its write half; the receiver counts what arrives
//! until the end of the stream and answers 16 bytes: the byte count and the elapsed
//! microseconds (from taking the stream to its end), both big-endian `u64`. The sender turns
//! them into Mbit/s.
//!
//! Every node serves the protocol ([`ProbeServer`]), bounded: at most [`MAX_CONCURRENT`]
//! probes at once (extra streams are dropped at once and counted), each capped at
//! [`SERVE_MAX_BYTES`] and [`SERVE_TIMEOUT`]. This module must not measure anything on its
//! own initiative nor keep state between probes other than the counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use nunet_network::Network;
use tokio::sync::Semaphore;

/// The throughput probe protocol.
pub const PROBE_PROTOCOL: StreamProtocol = StreamProtocol::new("/nunet/probe/1.0.0");
/// Most bytes a probe sends.
pub const SEND_BYTES: u64 = 4 << 20;
/// Longest a probe sends.
pub const SEND_TIME: Duration = Duration::from_millis(300);
/// Most probes served at once; further streams are dropped and counted.
pub const MAX_CONCURRENT: usize = 4;
/// Most bytes counted per served probe (the rest is not read).
pub const SERVE_MAX_BYTES: u64 = 2 * SEND_BYTES;
/// Longest a served probe may take, answer included.
pub const SERVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the sender waits for the receiver's answer after sending.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Write size of the sender.
const CHUNK: usize = 64 << 10;
/// Pings taken for one RTT measurement (the smallest counts).
pub const PINGS: usize = 3;
/// Longest one ping may take.
const PING_TIMEOUT: Duration = Duration::from_millis(1500);
/// Longest the DHT lookup and dial of an unconnected peer may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a measurement failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    /// The probe protocol could not be registered on this host.
    #[error("cannot serve {PROBE_PROTOCOL}: {0}")]
    Register(String),
    /// No stream could be opened to the peer.
    #[error("cannot reach {peer}: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The probe stream failed or the receiver did not answer.
    #[error("throughput probe to {peer} failed: {reason}")]
    Probe {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
}

/// What a throughput probe measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Bytes the receiver counted.
    pub bytes: u64,
    /// How long the receiver took to get them.
    pub elapsed: Duration,
}

impl Throughput {
    /// Megabits per second (bytes × 8 / elapsed; 1 µs at least).
    pub fn mbps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        self.bytes as f64 * 8.0 / secs / 1e6
    }
}

/// A measured link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSample {
    /// Smallest of [`PINGS`] round trips.
    pub rtt: Duration,
    /// Throughput, when asked for.
    pub throughput: Option<Throughput>,
}

#[derive(Default)]
struct Counters {
    served: AtomicU64,
    dropped: AtomicU64,
}

/// The receiving side of the probe protocol; stops serving when dropped.
pub struct ProbeServer {
    counters: Arc<Counters>,
    slots: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProbeServer {
    /// Registers [`PROBE_PROTOCOL`] on `net` and starts the accept loop (inside a tokio
    /// runtime). Fails when the protocol is already registered on this host.
    pub fn start(net: &Network) -> Result<Self, ProbeError> {
        Self::start_with(net, SERVE_TIMEOUT)
    }

    /// [`Self::start`] with another time limit per served probe.
    fn start_with(net: &Network, serve_timeout: Duration) -> Result<Self, ProbeError> {
        let incoming = net
            .streams()
            .accept(PROBE_PROTOCOL)
            .map_err(|e| ProbeError::Register(e.to_string()))?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
        let s = slots.clone();
        let task = tokio::spawn(async move {
            let slots = s;
            let mut incoming = incoming;
            while let Some((peer, stream)) = incoming.next().await {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "probe dropped: too many at once");
                    drop(stream);
                    continue;
                };
                let c = c.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(serve_timeout, serve(stream, serve_timeout / 2))
                        .await
                    {
                        Ok(Ok(())) => {
                            c.served.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "probe failed"),
                        Err(_) => tracing::debug!(%peer, "probe timed out"),
                    }
                });
            }
        });
        Ok(Self {
            counters,
            slots,
            task,
        })
    }

    /// Probes being served now (at most [`MAX_CONCURRENT`]).
    pub fn running(&self) -> usize {
        MAX_CONCURRENT.saturating_sub(self.slots.available_permits())
    }

    /// Probes answered so far.
    pub fn served(&self) -> u64 {
        self.counters.served.load(Ordering::Relaxed)
    }

    /// Probe streams dropped because [`MAX_CONCURRENT`] were already running.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }
}

/// Counts one probe's bytes until its end (or the byte cap / half the serve timeout) and
/// answers the count and the elapsed time.
async fn serve(mut stream: libp2p::Stream, budget: Duration) -> std::io::Result<()> {
    let started = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    while bytes < SERVE_MAX_BYTES {
        let left = budget.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => bytes += n as u64,
            Ok(Err(e)) => return Err(e),
        }
    }
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut answer = [0u8; 16];
    answer[..8].copy_from_slice(&bytes.to_be_bytes());
    answer[8..].copy_from_slice(&micros.to_be_bytes());
    stream.write_all(&answer).await?;
    stream.flush().await?;
    let _ = stream.close().await;
    Ok(())
}

/// Sends one probe to `peer` (at most [`SEND_BYTES`] for at most [`SEND_TIME`]) and returns
/// what the receiver counted.
pub async fn throughput(net: &Network, peer: PeerId) -> Result<Throughput, ProbeError> {
    let fail = |reason: String| ProbeError::Probe { peer, reason };
    let mut stream = tokio::time::timeout(DIAL_TIMEOUT, net.open_stream(peer, PROBE_PROTOCOL))
        .await
        .map_err(|_| ProbeError::Unreachable {
            peer,
            reason: "opening the probe stream timed out".into(),
        })?
        .map_err(|e| ProbeError::Unreachable {
            peer,
            reason: e.to_string(),
        })?;
    let chunk = vec![0x5au8; CHUNK];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < SEND_BYTES {
        let Some(left) = SEND_TIME.checked_sub(started.elapsed()) else {
            break;
        };
        let n = CHUNK.min(usize::try_from(SEND_BYTES - sent).unwrap_or(CHUNK));
        match tokio::time::timeout(left, stream.write_all(&chunk[..n])).await {
            Ok(Ok(())) => sent += n as u64,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => break,
        }
    }
    let reply = async {
        stream.flush().await?;
        stream.close().await?;
        let mut answer = [0u8; 16];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(REPLY_TIMEOUT, reply)
        .await
        .map_err(|_| fail("no answer from the receiver".into()))?
        .map_err(|e| fail(format!("no answer from the receiver: {e}")))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(&answer[..8]);
    let bytes = u64::from_be_bytes(b);
    b.copy_from_slice(&answer[8..]);
    let micros = u64::from_be_bytes(b);
    if bytes > sent {
        return Err(fail(format!(
            "the receiver counted {bytes} bytes of {sent} sent"
        )));
    }
    Ok(Throughput {
        bytes,
        elapsed: Duration::from_micros(micros),
    })
}

/// Measures the link to `peer`: the smallest of [`PINGS`] round trips (dialing through the
/// DHT when the first fails) and, when `with_throughput`, one throughput probe.
pub async fn measure_link(
    net: &Network,
    peer: PeerId,
    with_throughput: bool,
) -> Result<LinkSample, ProbeError> {
    let mut best: Option<Duration> = None;
    let mut last = String::new();
    let mut dialed = false;
    let mut tries = 0;
    while tries < PINGS {
        tries += 1;
        match tokio::time::timeout(PING_TIMEOUT, net.ping(peer)).await {
            Ok(Ok(d)) => best = Some(best.map_or(d, |b| b.min(d))),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "ping timed out".into(),
        }
        if best.is_none() && !dialed {
            dialed = true;
            match tokio::time::timeout(DIAL_TIMEOUT, net.connect_through_dht(peer)).await {
                Ok(Ok(())) => tries = 0,
                Ok(Err(e)) => last = format!("{last}; {e}"),
                Err(_) => last = format!("{last}; DHT lookup timed out"),
            }
        }
    }
    let rtt = best.ok_or(ProbeError::Unreachable { peer, reason: last })?;
    let throughput = if with_throughput {
        Some(throughput(net, peer).await?)
    } else {
        None
    };
    Ok(LinkSample { rtt, throughput })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nunet_network::NetConfig;

    async fn host() -> Network {
        let mut cfg = NetConfig::new(libp2p::identity::Keypair::generate_ed25519());
        cfg.listen = NetConfig::loopback_listen();
        nunet_network::start(cfg).await.unwrap().0
    }

    /// Two hosts, `a` connected to `b`; `b` serves probes.
    async fn pair() -> (Network, Network, ProbeServer) {
        let (a, b) = (host().await, host().await);
        let server = ProbeServer::start(&b).unwrap();
        let addr = b.listen_addrs().await.into_iter().next().unwrap();
        a.dial(addr).await.unwrap();
        (a, b, server)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn measures_rtt_and_throughput_over_loopback() {
        let (a, b, server) = pair().await;
        let s = measure_link(&a, b.local_peer_id(), true).await.unwrap();
        assert!(
            s.rtt > Duration::ZERO && s.rtt < Duration::from_millis(500),
            "{s:?}"
        );
        let t = s.throughput.unwrap();
        assert!(t.bytes > 0 && t.bytes <= SEND_BYTES, "{t:?}");
        assert!(
            t.elapsed > Duration::ZERO && t.elapsed < SERVE_TIMEOUT,
            "{t:?}"
        );
        assert!(t.mbps() > 1.0, "loopback below 1 Mbit/s: {t:?}");
        assert_eq!(server.served(), 1);
        // Without a bandwidth bound nothing is probed.
        let s = measure_link(&a, b.local_peer_id(), false).await.unwrap();
        assert!(s.throughput.is_none());
        assert_eq!(server.served(), 1);
        // The protocol cannot be registered twice on one host.
        assert!(matches!(
            ProbeServer::start(&b),
            Err(ProbeError::Register(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn extra_concurrent_probes_are_dropped_and_counted() {
        let (a, b) = (host().await, host().await);
        // Probes held open keep their slots for up to 5 minutes here, so how long this test
        // takes on a loaded machine cannot free a slot before the extra probe arrives.
        let server = ProbeServer::start_with(&b, Duration::from_secs(600)).unwrap();
        a.dial(b.listen_addrs().await.into_iter().next().unwrap())
            .await
            .unwrap();
        let peer = b.local_peer_id();
        let mut control = a.streams();
        // Hold every slot with a stream that sends a byte and does not end yet, one at a
        // time: libp2p-stream hands inbound streams to the accept loop through a channel that
        // drops (resets) a stream arriving while the previous one is still queued, so
        // streams opened together on a loaded machine were reset before the server saw them
        // (a flake: `Stopped(0)`, or fewer than all running).
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in 1..=MAX_CONCURRENT {
            let mut s = control.open_stream(peer, PROBE_PROTOCOL).await.unwrap();
            s.write_all(&[1]).await.unwrap();
            s.flush().await.unwrap();
            held.push(s);
            while server.running() < n {
                assert!(Instant::now() < deadline, "{} running", server.running());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let r = throughput(&a, peer).await;
        assert!(matches!(r, Err(ProbeError::Probe { .. })), "{r:?}");
        assert_eq!(server.dropped(), 1);
        // Held streams are answered when they end; then probes work again.
        for mut s in held {
            s.close().await.unwrap();
            let mut answer = [0u8; 16];
            s.read_exact(&mut answer).await.unwrap();
            assert_eq!(u64::from_be_bytes(answer[..8].try_into().unwrap()), 1);
        }
        assert!(throughput(&a, peer).await.is_ok());
        assert_eq!(server.served(), MAX_CONCURRENT as u64 + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_peer_is_unreachable_within_bounds() {
        let a = host().await;
        let t0 = Instant::now();
        let r = measure_link(&a, PeerId::random(), true).await;
        assert!(matches!(r, Err(ProbeError::Unreachable { .. })), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    }
}
