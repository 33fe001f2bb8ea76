//! Decoding of allocation `inputs:` and `outputs:` (lists of mappings; this implementation's
//! extension).

use super::reader::{obj, opt_string, req_string};
use crate::data::{DEFAULT_REGION, parse_s3_url};
use crate::problem::{Collector, index, join};
use crate::spec::{Input, ObjectLocation, Output};
use crate::tree::{Kind, Value};

/// The entries of a list, each decoded by `one` (a single mapping is a list of one).
pub(crate) fn list<T>(
    c: &mut Collector,
    v: &Value,
    path: &str,
    one: impl Fn(&mut Collector, &Value, &str) -> Option<T>,
) -> Vec<T> {
    match &v.kind {
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| one(c, it, &index(path, i)))
            .collect(),
        Kind::Map(_) => one(c, v, path).into_iter().collect(),
        _ => {
            c.error_at(
                path,
                v.line,
                format!("expected a mapping or a list of them, got {}", v.describe()),
            );
            Vec::new()
        }
    }
}

pub(crate) fn inputs(c: &mut Collector, v: &Value, path: &str) -> Vec<Input> {
    list(c, v, path, |c, v, p| {
        let (source, path, credentials) = transfer(c, v, p, "source")?;
        Some(Input {
            source,
            path,
            credentials,
        })
    })
}

pub(crate) fn outputs(c: &mut Collector, v: &Value, path: &str) -> Vec<Output> {
    list(c, v, path, |c, v, p| {
        let (target, path, credentials) = transfer(c, v, p, "target")?;
        Some(Output {
            path,
            target,
            credentials,
        })
    })
}

/// One input or output entry: its object location (under `key`: `source` or `target`),
/// the directory inside the allocation, and the name of its credentials.
fn transfer(
    c: &mut Collector,
    v: &Value,
    p: &str,
    key: &str,
) -> Option<(ObjectLocation, String, Option<String>)> {
    let o = obj(
        c,
        v,
        p,
        &[key, "endpoint", "region", "credentials", "path"],
        false,
    )?;
    let location = location(c, &o, key, p);
    let path = req_string(c, &o, "path", "the directory inside the allocation");
    Some((location?, path?, opt_string(c, &o, "credentials")))
}

/// `key` (an `s3://` URL) with the entry's `endpoint` and `region`.
fn location(
    c: &mut Collector,
    o: &super::reader::Obj<'_>,
    key: &str,
    path: &str,
) -> Option<ObjectLocation> {
    let url = req_string(c, o, key, "an s3://bucket/key URL");
    let endpoint = req_string(
        c,
        o,
        "endpoint",
        "the store's endpoint (http(s)://host[:port], e.g. https://s3.us-east-1.amazonaws.com)",
    );
    let region = opt_string(c, o, "region").unwrap_or_else(|| DEFAULT_REGION.to_string());
    let (bucket, object) = match parse_s3_url(&url?) {
        Ok(b) => b,
        Err(e) => {
            c.error(&join(path, key), e);
            return None;
        }
    };
    Some(ObjectLocation {
        endpoint: endpoint?,
        region,
        bucket,
        key: object,
    })
}
