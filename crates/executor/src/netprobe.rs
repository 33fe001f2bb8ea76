//! An HTTP GET from inside an execution's network namespace (http health checks): a short-lived
//! thread enters the namespace ([`crate::Executor::netns`]), connects to `127.0.0.1:<port>`
//! there, sends one `HTTP/1.0` request and reads the answer. The workload is reached exactly
//! as it sees itself, whatever network it is on, and nothing outside its namespace is.
//!
//! It must not follow redirects, resolve names or keep connections.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most bytes of an answer read (status line, headers and body).
pub const MAX_ANSWER: usize = 64 << 10;

/// What the workload answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body (lossy UTF-8, cut at [`MAX_ANSWER`] bytes with the headers).
    pub body: String,
}

/// GETs `path` from `127.0.0.1:port` inside the network namespace `netns`, within `timeout`.
pub async fn http_get(
    netns: &Path,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<HttpAnswer, String> {
    let (netns, path) = (netns.to_path_buf(), path.to_string());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("nunet-http-check".into())
        .spawn(move || {
            let _ = tx.send(get_in(&netns, port, &path, timeout));
        })
        .map_err(|e| format!("cannot start the check thread: {e}"))?;
    match tokio::time::timeout(timeout + Duration::from_millis(500), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("the check thread ended without an answer".into()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

fn get_in(netns: &PathBuf, port: u16, path: &str, timeout: Duration) -> Result<HttpAnswer, String> {
    let started = Instant::now();
    let ns = std::fs::File::open(netns)
        .map_err(|e| format!("cannot open the network namespace {}: {e}", netns.display()))?;
    // This thread only: it ends with this function.
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        format!("cannot enter the network namespace: {e} (CAP_SYS_ADMIN is needed)")
    })?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to port {port}: {e}"))?;
    let left = || {
        timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: nunet-healthcheck\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send the request: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while buf.len() < MAX_ANSWER {
        s.set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n.min(MAX_ANSWER - buf.len())]),
            Err(e) if started.elapsed() >= timeout => {
                return Err(format!("no complete answer within {timeout:?}: {e}"));
            }
            Err(e) => return Err(format!("read the answer: {e}")),
        }
    }
    parse(&buf)
}

/// Status code and body of an HTTP/1.x answer.
fn parse(buf: &[u8]) -> Result<HttpAnswer, String> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .ok_or_else(|| format!("not an HTTP answer: {:?}", short(&text)))?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|c| c.parse::<u16>().ok());
    match status {
        Some(status) if version.starts_with("HTTP/") => Ok(HttpAnswer {
            status,
            body: body.to_string(),
        }),
        _ => Err(format!("not an HTTP status line: {:?}", short(status_line))),
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_and_garbage_is_named() {
        let a = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "ok"));
        let a = parse(b"HTTP/1.0 503 Unavailable\n\nbusy").unwrap();
        assert_eq!((a.status, a.body.as_str()), (503, "busy"));
        assert!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n")
                .unwrap_err()
                .contains("status line")
        );
        assert!(
            parse(b"no end of headers")
                .unwrap_err()
                .contains("not an HTTP answer")
        );
    }

    #[tokio::test]
    async fn a_get_in_this_process_namespace_reaches_a_local_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = [0u8; 512];
            let n = c.read(&mut req).unwrap();
            let line = String::from_utf8_lossy(&req[..n])
                .lines()
                .next()
                .unwrap()
                .to_string();
            c.write_all(b"HTTP/1.0 200 OK\r\n\r\nhealthy").unwrap();
            line
        });
        let own = PathBuf::from("/proc/self/ns/net");
        let a = http_get(&own, port, "/health?x=1", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "healthy"));
        assert_eq!(server.join().unwrap(), "GET /health?x=1 HTTP/1.0");
        // Nothing listens on the port any more: a clear refusal, not a hang.
        let e = http_get(&own, port, "/", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.contains("connect to port"), "{e}");
    }
}
