//! Errors of the host plumbing ([`crate::host`], [`crate::portmap`], [`crate::plan`]'s host probe).
//!
//! Every variant that comes from an external tool names the full command line and its stderr, so
//! an operator can re-run it by hand. It must not carry secrets (none of our commands take any).

/// Failure while configuring addresses, routes, rules or firewall chains on the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The tool could not be started at all (not installed, not on `PATH`).
    #[error("cannot run `{command}`: {source} (is it installed and on PATH?)")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status as text.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// The tool's output could not be understood.
    #[error("cannot parse the output of `{command}`: {message}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong.
        message: String,
    },
    /// An argument is unusable (address outside the network, wrong interface name, …).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A network namespace could not be created or entered.
    #[error("network namespace: {0}")]
    Netns(String),
    /// Something we would create already exists for another owner (hash collision, port in use).
    #[error("conflict: {0}")]
    Conflict(String),
}
