//! The TUN device of an ensemble: created with virtio-net headers and TCP/UDP segmentation
//! offload, so one read returns a whole GSO super-packet (up to 64 KiB) and one write can
//! hand the kernel a super-packet to segment.
//!
//! It must not assign addresses or routes (the `host` module does) and must not create
//! anything but the one named device; the device disappears when the last handle drops.

use std::sync::Arc;

use crate::SubnetError;

/// An open TUN device (shared by the router and the inbound readers).
pub type Tun = Arc<tun_rs::AsyncDevice>;

/// Largest read from the device: virtio-net header plus a 64 KiB super-packet.
pub const READ_BUF: usize = crate::wire::MAX_FRAME;

/// Creates the TUN device `name` with `mtu`, offloads on, link up, no address. Must be
/// called inside a tokio runtime (the device registers with its reactor).
pub fn open(name: &str, mtu: u16) -> Result<Tun, SubnetError> {
    let err = |source| SubnetError::Tun {
        name: name.to_string(),
        source,
    };
    if name.is_empty() || name.len() > 15 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SubnetError::InvalidSpec(format!(
            "bad interface name {name:?}"
        )));
    }
    let dev = tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .offload(true)
        .enable(true)
        .build_async()
        .map_err(err)?;
    if !dev.tcp_gso() {
        return Err(err(std::io::Error::other("TUN offload not available")));
    }
    Ok(Arc::new(dev))
}
