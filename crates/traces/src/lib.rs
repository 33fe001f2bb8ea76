//! Distributed traces of deployments: one trace per deployment across every node that takes
//! part, exported over OTLP/HTTP (JSON) when `observability.tracing.endpoint` names a
//! collector.
//!
//! Spans are the node's `tracing` spans ([`layer`]): the orchestrator's phases (bid round,
//! placement, commit, allocate, subnet, start, heal) and, on every node, the handling of an
//! actor message that carried a trace context in its envelope (`opt.trace`, W3C
//! `traceparent`). The deployment's root span has ids that every node derives from the
//! deployment id, so spans of a node that learned of the deployment without a context still
//! land in its trace.
//!
//! When no endpoint is configured the layer is not installed: spans cost what they cost
//! for logging, and envelopes carry no context.
//!
//! This crate must not decide what the node logs, block a caller on the collector (spans
//! are queued and dropped when the queue is full), or export spans outside a deployment.

pub mod collector;
pub mod context;
pub mod export;
pub mod layer;

pub use context::SpanContext;
pub use export::{describe_node, emit_root, enabled, exported, flush, install};
pub use layer::{SpanRecord, TraceLayer, current_traceparent};

/// Traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The endpoint or the exporter.
    #[error("observability.tracing.endpoint: {0}")]
    Endpoint(String),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn spans_of_a_deployment_form_one_trace_parented_across_a_message() {
        let (sink, take) = export::test_sink();
        let sub = tracing_subscriber::registry().with(TraceLayer { sink }.filtered());
        let mut sent = None;
        tracing::subscriber::with_default(sub, || {
            // Outside any deployment: not traced, and nothing to send along.
            let idle = tracing::info_span!(target: "nunet_node", "startup");
            idle.in_scope(|| assert_eq!(current_traceparent(), None));
            // The orchestrator's stand-in for the deployment, a phase, a message sent from it.
            let dep =
                tracing::info_span!(target: "nunet_orchestrator", "deployment", trace_root = "d1");
            dep.in_scope(|| {
                // A stand-in alone sends no context (background loops stay out of the trace).
                assert_eq!(current_traceparent(), None);
                let commit = tracing::info_span!(target: "nunet_orchestrator", "commit", round = 1);
                commit.in_scope(|| sent = current_traceparent());
            });
            // The provider handles the message, and opens its own stand-in inside.
            let tp = sent.clone().unwrap();
            let handle = tracing::debug_span!(target: "nunet_actor", "handle", otel.name = "/dms/deployment/commit", traceparent = %tp);
            handle.in_scope(|| {
                let stand_in =
                    tracing::info_span!(target: "nunet_provider", "deployment", trace_root = "d1");
                stand_in.in_scope(|| {
                    let inner = tracing::info_span!(target: "nunet_provider", "reserve");
                    inner.in_scope(|| {});
                });
            });
            // Debug spans and other crates' spans are not traced.
            dep.in_scope(|| {
                let quiet = tracing::debug_span!(target: "nunet_orchestrator", "detail");
                quiet.in_scope(|| {});
                let lib = tracing::info_span!(target: "libp2p_swarm", "conn");
                lib.in_scope(|| {});
            });
        });
        let spans = take();
        let by = |n: &str| {
            spans
                .iter()
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("{n}: {spans:?}"))
        };
        assert_eq!(spans.len(), 3, "{spans:?}");
        let root = SpanContext::root_of("d1");
        let commit = by("commit");
        let handle = by("/dms/deployment/commit");
        let reserve = by("reserve");
        for s in [commit, handle, reserve] {
            assert_eq!(s.ctx.trace, root.trace, "one trace: {}", s.name);
        }
        assert_eq!(commit.parent, Some(root.span));
        assert_eq!(
            commit.attributes,
            vec![("round".to_string(), "1".to_string())]
        );
        assert_eq!(sent.unwrap(), commit.ctx.traceparent());
        assert_eq!(handle.parent, Some(commit.ctx.span), "the remote parent");
        assert_eq!(
            reserve.parent,
            Some(handle.ctx.span),
            "the stand-in is transparent"
        );
        assert!(reserve.end_ns >= reserve.start_ns);
    }
}
