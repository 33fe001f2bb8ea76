//! The OTLP/HTTP exporter: finished spans go through a bounded queue to one thread, which
//! posts them in batches as OTLP JSON to `<endpoint>/v1/traces`. When the queue is full
//! (the collector is slow or gone), spans are dropped and counted; nothing waits on the
//! collector but that thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::TraceError;
use crate::context::SpanContext;
use crate::layer::{SpanRecord, TraceLayer};

/// Spans waiting to be posted, at most.
pub const QUEUE: usize = 8192;
/// Spans per post, at most.
pub const BATCH: usize = 512;
/// Longest a finished span waits before it is posted.
pub const EVERY: Duration = Duration::from_secs(1);

enum Msg {
    Span(SpanRecord),
    Flush(SyncSender<()>),
}

/// Where finished spans go.
#[derive(Clone)]
pub(crate) struct Sink {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl Sink {
    pub(crate) fn send(&self, r: SpanRecord) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Span(r)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

static SINK: OnceLock<Sink> = OnceLock::new();
/// Spans a collector accepted so far.
static EXPORTED: AtomicU64 = AtomicU64::new(0);

/// How many spans a collector accepted so far.
pub fn exported() -> u64 {
    EXPORTED.load(Ordering::Relaxed)
}

/// A sink and what it receives, for tests of the layer.
#[cfg(test)]
pub(crate) fn test_sink() -> (Sink, impl Fn() -> Vec<SpanRecord>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let sink = Sink {
        tx,
        dropped: Arc::default(),
    };
    let take = move || {
        let mut v = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Msg::Span(s) = m {
                v.push(s);
            }
        }
        v
    };
    (sink, take)
}

static RESOURCE: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Names this node in every export from now on (`service.instance.id` = its peer id,
/// `nunet.did`); until then exports carry only `service.name`. Once per process.
pub fn describe_node(did: &str, peer_id: &str) {
    let _ = RESOURCE.set(vec![
        ("service.name".into(), "nunet-dms".into()),
        ("service.instance.id".into(), peer_id.into()),
        ("nunet.did".into(), did.into()),
    ]);
}

/// Starts exporting to the OTLP/HTTP `endpoint` (e.g. `http://127.0.0.1:4318`); returns the
/// layer to install. Once per process.
pub fn install(endpoint: &str) -> Result<TraceLayer, TraceError> {
    let url = traces_url(endpoint)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let sink = Sink {
        tx,
        dropped: Arc::default(),
    };
    SINK.set(sink.clone())
        .map_err(|_| TraceError::Endpoint("traces are already exported".into()))?;
    let dropped = sink.dropped.clone();
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || run(&url, &rx, &dropped))
        .map_err(|e| TraceError::Endpoint(format!("exporter thread: {e}")))?;
    Ok(TraceLayer { sink })
}

/// `<endpoint>/v1/traces`, after checking the endpoint is an http(s) URL.
fn traces_url(endpoint: &str) -> Result<String, TraceError> {
    let e = endpoint.trim().trim_end_matches('/');
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or_else(|| {
            TraceError::Endpoint(format!("{endpoint:?} is not an http:// or https:// URL"))
        })?;
    if rest.is_empty() || rest.starts_with('/') || rest.chars().any(char::is_whitespace) {
        return Err(TraceError::Endpoint(format!("{endpoint:?} names no host")));
    }
    Ok(if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    })
}

