//! The `tracing` layer that turns the node's spans into trace spans.
//!
//! Only work of a deployment is traced. A span joins a trace in one of three ways:
//! - it carries `traceparent` (a W3C trace context from another node's actor envelope): a
//!   child of that remote span;
//! - it carries `trace_root = <deployment id>` (the `deployment` and `allocation` spans that
//!   every node opens around its work for a deployment): a stand-in, not exported itself, for
//!   its parent when that is in the same trace, else for the deployment's root span, whose
//!   ids every node derives from the deployment id ([`SpanContext::root_of`]);
//! - it opens inside a traced span: its child.
//!
//! Everything else (start-up, peer chatter) is left out. The span's fields become its
//! attributes; `otel.name`, when given, is its exported name.

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::context::SpanContext;
use crate::export::Sink;

/// A finished span, ready to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// Its trace and id.
    pub ctx: SpanContext,
    /// Its parent's id (in the same trace), if any.
    pub parent: Option<[u8; 8]>,
    /// Its name.
    pub name: String,
    /// Start, Unix ns.
    pub start_ns: u64,
    /// End, Unix ns.
    pub end_ns: u64,
    /// Its fields, as text.
    pub attributes: Vec<(String, String)>,
}

/// What the layer keeps in a traced span's extensions.
struct Traced {
    ctx: SpanContext,
    parent: Option<[u8; 8]>,
    /// A stand-in (`trace_root`) is not exported.
    export: bool,
    name: String,
    start_ns: u64,
    attributes: Vec<(String, String)>,
}

/// Unix time in ns.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Default)]
struct Fields {
    traceparent: Option<String>,
    root: Option<String>,
    name: Option<String>,
    rest: Vec<(String, String)>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field.name(), format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, name: &str, value: String) {
        match name {
            "traceparent" => self.traceparent = Some(value),
            "trace_root" => self.root = Some(value),
            "otel.name" => self.name = Some(value),
            _ => self.rest.push((name.to_string(), value)),
        }
    }
}

/// Turns spans into trace spans and hands the finished ones to the exporter.
pub struct TraceLayer {
    pub(crate) sink: Sink,
}

impl TraceLayer {
    /// The layer with its filter: spans of this node's crates at `info` and above, and the
    /// actor layer's `handle` span (at `debug`, so that logs at `info` do not format it),
    /// whatever the log level. The filter looks at a call site once (its answer is cached), so events
    /// and other spans cost nothing more.
    pub fn filtered(self) -> impl Layer<tracing_subscriber::Registry> + Send + Sync + 'static {
        let only = tracing_subscriber::filter::filter_fn(|m| {
            m.is_span()
                && m.target().starts_with("nunet")
                && (*m.level() <= Level::INFO || m.name() == "handle")
        })
        .with_max_level_hint(Level::DEBUG);
        self.with_filter(only)
    }
}

impl<S> Layer<S> for TraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut f = Fields::default();
        attrs.record(&mut f);
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Traced>().map(|t| t.ctx));
        let (ctx_, parent_id, export) =
            if let Some(remote) = f.traceparent.as_deref().and_then(SpanContext::parse) {
                (remote.child(), Some(remote.span), true)
            } else if let Some(root) = f.root.as_deref() {
                let r = SpanContext::root_of(root);
                match parent {
                    Some(p) if p.trace == r.trace => (p, None, false),
                    _ => (r, None, false),
                }
            } else if let Some(p) = parent {
                (p.child(), Some(p.span), true)
            } else {
                return;
            };
        let name = f
            .name
            .take()
            .unwrap_or_else(|| attrs.metadata().name().to_string());
        span.extensions_mut().insert(Traced {
            ctx: ctx_,
            parent: parent_id,
            export,
            name,
            start_ns: now_ns(),
            attributes: f.rest,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(t) = ext.get_mut::<Traced>() else {
            return;
        };
        let mut f = Fields::default();
        values.record(&mut f);
        t.attributes.extend(f.rest);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(t) = span.extensions_mut().remove::<Traced>() else {
            return;
        };
        if !t.export {
            return;
        }
        self.sink.send(SpanRecord {
            ctx: t.ctx,
            parent: t.parent,
            name: t.name,
            start_ns: t.start_ns,
            end_ns: now_ns(),
            attributes: t.attributes,
        });
    }
}

/// The trace context of the current span, for an outgoing message; `None` outside a trace
/// (and always when no trace layer is installed).
pub fn current_traceparent() -> Option<String> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let span = registry.span(id)?;
            let ext = span.extensions();
            // Only from inside an exported span: a stand-in alone (a deployment's background
            // loops: heartbeats, status polls, the watcher's reports) sends no context, so
            // a long-running deployment's trace holds its phases, not its chatter.
            ext.get::<Traced>()
                .filter(|t| t.export)
                .map(|t| t.ctx.traceparent())
        })
        .flatten()
}
