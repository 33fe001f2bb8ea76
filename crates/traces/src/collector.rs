//! A minimal OTLP/HTTP collector on loopback for tests and benchmarks: it keeps the JSON
//! body of every request and answers 200, on kept-alive connections as exporters use them.
//! It checks nothing of the OTLP schema; readers of its bodies do.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Requests received: (path, body).
pub type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Starts the collector on `127.0.0.1`, port 0; returns the bound port and what it receives.
pub fn start() -> std::io::Result<(u16, Received)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    let got: Received = Arc::default();
    let keep = got.clone();
    std::thread::Builder::new()
        .name("otlp-collector".into())
        .spawn(move || {
            for conn in l.incoming().flatten() {
                let keep = keep.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &keep);
                });
            }
        })?;
    Ok((port, got))
}

/// Requests on one connection until it closes.
fn serve(conn: std::net::TcpStream, keep: &Received) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        if let Ok(mut k) = keep.lock() {
            k.push((path, body));
        }
        w.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn the_exporter_reaches_the_collector_and_names_the_node() {
        let (port, got) = super::start().unwrap();
        crate::describe_node("did:key:zTest", "12D3KooTest");
        // The process-wide exporter: this is the only test that installs it.
        let _layer = crate::install(&format!("http://127.0.0.1:{port}")).unwrap();
        crate::emit_root("dep-1", 1, 2, vec![("status".into(), "Completed".into())]);
        crate::flush(std::time::Duration::from_secs(5));
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "/v1/traces");
        let v: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
        let rs = &v["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][1]["value"]["stringValue"],
            "12D3KooTest"
        );
        let root = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(
            root["traceId"],
            hex::encode(crate::SpanContext::root_of("dep-1").trace)
        );
        assert_eq!(root["name"], "deployment");
        assert_eq!(crate::exported(), 1);
    }
}
