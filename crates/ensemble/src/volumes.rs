//! Rules for allocation volumes that a provider of this implementation relies on: names
//! safe as a path component and a command argument, one volume per `mount_destination`,
//! named volumes sized by the allocation's disk, encryption at rest for named volumes only,
//! and GlusterFS TLS material as PEM text, all three parts or none. A microVM gets named,
//! unencrypted volumes only, as block devices no other allocation shares ([`vm_problem`]).

use std::collections::HashMap;
use std::path::{Component, Path};

use crate::execution::Execution;
use crate::problem::{Collector, index, join};
use crate::spec::{Ensemble, Volume, VolumeSource};

/// Smallest named volume: its size is the allocation's `resources.disk`, and an ext4
/// filesystem needs some room for itself.
pub const MIN_NAMED_VOLUME_BYTES: u64 = 8 << 20;
/// Longest volume name, GlusterFS volume name or GlusterFS server name.
pub const MAX_NAME: usize = 128;
/// Most volumes of one allocation.
pub const MAX_VOLUMES: usize = 32;
/// Most servers of one GlusterFS volume.
pub const MAX_SERVERS: usize = 8;

/// `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most [`MAX_NAME`]: a named volume, a GlusterFS volume or
/// server (host name or IPv4 address).
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_NAME
        && chars.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && chars.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
}

/// Whether `v` is a named volume (`local` with a name rather than a host path).
pub fn is_named(v: &Volume) -> bool {
    matches!(&v.source, VolumeSource::Local { src } if !src.starts_with('/'))
}

/// The size of each named volume an allocation with these volumes and `disk` bytes of disk
/// makes: its disk shared evenly among them (so they never hold more than was committed).
pub fn named_volume_size(volumes: &[Volume], disk: u64) -> u64 {
    let n = volumes.iter().filter(|v| is_named(v)).count().max(1) as u64;
    disk / n
}

/// `mount_destination` with `.` and `..` folded away; `None` unless it is absolute and
/// names something below `/`.
pub fn destination(d: &str) -> Option<String> {
    if !d.starts_with('/') || d.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(d).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| format!("/{}", parts.join("/")))
}

