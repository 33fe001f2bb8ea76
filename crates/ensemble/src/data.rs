//! Rules for allocation `inputs:` and `outputs:` (objects of S3-compatible stores or another
//! allocation's named output staged into an allocation, and a task's files published after
//! it completes), and the credentials
//! a deployment passes for them as secrets. These rules are what `validate` reports and
//! what a provider checks again on what it is sent; nothing here talks to a store.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::execution::Execution;
use crate::problem::{Collector, index, join};
use crate::spec::{AllocationType, Ensemble, Input, InputSource, ObjectLocation, Output};
use crate::volumes::{MAX_VM_DESTINATION, destination, valid_name, vm_destination_ok};

/// Most inputs of one allocation.
pub const MAX_INPUTS: usize = 32;
/// Most outputs of one allocation.
pub const MAX_OUTPUTS: usize = 8;
/// Most inputs of one allocation taken from other allocations' outputs (each holds a
/// transfer ticket on the node sharing it until fetched, and a node holds at most 16 per
/// peer).
pub const MAX_FROM_INPUTS: usize = 16;
/// Longest object key (S3's own limit).
pub const MAX_KEY: usize = 1024;
/// Longest endpoint URL.
pub const MAX_ENDPOINT: usize = 256;
/// Signing region when an entry names none.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Largest credentials file a deployment passes.
pub const MAX_SECRET_BYTES: usize = 8 << 10;

/// `s3://bucket/key` split into bucket and key.
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("expected s3://bucket/key, got {url:?}"))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if !valid_bucket(bucket) {
        return Err(format!(
            "bucket {bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, . and -, starting and ending with a letter or digit)"
        ));
    }
    Ok((bucket.to_string(), key.to_string()))
}

/// S3's bucket naming rules (lowercase DNS-like names, 3 to 63 characters).
pub fn valid_bucket(b: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&b.len())
        && edge(b.chars().next())
        && edge(b.chars().last())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && !b.contains("..")
}

