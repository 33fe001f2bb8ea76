//! The ensemble subnet: IPv4 between the allocations of one ensemble, carried over libp2p.
//!
//! Every ensemble gets a /24 inside 10.0.0.0/8 ([`plan`]). On each node that hosts
//! allocations of the ensemble, one TUN device carries the ensemble's packets ([`tun`]); a
//! router thread reads packets from it and sends each to the node that hosts the destination
//! address: as an encrypted UDP datagram where that peer's datagram path is confirmed
//! (`datagram`), else framed in batches ([`wire`]) over one long-lived libp2p stream per peer
//! and ensemble (`carrier`), which is also the datagram path's control channel. Containers are attached with a veth pair into their network namespace
//! and isolated per ensemble by policy routing and firewall rules ([`host`]); each ensemble
//! has a `.internal` DNS responder on its gateway address ([`dns`]); public ports are
//! forwarded to allocation addresses ([`portmap`]). Everything this crate creates on the host
//! carries the `nn` name prefix / `NUNET` chain names so that [`host::cleanup_stale`] can
//! remove what a crashed daemon left behind.
//!
//! What it must not do: decide who belongs to an ensemble (the orchestrator does, and hands
//! the member list over in a capability-checked actor message), start workloads (executors
//! do), or touch interfaces, routes and rules it did not create.

pub mod dns;
pub use dns::{DnsError, DnsResponder, DnsStats, Records, resolv_conf};

mod error;
pub use error::SubnetError;
mod carrier;
mod datagram;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub use datagram::{DEFAULT_BUSY_POLL, DatagramConfig};
mod router;
mod service;
mod stats;
pub mod tun;
pub mod wire;
pub use service::{SubnetService, SubnetSpec};
pub use stats::SubnetStats;

pub mod host;
pub mod plan;
pub mod portmap;
pub use host::{
    Attachment, CleanupReport, EnsembleNet, Host, HostError, NetnsHolder, cleanup_stale,
    guest_ip_arg,
};
pub use portmap::{PortMap, PortMapping, Proto};
