//! Where outgoing envelopes get their trace context (`opt.trace`): a function the daemon
//! installs when it records traces. Without one, envelopes carry none and nothing is looked
//! up.

use std::sync::OnceLock;

static SOURCE: OnceLock<fn() -> Option<String>> = OnceLock::new();

/// Installs `f` as the source of the current trace context (once per process).
pub fn set_source(f: fn() -> Option<String>) {
    let _ = SOURCE.set(f);
}

/// The current trace context, or empty.
pub(crate) fn current() -> String {
    SOURCE.get().and_then(|f| f()).unwrap_or_default()
}

/// Whether this node records traces (a source is installed).
pub(crate) fn recording() -> bool {
    SOURCE.get().is_some()
}
