//! Decoding of allocation volumes (`volume:` as a list or a single mapping).

use super::reader::{obj, opt_bool, opt_list, opt_string, req_string};
use crate::problem::Collector;
use crate::spec::{Volume, VolumeSource};
use crate::tree::Value;

pub(crate) fn volume_list(c: &mut Collector, v: &Value, path: &str) -> Vec<Volume> {
    super::data::list(c, v, path, volume)
}

fn volume(c: &mut Collector, v: &Value, path: &str) -> Option<Volume> {
    let known = [
        "type",
        "mount_destination",
        "read_only",
        "src",
        "servers",
        "name",
        "client_private_key",
        "client_pem",
        "client_ca",
        "encrypted",
    ];
    let o = obj(c, v, path, &known, false)?;
    let mount_destination = req_string(c, &o, "mount_destination", "mount_destination");
    let read_only = opt_bool(c, &o, "read_only").unwrap_or(false);
    let encrypted = opt_bool(c, &o, "encrypted").unwrap_or(false);
    let source = match req_string(c, &o, "type", "the volume type (local or glusterfs)")?.as_str() {
        "local" => {
            let src = req_string(
                c,
                &o,
                "src",
                "a local volume's src (absolute path or volume name)",
            )?;
            VolumeSource::Local { src }
        }
        "glusterfs" => VolumeSource::Glusterfs {
            servers: opt_list(c, &o, "servers"),
            name: req_string(c, &o, "name", "the glusterfs volume name")?,
            client_private_key: opt_string(c, &o, "client_private_key"),
            client_pem: opt_string(c, &o, "client_pem"),
            client_ca: opt_string(c, &o, "client_ca"),
        },
        other => {
            c.error(
                &o.path_of("type"),
                format!("expected local or glusterfs, got {other:?}"),
            );
            return None;
        }
    };
    Some(Volume {
        mount_destination: mount_destination?,
        read_only,
        encrypted,
        source,
    })
}
