//! Decoding of allocation `inputs:` and `outputs:` (lists of mappings; this implementation's
//! extension).

use super::reader::{obj, opt_string, req_string};
use crate::data::{DEFAULT_REGION, parse_s3_url};
use crate::problem::{Collector, index, join};
use crate::spec::{Input, InputSource, ObjectLocation, Output, OutputRef};
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
        let o = obj(
            c,
            v,
            p,
            &[
                "source",
                "from",
                "endpoint",
                "region",
                "credentials",
                "path",
            ],
            false,
        )?;
        let dir = req_string(c, &o, "path", "the directory inside the allocation");
        let credentials = opt_string(c, &o, "credentials");
        let source = match (o.has("source"), o.has("from")) {
            (true, true) => {
                c.error(
                    &join(p, "from"),
                    "give either source (an object store) or from (another allocation's output), not both",
                );
                return None;
            }
            (false, true) => {
                for key in ["endpoint", "region"] {
                    if o.has(key) {
                        c.error(
                            &join(p, key),
                            "belongs to a source in an object store; an input from another allocation's output has none",
                        );
                    }
                }
                InputSource::Output(output_ref(c, &o, p)?)
            }
            _ => InputSource::Object(location(c, &o, "source", p)?),
        };
        Some(Input {
            source,
            path: dir?,
            credentials,
        })
    })
}

/// `from: <allocation>/<output name>`.
fn output_ref(c: &mut Collector, o: &super::reader::Obj<'_>, p: &str) -> Option<OutputRef> {
    let s = req_string(c, o, "from", "<allocation>/<output name>")?;
    match s.split_once('/') {
        Some((a, n)) if !a.is_empty() && !n.is_empty() && !n.contains('/') => Some(OutputRef {
            allocation: a.to_string(),
            output: n.to_string(),
        }),
        _ => {
            c.error(
                &join(p, "from"),
                format!("expected <allocation>/<output name>, got {s:?}"),
            );
            None
        }
    }
}

pub(crate) fn outputs(c: &mut Collector, v: &Value, path: &str) -> Vec<Output> {
    list(c, v, path, |c, v, p| {
        let o = obj(
            c,
            v,
            p,
            &[
                "name",
                "target",
                "endpoint",
                "region",
                "credentials",
                "path",
            ],
            false,
        )?;
        let dir = req_string(c, &o, "path", "the directory inside the allocation");
        let name = opt_string(c, &o, "name");
        let target = if o.has("target") {
            Some(location(c, &o, "target", p)?)
        } else {
            for key in ["endpoint", "region"] {
                if o.has(key) {
                    c.error(
                        &join(p, key),
                        "belongs to a target in an object store, and this output has no target",
                    );
                }
            }
            None
        };
        Some(Output {
            path: dir?,
            name,
            target,
            credentials: opt_string(c, &o, "credentials"),
        })
    })
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
