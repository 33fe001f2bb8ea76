//! The TUN device of an ensemble: created with virtio-net headers and TCP/UDP segmentation
//! offload, so one read returns a whole GSO super-packet (up to 64 KiB) and one write can
//! hand the kernel a super-packet to segment.
//!
//! The device is non-blocking. One thread per ensemble waits for it to become readable
//! (interruptible by the ensemble's stop event) and drains it; writers (inbound streams and
//! the datagram receiver) write to it directly: a TUN write hands the packet to the kernel
//! and does not wait.
//!
//! It must not assign addresses or routes (the `host` module does) and must not create
//! anything but the one named device; the device disappears when the last handle drops.

use std::sync::Arc;

use crate::SubnetError;

/// An open TUN device (shared by the outbound thread and the inbound writers).
pub type Tun = Arc<tun_rs::SyncDevice>;

/// Largest read from the device: virtio-net header plus a 64 KiB super-packet.
pub const READ_BUF: usize = crate::wire::MAX_FRAME;

/// Creates the TUN device `name` with `mtu`, offloads on, link up, no address, in
/// non-blocking mode.
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
        .build_sync()
        .map_err(err)?;
    if !dev.tcp_gso() {
        return Err(err(std::io::Error::other("TUN offload not available")));
    }
    dev.set_nonblocking(true).map_err(err)?;
    Ok(Arc::new(dev))
}

/// Writes one payload (virtio-net header + packet) to the device.
pub(crate) fn write(dev: &Tun, payload: &[u8]) -> std::io::Result<usize> {
    dev.send(payload)
}