/// `http(s)://host[:port]` and nothing else (no credentials, path, query or fragment).
pub fn check_endpoint(e: &str) -> Result<(), String> {
    let rest = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"))
        .ok_or_else(|| format!("expected http://host[:port] or https://host[:port], got {e:?}"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let plain = |e: &str| {
        format!(
            "expected http://host[:port] or https://host[:port] (no user, path or query), got {e:?}"
        )
    };
    if rest.contains(['/', '?', '#', '@']) || e.len() > MAX_ENDPOINT {
        return Err(plain(e));
    }
    let host = match rest.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || rest.starts_with('[') => {
            if !port.is_empty() && port.parse::<u16>().is_err() {
                return Err(format!("port {port:?} of {e:?} is not a port number"));
            }
            h
        }
        _ => rest,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !ok {
        return Err(plain(e));
    }
    Ok(())
}

/// The relative path an object key (after its prefix) becomes on disk: its `/`-separated
/// parts, each a plain file name. `None` for keys that would leave the directory (`..`),
/// name it (`.`), have empty parts, or are too long.
pub fn key_parts(key: &str) -> Option<Vec<&str>> {
    if key.is_empty() || key.len() > MAX_KEY || key.contains('\0') {
        return None;
    }
    let parts: Vec<&str> = key.split('/').collect();
    parts
        .iter()
        .all(|p| !p.is_empty() && *p != "." && *p != ".." && p.len() <= 255)
        .then_some(parts)
}

/// Whether `key` names a prefix (every object under it) rather than one object.
pub fn is_prefix(key: &str) -> bool {
    key.is_empty() || key.ends_with('/')
}

/// A problem of one input or output: the field under its path, and what is wrong.
pub type DataProblem = crate::volumes::VolumeProblem;

fn bad(out: &mut Vec<DataProblem>, field: &str, message: String) {
    out.push(DataProblem {
        field: field.to_string(),
        message,
    });
}

fn location_problems(out: &mut Vec<DataProblem>, l: &ObjectLocation, field: &str) {
    if !valid_bucket(&l.bucket) {
        bad(
            out,
            field,
            format!("bucket {:?} is not a bucket name", l.bucket),
        );
    }
    if l.key.len() > MAX_KEY || l.key.contains('\0') {
        bad(
            out,
            field,
            format!("object keys are at most {MAX_KEY} bytes"),
        );
    }
    if let Err(e) = check_endpoint(&l.endpoint) {
        bad(out, "endpoint", e);
    }
    if l.region.is_empty()
        || l.region.len() > 64
        || !l
            .region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bad(
            out,
            "region",
            format!("expected a region name like us-east-1, got {:?}", l.region),
        );
    }
}

fn path_problem(out: &mut Vec<DataProblem>, path: &str) {
    if destination(path).is_none() {
        bad(
            out,
            "path",
            format!("must be an absolute path other than /, got {path:?}"),
        );
    }
}

fn credentials_problem(out: &mut Vec<DataProblem>, credentials: &Option<String>) {
    if let Some(c) = credentials
        && !valid_name(c)
    {
        bad(
            out,
            "credentials",
            format!(
                "expected the name of a deployment secret ([a-zA-Z0-9][a-zA-Z0-9_.-]*), got {c:?}"
            ),
        );
    }
}

/// Every problem of input `i` on its own.
pub fn input_problems(i: &Input) -> Vec<DataProblem> {
    let mut out = Vec::new();
    match &i.source {
        InputSource::Object(o) => {
            location_problems(&mut out, o, "source");
            if !is_prefix(&o.key) && key_parts(&o.key).is_none() {
                bad(
                    &mut out,
                    "source",
                    format!("object key {:?} has empty, . or .. parts", o.key),
                );
            }
            credentials_problem(&mut out, &i.credentials);
        }
        InputSource::Output(r) => {
            if !valid_name(&r.allocation) || !valid_name(&r.output) {
                bad(
                    &mut out,
                    "from",
                    format!(
                        "expected <allocation>/<output name>, each [a-zA-Z0-9][a-zA-Z0-9_.-]*, got {:?}",
                        format!("{}/{}", r.allocation, r.output)
                    ),
                );
            }
            if i.credentials.is_some() {
                bad(
                    &mut out,
                    "credentials",
                    "an input from another allocation's output needs no credentials (its provider hands it over)".into(),
                );
            }
        }
    }
    path_problem(&mut out, &i.path);
    out
}

/// Every problem of output `o` on its own.
pub fn output_problems(o: &Output) -> Vec<DataProblem> {
    let mut out = Vec::new();
    match &o.target {
        Some(t) => location_problems(&mut out, t, "target"),
        None if o.name.is_none() => bad(
            &mut out,
            "target",
            "an output needs a target (s3://… in an object store), a name other allocations fetch it by (from: <allocation>/<name>), or both".into(),
        ),
        None if o.credentials.is_some() => bad(
            &mut out,
            "credentials",
            "credentials are for a target in an object store, and this output has none".into(),
        ),
        None => {}
    }
    if let Some(n) = &o.name
        && !valid_name(n)
    {
        bad(
            &mut out,
            "name",
            format!("expected a name ([a-zA-Z0-9][a-zA-Z0-9_.-]*), got {n:?}"),
        );
    }
    path_problem(&mut out, &o.path);
    credentials_problem(&mut out, &o.credentials);
    out
}

/// Problems of inputs of `a` that name another allocation's output in `e`: the allocation
/// exists, is another one, is a task, and has an output of that name.
fn reference_problems(c: &mut Collector, e: &Ensemble, a: &crate::spec::Allocation, ip: &str) {
    for (i, x) in a.inputs.iter().enumerate() {
        let InputSource::Output(r) = &x.source else {
            continue;
        };
        let at = join(&index(ip, i), "from");
        let Some(p) = e.allocation(&r.allocation) else {
            c.error(&at, format!("no allocation named {:?}", r.allocation));
            continue;
        };
        if p.name == a.name {
            c.error(&at, "an allocation cannot take its own output");
        } else if p.kind != AllocationType::Task {
            c.error(
                &at,
                format!(
                    "{:?} is a service; only a task completes and leaves outputs",
                    p.name
                ),
            );
        } else if !p
            .outputs
            .iter()
            .any(|o| o.name.as_deref() == Some(&r.output))
        {
            let names: Vec<&str> = p.outputs.iter().filter_map(|o| o.name.as_deref()).collect();
            c.error(
                &at,
                format!(
                    "{:?} has no output named {:?} (its named outputs: {})",
                    p.name,
                    r.output,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        }
    }
}

/// The input and output rules of every allocation of `e`: each entry's own problems, no two
/// of an allocation's inputs, outputs and volumes at one place, outputs only for tasks.
pub(crate) fn rules(c: &mut Collector, e: &Ensemble) {
    for a in &e.allocations {
        let base = join("allocations", &a.name);
        let (ip, op) = (join(&base, "inputs"), join(&base, "outputs"));
        if matches!(a.execution, Execution::Firecracker(_)) {
            // A microVM gets each as a disk mounted where its kernel command line says.
            let places = a
                .inputs
                .iter()
                .enumerate()
                .map(|(i, x)| (index(&ip, i), &x.path))
                .chain(
                    a.outputs
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (index(&op, i), &x.path)),
                );
            for (at, path) in places {
                if !vm_destination_ok(path) {
                    c.error(
                        &join(&at, "path"),
                        format!("a microVM's path travels on its kernel command line: letters, digits and / . _ - only, at most {MAX_VM_DESTINATION}"),
                    );
                }
            }
        }
        if a.inputs.len() > MAX_INPUTS {
            c.error(
                &ip,
                format!("{} inputs; at most {MAX_INPUTS}", a.inputs.len()),
            );
        }
        let from = a.producers().count();
        if from > MAX_FROM_INPUTS {
            c.error(
                &ip,
                format!("{from} inputs from other allocations' outputs; at most {MAX_FROM_INPUTS}"),
            );
        }
        if a.outputs.len() > MAX_OUTPUTS {
            c.error(
                &op,
                format!("{} outputs; at most {MAX_OUTPUTS}", a.outputs.len()),
            );
        }
        if !a.outputs.is_empty() && a.kind == AllocationType::Service {
            c.error(
                &op,
                "outputs are published when a task completes; a service does not complete (make it type: task)",
            );
        }
        reference_problems(c, e, a, &ip);
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, o) in a.outputs.iter().enumerate() {
            if let Some(n) = &o.name
                && let Some(first) = names.insert(n, i)
            {
                c.error(
                    &join(&index(&op, i), "name"),
                    format!("{n:?} is also the name of outputs[{first}]"),
                );
            }
        }
        let mut seen: HashMap<String, String> = a
            .volumes
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((destination(&v.mount_destination)?, index("volume", i))))
            .collect();
        let entries = a
            .inputs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                (
                    index(&ip, i),
                    index("inputs", i),
                    &x.path,
                    input_problems(x),
                )
            })
            .chain(a.outputs.iter().enumerate().map(|(i, x)| {
                (
                    index(&op, i),
                    index("outputs", i),
                    &x.path,
                    output_problems(x),
                )
            }));
        for (path, short, at, problems) in entries {
            if let Some(d) = destination(at)
                && let Some(other) = seen.insert(d.clone(), short)
            {
                c.error(
                    &join(&path, "path"),
                    format!("{d} is also the place of {other}"),
                );
            }
            for p in problems {
                c.error(&join(&path, &p.field), p.message);
            }
        }
    }
}