/// A problem of one volume: the field under the volume's path, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeProblem {
    /// `mount_destination`, `src`, `servers[1]`, …
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every problem of volume `v` on its own, for an allocation whose named volumes each get
/// `named_size` bytes ([`named_volume_size`]): what `validate` reports, and what a provider
/// checks again on the volumes it is sent before it mounts anything.
pub fn problems(v: &Volume, named_size: u64) -> Vec<VolumeProblem> {
    let mut out = Vec::new();
    let mut bad = |field: &str, message: String| {
        out.push(VolumeProblem {
            field: field.to_string(),
            message,
        })
    };
    if destination(&v.mount_destination).is_none() {
        bad(
            "mount_destination",
            format!(
                "must be an absolute path other than /, got {:?}",
                v.mount_destination
            ),
        );
    }
    if v.encrypted && !is_named(v) {
        bad(
            "encrypted",
            "only named local volumes are encrypted at rest (a host directory or a GlusterFS volume is stored as it is)".into(),
        );
    }
    match &v.source {
        VolumeSource::Local { src } if src.starts_with('/') => {}
        VolumeSource::Local { src } => {
            if !valid_name(src) {
                bad(
                    "src",
                    format!(
                        "expected an absolute path or a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most {MAX_NAME}), got {src:?}"
                    ),
                );
            }
            if named_size < MIN_NAMED_VOLUME_BYTES {
                bad(
                    "src",
                    format!(
                        "named volume {src:?} gets {named_size} bytes (the allocation's resources.disk shared among its named volumes); each needs at least {} MiB",
                        MIN_NAMED_VOLUME_BYTES >> 20
                    ),
                );
            }
        }
        VolumeSource::Glusterfs {
            servers,
            name,
            client_private_key,
            client_pem,
            client_ca,
        } => {
            if !valid_name(name) {
                bad(
                    "name",
                    format!(
                        "expected a GlusterFS volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*), got {name:?}"
                    ),
                );
            }
            if servers.len() > MAX_SERVERS {
                bad(
                    "servers",
                    format!("{} servers; at most {MAX_SERVERS}", servers.len()),
                );
            }
            if servers.is_empty() {
                bad(
                    "servers",
                    "a glusterfs volume needs at least one server".into(),
                );
            }
            for (k, s) in servers.iter().enumerate() {
                if !valid_name(s) {
                    bad(
                        &index("servers", k),
                        format!("expected a host name or IPv4 address, got {s:?}"),
                    );
                }
            }
            let tls = [
                ("client_private_key", client_private_key, "PRIVATE KEY"),
                ("client_pem", client_pem, "CERTIFICATE"),
                ("client_ca", client_ca, "CERTIFICATE"),
            ];
            let given = tls.iter().filter(|(_, v, _)| v.is_some()).count();
            for (key, value, label) in tls {
                match value {
                    None if given > 0 => bad(
                        key,
                        "missing: client_private_key, client_pem and client_ca go together (a TLS volume needs all three)".into(),
                    ),
                    Some(v) if !is_pem(v, label) => bad(
                        key,
                        format!("expected PEM text (-----BEGIN …{label}-----), not a path or other data: the provider writes it to a file itself"),
                    ),
                    Some(v) if v.len() > MAX_TLS_PEM => {
                        bad(key, format!("{} bytes; at most {MAX_TLS_PEM}", v.len()))
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// Why volume `v` cannot be attached to a microVM, and its field: a microVM gets named,
/// unencrypted `local` volumes, as virtio block devices holding an ext4 filesystem
/// (`nunet.volume=<serial>:<mount_destination>:<rw|ro>` on its kernel command line tells the
/// guest's init where to mount each). A host directory, a GlusterFS mount or a gocryptfs view
/// cannot be passed into a VM by this implementation's providers (no 9p or virtio-fs).
pub fn vm_problem(v: &Volume) -> Option<(&'static str, String)> {
    match &v.source {
        VolumeSource::Local { src } if src.starts_with('/') => Some((
            "src",
            "a microVM gets named volumes only (attached as block devices); a host directory cannot be passed into a VM".into(),
        )),
        VolumeSource::Glusterfs { .. } => Some((
            "type",
            "a microVM gets named local volumes only (attached as block devices); mount GlusterFS from inside the VM instead".into(),
        )),
        VolumeSource::Local { .. } if v.encrypted => Some((
            "encrypted",
            "encrypted volumes are gocryptfs views on the provider and cannot be attached to a microVM".into(),
        )),
        VolumeSource::Local { .. } if !vm_destination_ok(&v.mount_destination) => {
            Some((
                "mount_destination",
                format!("a microVM's mount_destination travels on its kernel command line: letters, digits and / . _ - only, at most {MAX_VM_DESTINATION}"),
            ))
        }
        VolumeSource::Local { .. } => None,
    }
}

/// Longest `mount_destination` of a microVM's volume (it goes on the kernel command line).
pub const MAX_VM_DESTINATION: usize = 128;

/// Whether `d` can go on a microVM's kernel command line as a place to mount a disk at:
/// letters, digits and `/ . _ -`, at most [`MAX_VM_DESTINATION`] bytes.
pub fn vm_destination_ok(d: &str) -> bool {
    d.len() <= MAX_VM_DESTINATION
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
}

/// Largest PEM text of one GlusterFS TLS field.
pub const MAX_TLS_PEM: usize = 64 << 10;

/// Whether `v` holds a PEM block whose label ends in `label` (`RSA PRIVATE KEY` is a
/// `PRIVATE KEY`).
fn is_pem(v: &str, label: &str) -> bool {
    let v = v.trim();
    v.starts_with("-----BEGIN ")
        && v.lines()
            .next()
            .is_some_and(|l| l.trim_end().ends_with(&format!("{label}-----")))
        && v.contains("-----END ")
}

/// The volume rules of every allocation of `e`.
pub(crate) fn rules(c: &mut Collector, e: &Ensemble) {
    for a in &e.allocations {
        let p = join(&join("allocations", &a.name), "volume");
        if matches!(a.execution, Execution::Firecracker(_)) {
            for (i, v) in a.volumes.iter().enumerate() {
                if let Some((field, why)) = vm_problem(v) {
                    c.error(&join(&index(&p, i), field), why);
                }
                if let VolumeSource::Local { src } = &v.source
                    && let Some(j) = a.volumes[..i].iter().position(
                        |w| matches!(&w.source, VolumeSource::Local { src: s } if s == src),
                    )
                {
                    c.error(
                        &join(&index(&p, i), "src"),
                        format!("named volume {src:?} is already attached as volume[{j}]: one disk image cannot be attached twice"),
                    );
                }
                // A block device is not shared: one writer's filesystem cache would
                // corrupt it under another.
                if let VolumeSource::Local { src } = &v.source
                    && let Some(other) = e.allocations.iter().find(|o| {
                        o.name != a.name
                            && o.volumes.iter().any(
                                |w| matches!(&w.source, VolumeSource::Local { src: s } if s == src),
                            )
                    })
                {
                    c.error(
                        &join(&index(&p, i), "src"),
                        format!(
                            "named volume {src:?} is attached to this microVM as a block device, which cannot be shared; allocation {:?} names it too",
                            other.name
                        ),
                    );
                }
            }
        }
        if a.volumes.len() > MAX_VOLUMES {
            c.error(
                &p,
                format!(
                    "{} volumes; an allocation may have at most {MAX_VOLUMES}",
                    a.volumes.len()
                ),
            );
        }
        let named_size = named_volume_size(&a.volumes, a.resources.disk.size);
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, v) in a.volumes.iter().enumerate() {
            let vp = index(&p, i);
            if let Some(d) = destination(&v.mount_destination)
                && let Some(j) = seen.insert(d.clone(), i)
            {
                c.error(
                    &join(&vp, "mount_destination"),
                    format!("{d} is also the mount_destination of volume[{j}]"),
                );
            }
            for problem in problems(v, named_size) {
                c.error(&join(&vp, &problem.field), problem.message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_destinations() {
        assert!(valid_name("data-1.v2"));
        for bad in [
            "",
            "-o",
            ".x",
            "a/b",
            "a b",
            "..",
            &"a".repeat(MAX_NAME + 1),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(destination("/data/../srv/").as_deref(), Some("/srv"));
        assert_eq!(destination("/a/./b").as_deref(), Some("/a/b"));
        for bad in ["/", "/..", "data", "/a/../..", ""] {
            assert_eq!(destination(bad), None, "{bad:?}");
        }
    }
}
