//! Trace and span ids, W3C `traceparent` text, and the ids of a deployment's root span,
//! which every node computes from the deployment id alone.

use sha2::Digest as _;

/// Where a span sits: its trace and its own id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// 16 bytes, never all zero.
    pub trace: [u8; 16],
    /// 8 bytes, never all zero.
    pub span: [u8; 8],
}

impl SpanContext {
    /// The W3C trace context form, `00-<trace>-<span>-01` (sampled).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-01",
            hex::encode(self.trace),
            hex::encode(self.span)
        )
    }

    /// Reads a W3C `traceparent` (version 00); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (v, t, p, f) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || v != "00" || f.len() != 2 {
            return None;
        }
        let mut trace = [0u8; 16];
        let mut span = [0u8; 8];
        hex::decode_to_slice(t, &mut trace).ok()?;
        hex::decode_to_slice(p, &mut span).ok()?;
        hex::decode(f).ok()?;
        (trace != [0; 16] && span != [0; 8]).then_some(Self { trace, span })
    }

    /// The root of deployment `id`'s trace: the same on every node.
    pub fn root_of(id: &str) -> Self {
        let h = sha2::Sha256::new()
            .chain_update(b"nunet-deployment-trace\0")
            .chain_update(id.as_bytes())
            .finalize();
        let mut trace = [0u8; 16];
        let mut span = [0u8; 8];
        trace.copy_from_slice(&h[..16]);
        span.copy_from_slice(&h[16..24]);
        // A zero id is invalid; a hash is practically never that, but stay valid anyway.
        trace[15] |= u8::from(trace == [0; 16]);
        span[7] |= u8::from(span == [0; 8]);
        Self { trace, span }
    }

    /// A new span of this trace.
    pub fn child(&self) -> Self {
        Self {
            trace: self.trace,
            span: new_span_id(),
        }
    }
}

/// A random, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let s: [u8; 8] = rand::random();
        if s != [0; 8] {
            return s;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_refused() {
        let c = SpanContext::root_of("ens-1");
        assert_eq!(SpanContext::parse(&c.traceparent()), Some(c));
        assert_eq!(SpanContext::root_of("ens-1"), c, "the same on every node");
        assert_ne!(SpanContext::root_of("ens-2").trace, c.trace);
        let child = c.child();
        assert_eq!(child.trace, c.trace);
        assert_ne!(child.span, c.span);
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad}");
        }
        let w3c =
            SpanContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(hex::encode(w3c.span), "b7ad6b7169203331");
    }
}
