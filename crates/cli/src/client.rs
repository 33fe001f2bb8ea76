//! Talking to the local daemon: signing envelopes with a user context and posting them to
//! the REST bridge.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nunet_actor::envelope::Address;
use nunet_actor::{ActorError, Envelope, ErrorKind, Handle, MAX_ENVELOPE_BYTES, Options};
use nunet_capability::{Action, Anchors, Capability, TokenList, TokenSpec, expiry_after, now_ns};
use nunet_did::Keypair;
use serde_json::Value;

/// Exit codes of `nunet actor`.
pub mod exit {
    /// The behavior ran and returned a result.
    pub const OK: i32 = 0;
    /// The behavior failed, or bad input.
    pub const FAILED: i32 = 1;
    /// The receiver denied the message (capabilities, signature, expiry, replay).
    pub const DENIED: i32 = 3;
    /// No answer in time, or the receiver could not be reached.
    pub const TIMEOUT: i32 = 4;
}

/// Exit code for an actor error.
pub fn code_of(e: &ActorError) -> i32 {
    match e.kind {
        ErrorKind::Denied | ErrorKind::Rejected => exit::DENIED,
        ErrorKind::Timeout | ErrorKind::Unreachable => exit::TIMEOUT,
        _ => exit::FAILED,
    }
}

/// A request the daemon would refuse for its size (its REST body limit is
/// [`MAX_ENVELOPE_BYTES`]), refused here before anything is sent.
#[derive(Debug)]
pub struct TooLarge {
    /// Size of the request body.
    pub bytes: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request is {} bytes; the daemon accepts at most {MAX_ENVELOPE_BYTES}",
            self.bytes
        )
    }
}

impl std::error::Error for TooLarge {}

