//! The error type of the subnet crate.
//!
//! Kept in its own file so that every module of the crate can add the variants it needs
//! without touching the others. It must not carry secrets or packet contents.

/// Everything that can go wrong while setting up or changing an ensemble subnet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubnetError {
    /// The inbound protocol could not be registered (already registered on this host).
    #[error("cannot register the subnet protocol: {0}")]
    Register(String),
    /// Creating or configuring the TUN device failed.
    #[error("TUN device {name}: {source}")]
    Tun {
        /// Interface name.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The ensemble is not joined on this node.
    #[error("ensemble {0} is not joined")]
    UnknownEnsemble(String),
    /// A join for an already joined ensemble that differs in TUN name or network.
    #[error("ensemble {0} is already joined with a different TUN device or network")]
    Conflict(String),
    /// The specification is invalid (bad name, MTU, or a route outside the network).
    #[error("invalid subnet specification: {0}")]
    InvalidSpec(String),
    /// The UDP socket of the datagram path could not be set up.
    #[error("subnet datagram socket on UDP port {port}: {source}")]
    Datagram {
        /// The port asked for (0: any).
        port: u16,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