/// Exports the root span of deployment `id` (`start_ms`..`end_ms`): the span every node's
/// work for it hangs under. Called once, when the deployment ended; nothing when traces are
/// not exported.
pub fn emit_root(id: &str, start_ms: i64, end_ms: i64, attributes: Vec<(String, String)>) {
    let Some(sink) = SINK.get() else { return };
    let ms = |t: i64| u64::try_from(t).unwrap_or(0).saturating_mul(1_000_000);
    sink.send(SpanRecord {
        ctx: SpanContext::root_of(id),
        parent: None,
        name: "deployment".into(),
        start_ns: ms(start_ms),
        end_ns: ms(end_ms).max(ms(start_ms)),
        attributes,
    });
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Posts what is queued, waiting at most `timeout` (before the daemon exits).
pub fn flush(timeout: Duration) {
    let Some(sink) = SINK.get() else { return };
    let deadline = Instant::now() + timeout;
    let (ack, done) = std::sync::mpsc::sync_channel(1);
    // The queue may be full (a collector that does not answer): never wait past `timeout`.
    let mut msg = Msg::Flush(ack);
    loop {
        match sink.tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return,
        }
    }
    let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

fn run(url: &str, rx: &Receiver<Msg>, dropped: &AtomicU64) {
    let unnamed = vec![("service.name".to_string(), "nunet-dms".to_string())];
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut batch: Vec<SpanRecord> = Vec::new();
    let mut since = Instant::now();
    let mut failing = false;
    loop {
        let wait = EVERY.saturating_sub(since.elapsed());
        let flush = match rx.recv_timeout(wait) {
            Ok(Msg::Span(s)) => {
                batch.push(s);
                if batch.len() < BATCH {
                    continue;
                }
                None
            }
            Ok(Msg::Flush(ack)) => Some(ack),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        since = Instant::now();
        if !batch.is_empty() {
            let resource = RESOURCE.get().unwrap_or(&unnamed);
            let body = otlp_json(resource, &batch, dropped.swap(0, Ordering::Relaxed));
            let n = batch.len() as u64;
            batch.clear();
            let r = agent
                .post(url)
                .header("content-type", "application/json")
                .send(&body[..]);
            match r {
                Ok(resp) if resp.status().is_success() => {
                    failing = false;
                    EXPORTED.fetch_add(n, Ordering::Relaxed);
                }
                Ok(resp) => {
                    if !failing {
                        tracing::warn!(
                            url,
                            status = resp.status().as_u16(),
                            "OTLP endpoint refused spans"
                        );
                    }
                    failing = true;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(url, error = %e, "cannot reach the OTLP endpoint; spans are dropped until it answers");
                    }
                    failing = true;
                }
            }
        }
        if let Some(ack) = flush {
            let _ = ack.send(());
        }
    }
}

/// A JSON string (quoted, escaped) onto `out`.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a str always serialises.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `{"key": k, "value": {"stringValue": v}}` onto `out`.
fn attribute(out: &mut Vec<u8>, k: &str, v: &str) {
    out.extend_from_slice(b"{\"key\":");
    string(out, k);
    out.extend_from_slice(b",\"value\":{\"stringValue\":");
    string(out, v);
    out.extend_from_slice(b"}}");
}

fn attributes<'a>(out: &mut Vec<u8>, kv: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push(b'[');
    for (i, (k, v)) in kv.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        attribute(out, k, v);
    }
    out.push(b']');
}

/// One OTLP `ExportTraceServiceRequest` in its JSON form (ids in hex, times as decimal
/// strings), written straight into bytes: the exporter's cost grows with the spans only.
pub fn otlp_json(resource: &[(String, String)], spans: &[SpanRecord], dropped: u64) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(256 + spans.len() * 320);
    out.extend_from_slice(b"{\"resourceSpans\":[{\"resource\":{\"attributes\":");
    attributes(
        &mut out,
        resource.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if dropped > 0 {
        out.pop();
        let _ = write!(
            out,
            ",{{\"key\":\"nunet.spans_dropped\",\"value\":{{\"intValue\":\"{dropped}\"}}}}]"
        );
    }
    let _ = write!(
        out,
        "}},\"scopeSpans\":[{{\"scope\":{{\"name\":\"nunet-dms\",\"version\":\"{}\"}},\"spans\":[",
        env!("CARGO_PKG_VERSION")
    );
    for (i, s) in spans.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            "{{\"traceId\":\"{}\",\"spanId\":\"{}\",",
            hex::encode(s.ctx.trace),
            hex::encode(s.ctx.span)
        );
        if let Some(p) = s.parent {
            let _ = write!(out, "\"parentSpanId\":\"{}\",", hex::encode(p));
        }
        out.extend_from_slice(b"\"name\":");
        string(&mut out, &s.name);
        let _ = write!(
            out,
            ",\"kind\":1,\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":",
            s.start_ns,
            s.end_ns.max(s.start_ns)
        );
        attributes(
            &mut out,
            s.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        out.push(b'}');
    }
    out.extend_from_slice(b"]}]}]}");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_urls_and_get_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/v1/traces/").unwrap(),
            "https://otel.example/v1/traces"
        );
        for bad in [
            "",
            "127.0.0.1:4318",
            "ftp://x",
            "http://",
            "http:///x",
            "http://a b",
        ] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_become_otlp_json_with_hex_ids_and_parents() {
        let root = SpanContext::root_of("d1");
        let child = root.child();
        let spans = [
            SpanRecord {
                ctx: child,
                parent: Some(root.span),
                name: "commit".into(),
                start_ns: 5,
                end_ns: 9,
                attributes: vec![("round".into(), "1".into())],
            },
            SpanRecord {
                ctx: root,
                parent: None,
                name: "deployment".into(),
                start_ns: 1,
                end_ns: 0,
                attributes: vec![],
            },
        ];
        let v: serde_json::Value = serde_json::from_slice(&otlp_json(
            &[("service.name".into(), "nunet-dms\"\n".into())],
            &spans,
            3,
        ))
        .unwrap();
        let rs = &v["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "nunet-dms\"\n"
        );
        assert_eq!(
            rs["resource"]["attributes"][1]["key"],
            "nunet.spans_dropped"
        );
        let s = &rs["scopeSpans"][0]["spans"];
        assert_eq!(s[0]["traceId"], hex::encode(root.trace));
        assert_eq!(s[0]["parentSpanId"], hex::encode(root.span));
        assert_eq!(s[0]["attributes"][0]["value"]["stringValue"], "1");
        assert_eq!(s[1].get("parentSpanId"), None);
        assert_eq!(s[1]["endTimeUnixNano"], "1", "never ends before it starts");
    }
}