/// The local daemon's REST API.
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// The API of a daemon listening on `addr:port` (`rest.addr`, `rest.port`). A wildcard
    /// listen address (`0.0.0.0`, `::`) is reached on loopback; IPv6 addresses are
    /// bracketed.
    pub fn new(addr: &str, port: u16, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout.saturating_add(Duration::from_secs(5))))
            .build();
        Self::with_config(addr, port, config)
    }

    /// A client for file transfers, whose bodies take as long as they take: only connecting
    /// (5 s) and the daemon's first answer (`first_answer`) have deadlines.
    pub fn for_transfers(addr: &str, port: u16, first_answer: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_recv_response(Some(first_answer))
            .build();
        Self::with_config(addr, port, config)
    }

    /// A client for calls answered only when a whole file has moved (a copy between two
    /// peers through the daemon): no deadline on the answer; the daemon bounds each step of
    /// the transfer itself.
    pub fn for_relays(addr: &str, port: u16) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build();
        Self::with_config(addr, port, config)
    }

    fn with_config(addr: &str, port: u16, config: ureq::config::Config) -> Self {
        let host = match addr.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(nunet_config::client_ip(ip), port).to_string(),
            Err(_) => format!("{addr}:{port}"),
        };
        Self {
            base: format!("http://{host}/api/v1"),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Why a request failed, telling a daemon that closed the connection (it may have
    /// refused the request) from one that is not there. `sent`: the request body's size.
    fn failed(&self, e: ureq::Error, sent: Option<usize>) -> anyhow::Error {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        let closed = matches!(&e, ureq::Error::Io(io) if matches!(
            io.kind(),
            BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
        ));
        if !closed {
            return anyhow!(
                "cannot reach the DMS at {} ({e}); is `nunet run` running with this --user-dir (NUNET_HOME)?",
                self.base
            );
        }
        let size = sent
            .map(|n| {
                format!(
                    "; the request was {n} bytes (the daemon accepts at most {MAX_ENVELOPE_BYTES})"
                )
            })
            .unwrap_or_default();
        anyhow!(
            "the DMS at {} closed the connection before answering ({e}){size}; its log may say why",
            self.base
        )
    }

    /// GET `path`; the response whatever its status, its body unread.
    pub fn get_raw(&self, path: &str) -> Result<ureq::http::Response<ureq::Body>> {
        self.agent
            .get(&format!("{}{path}", self.base))
            .call()
            .map_err(|e| self.failed(e, None))
    }

    /// PUT `body` (`len` bytes, `application/octet-stream`) to `path`; the status and the
    /// JSON answer.
    pub fn put_raw(
        &self,
        path: &str,
        body: &mut dyn std::io::Read,
        len: u64,
    ) -> Result<(u16, Value)> {
        let mut r = self
            .agent
            .put(&format!("{}{path}", self.base))
            .header("content-type", "application/octet-stream")
            .header("content-length", len.to_string())
            .send(ureq::SendBody::from_reader(body))
            .map_err(|e| self.failed(e, None))?;
        let status = r.status().as_u16();
        let v = r.body_mut().read_json().unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// POST with no body to `path`; the status and the JSON answer.
    pub fn post_empty(&self, path: &str) -> Result<(u16, Value)> {
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .send_empty()
            .map_err(|e| self.failed(e, None))?;
        let status = r.status().as_u16();
        let v = r.body_mut().read_json().unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// GET a JSON document.
    pub fn get(&self, path: &str) -> Result<Value> {
        let mut r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .call()
            .map_err(|e| self.failed(e, None))?;
        r.body_mut()
            .read_json()
            .context("reading the daemon's answer")
    }

    /// POST a JSON document; returns the status and body. A body over the daemon's limit
    /// is refused with [`TooLarge`] without contacting the daemon.
    pub fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let bytes = serde_json::to_vec(body)?;
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(TooLarge { bytes: bytes.len() }.into());
        }
        let sent = bytes.len();
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(&bytes[..])
            .map_err(|e| self.failed(e, Some(sent)))?;
        let status = r.status().as_u16();
        let v: Value = r
            .body_mut()
            .read_json()
            .context("reading the daemon's answer")?;
        Ok((status, v))
    }

    /// The local node's root handle.
    pub fn handle(&self) -> Result<Handle> {
        Ok(serde_json::from_value(self.get("/actor/handle")?)?)
    }
}

/// Builds and signs an envelope from a user context to `to` (None = broadcast on `topic`).
#[allow(clippy::too_many_arguments)]
pub fn sign_envelope(
    key: &Keypair,
    anchors: &Anchors,
    local: &Handle,
    to: Option<Handle>,
    be: &str,
    payload: &Value,
    ttl: Duration,
    topic: Option<&str>,
) -> Result<Envelope> {
    let exp = expiry_after(now_ns(), ttl).context("the message lifetime (--expiry)")?;
    let cap: Capability = be.parse().with_context(|| format!("behavior {be:?}"))?;
    let topic_caps: Vec<Capability> = topic
        .map(|t| t.parse())
        .transpose()
        .with_context(|| "topic")?
        .into_iter()
        .collect();
    let aud = to.as_ref().and_then(|h| nunet_did::Did::parse(&h.id).ok());
    let act = if topic.is_some() {
        Action::Broadcast
    } else {
        Action::Invoke
    };
    let spec = TokenSpec {
        sub: key.did(),
        aud,
        cap: vec![cap],
        topic: topic_caps,
        exp,
        depth: 0,
    };
    let toks = anchors.invocation_tokens(key, act, &spec, now_ns());
    let from = Handle {
        id: key.did().to_string(),
        did: key.did().to_string(),
        addr: Address {
            host: local.addr.host.clone(),
            inbox: format!("cli-{:016x}", rand::random::<u64>()),
        },
    };
    let cont = match topic {
        Some(_) => format!("/reply/{:016x}", rand::random::<u64>()),
        None => "/reply".to_string(),
    };
    let opt = Options {
        exp,
        cont,
        topic: topic.unwrap_or_default().to_string(),
        ..Options::default()
    };
    let msg = serde_json::to_vec(payload)?;
    Ok(Envelope::sign(
        key,
        from,
        to.unwrap_or_default(),
        be,
        opt,
        msg,
        TokenList { tok: toks }.to_json().into_bytes(),
    ))
}

/// Outcome of posting an envelope.
pub enum Outcome {
    /// The behavior's result.
    Value(Value),
    /// Replies to a broadcast: sender handle and result.
    Replies(Vec<(Handle, Result<Value, ActorError>)>),
}

/// Posts an envelope to `/actor/{invoke,send,broadcast}` and interprets the answer.
pub fn post_envelope(api: &Api, kind: &str, env: &Envelope) -> Result<Result<Outcome, ActorError>> {
    let (status, body) = api.post(&format!("/actor/{kind}"), &serde_json::to_value(env)?)?;
    if let Some(e) = body.get("error") {
        let e: ActorError =
            serde_json::from_value(e.clone()).unwrap_or_else(|_| ActorError::failed(e.to_string()));
        return Ok(Err(e));
    }
    if status >= 400 {
        bail!("the daemon answered HTTP {status}: {body}");
    }
    match kind {
        "invoke" => {
            let reply: Envelope = serde_json::from_value(body).context("reply envelope")?;
            reply
                .verify_signature()
                .map_err(|e| anyhow!("reply: {e}"))?;
            Ok(nunet_actor::system::decode_reply(&reply).map(Outcome::Value))
        }
        "broadcast" => {
            let list: Vec<Envelope> =
                serde_json::from_value(body.get("replies").cloned().unwrap_or(Value::Null))
                    .unwrap_or_default();
            Ok(Ok(Outcome::Replies(
                list.into_iter()
                    .filter(|r| r.verify_signature().is_ok())
                    .map(|r| (r.from.clone(), nunet_actor::system::decode_reply(&r)))
                    .collect(),
            )))
        }
        _ => Ok(Ok(Outcome::Value(body))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    const T: Duration = Duration::from_secs(5);

    /// Serves one connection: reads the request head, then answers `{"status":"ok"}`, or
    /// (with `close_early`) closes without reading the body or answering.
    fn serve_once(listener: TcpListener, close_early: bool) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            if close_early {
                return;
            }
            let body = br#"{"status":"ok"}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(body).unwrap();
        })
    }

    #[test]
    fn wildcard_listen_addresses_are_reached_on_loopback() {
        assert_eq!(Api::new("::", 9999, T).base, "http://[::1]:9999/api/v1");
        assert_eq!(
            Api::new("0.0.0.0", 9999, T).base,
            "http://127.0.0.1:9999/api/v1"
        );
        assert_eq!(
            Api::new("::ffff:127.0.0.1", 9999, T).base,
            "http://127.0.0.1:9999/api/v1"
        );
        assert_eq!(Api::new("::1", 80, T).base, "http://[::1]:80/api/v1");
        assert_eq!(
            Api::new("127.0.0.1", 9999, T).base,
            "http://127.0.0.1:9999/api/v1"
        );
    }

    #[test]
    fn a_daemon_listening_on_the_ipv6_wildcard_is_reached() {
        // Skipped where the machine has no IPv6.
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let server = serve_once(listener, false);
        let v = Api::new("::", port, T).get("/health").unwrap();
        assert_eq!(v["status"], "ok");
        server.join().unwrap();
    }

    #[test]
    fn a_request_over_the_daemons_limit_is_refused_before_sending() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = Value::String("x".repeat(MAX_ENVELOPE_BYTES));
        let e = Api::new("127.0.0.1", port, T)
            .post("/actor/invoke", &body)
            .unwrap_err();
        let too_large = e
            .downcast_ref::<TooLarge>()
            .unwrap_or_else(|| panic!("{e:#}"));
        assert_eq!(too_large.bytes, MAX_ENVELOPE_BYTES + 2);
        assert!(
            e.to_string()
                .contains(&format!("the daemon accepts at most {MAX_ENVELOPE_BYTES}")),
            "{e}"
        );
        // Nothing was sent.
        assert!(listener.accept().is_err());
    }

    #[test]
    fn a_daemon_closing_the_connection_mid_request_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = serve_once(listener, true);
        let body = Value::String("x".repeat(MAX_ENVELOPE_BYTES / 2));
        let e = Api::new("127.0.0.1", port, T)
            .post("/actor/invoke", &body)
            .unwrap_err()
            .to_string();
        server.join().unwrap();
        assert!(e.contains("closed the connection before answering"), "{e}");
        assert!(
            e.contains(&format!("{} bytes", MAX_ENVELOPE_BYTES / 2 + 2)),
            "{e}"
        );
        assert!(!e.contains("cannot reach"), "{e}");
    }
}
