//! A storage node's GlusterFS volumes, as NuNet's behaviours name and shape them
//! (`/dms/volume/{create,start,delete}`; NuNet's `dms/node/behaviors_volume.go`): a deployer
//! asks a node in storage mode for a volume only its TLS client certificate may mount.

use serde::{Deserialize, Serialize};

/// Payload of [`crate::names::VOLUME_CREATE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeCreate {
    /// The GlusterFS volume name (letters, digits, `-` and `_`, at most 64).
    pub name: String,
    /// The client's X.509 certificate (PEM): the only one the volume accepts.
    pub client_pem: String,
    /// Its size in bytes (this implementation's addition; none: the storage node's
    /// `general.storage_volume_size_mb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Reply of [`crate::names::VOLUME_CREATE`] (NuNet's `VolumeCreateResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeCreated {
    /// Always `true` in a reply (a failure is an error reply).
    #[serde(rename = "OK")]
    pub ok: bool,
    /// The storage node's certificate (PEM), for the client's CA list (`client_ca`).
    pub ca_data: String,
    /// Empty in a reply (NuNet's field).
    #[serde(default)]
    pub error: String,
}

/// Payload of [`crate::names::VOLUME_START`] and [`crate::names::VOLUME_DELETE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRef {
    /// The volume name.
    pub name: String,
}

/// Reply of [`crate::names::VOLUME_START`] and [`crate::names::VOLUME_DELETE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeDone {
    /// Always `true` in a reply (a failure is an error reply).
    #[serde(rename = "OK")]
    pub ok: bool,
    /// Empty in a reply (NuNet's field).
    #[serde(default)]
    pub error: String,
}

impl VolumeDone {
    /// A success.
    pub fn ok() -> Self {
        Self {
            ok: true,
            error: String::new(),
        }
    }
}