/// Secret text (a key, a password): serialised as it is, never shown by `Debug`, wiped
/// from memory when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Credentials of an S3-compatible store, as a deployment passes them (`nunet deploy
/// --secret NAME=FILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Credentials {
    /// Access key id (not secret on its own; shown in errors by stores).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token of temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Secret>,
}

impl S3Credentials {
    /// Reads a credentials file: `key = value` lines (`#` comments, blank lines and one
    /// `[default]` section header allowed) with `aws_access_key_id`, `aws_secret_access_key`
    /// and optionally `aws_session_token` (the `aws_` prefix and case are optional, so the
    /// `[default]` profile of `~/.aws/credentials` and `AWS_…=` environment files both work).
    /// Any other key is refused rather than ignored. Error messages never contain values.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_SECRET_BYTES {
            return Err(format!("larger than {MAX_SECRET_BYTES} bytes"));
        }
        let (mut id, mut secret, mut token) = (None, None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.eq_ignore_ascii_case("[default]") {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("line {}: expected key = value", n + 1));
            };
            let key = k.trim().to_ascii_lowercase();
            let key = key.strip_prefix("aws_").unwrap_or(&key);
            let v = v.trim().trim_matches('"').to_string();
            let slot = match key {
                "access_key_id" => &mut id,
                "secret_access_key" => &mut secret,
                "session_token" => &mut token,
                other => {
                    return Err(format!(
                        "line {}: unknown key {other:?} (expected aws_access_key_id, aws_secret_access_key, aws_session_token)",
                        n + 1
                    ));
                }
            };
            if v.is_empty() || slot.replace(v).is_some() {
                return Err(format!("line {}: {key} is empty or given twice", n + 1));
            }
        }
        let id = id.ok_or("no aws_access_key_id")?;
        let secret = secret.ok_or("no aws_secret_access_key")?;
        Ok(Self {
            access_key_id: id,
            secret_access_key: Secret(secret),
            session_token: token.map(Secret),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_buckets_endpoints_and_keys() {
        assert_eq!(
            parse_s3_url("s3://my-bucket/a/b.csv").unwrap(),
            ("my-bucket".to_string(), "a/b.csv".to_string())
        );
        assert_eq!(parse_s3_url("s3://data.x").unwrap().1, "");
        for bad in [
            "http://b/k",
            "s3://B/k",
            "s3://ab/k",
            "s3://-ab/k",
            "s3://a..b/k",
        ] {
            assert!(parse_s3_url(bad).is_err(), "{bad}");
        }
        for good in [
            "http://127.0.0.1:3900",
            "https://s3.example.com",
            "http://[::1]:9000/",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://x",
            "http://user:pw@host",
            "http://host/path",
            "http://host?q",
            "http://",
            "http://host:99999",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(key_parts("a/b/c.txt"), Some(vec!["a", "b", "c.txt"]));
        for bad in ["", "a//b", "../x", "a/./b", "a/", "/a"] {
            assert_eq!(key_parts(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn credentials_files_parse_and_never_show_the_secret() {
        let c = S3Credentials::parse(
            "[default]\n# mine\naws_access_key_id = GK123\nAWS_SECRET_ACCESS_KEY=\"s3cr3t\"\n",
        )
        .unwrap();
        assert_eq!(c.access_key_id, "GK123");
        assert_eq!(c.secret_access_key.expose(), "s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        for (bad, why) in [
            ("aws_access_key_id=ID-VALUE-1\n", "no aws_secret_access_key"),
            (
                "access_key_id=ID-VALUE-1\nsecret_access_key=SECRET-VALUE-2\nregion=REGION-VALUE-3\n",
                "unknown key",
            ),
            (
                "access_key_id=ID-VALUE-1\naccess_key_id=ID-VALUE-4\nsecret_access_key=SECRET-VALUE-2",
                "given twice",
            ),
            ("[prod]\naccess_key_id=ID-VALUE-1\n", "expected key = value"),
        ] {
            let e = S3Credentials::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(!e.contains("-VALUE-"), "a value is in the error: {e}");
        }
    }
}
