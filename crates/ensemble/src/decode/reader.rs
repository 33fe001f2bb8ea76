//! Typed reads from the value tree that report problems instead of failing, so decoding goes
//! on and every problem of a file is found in one pass.

use std::collections::HashMap;

use crate::execution::EnvVar;
use crate::problem::{Collector, index, join, suggest};
use crate::tree::{Entry, Kind, Value, quote_short};
use crate::units;

/// A mapping being decoded, with its path.
pub(crate) struct Obj<'v> {
    pub entries: &'v [Entry],
    pub path: String,
    pub line: usize,
}

impl<'v> Obj<'v> {
    /// The value under `key` (absent or `null` → `None`) and its path.
    pub fn get(&self, key: &str) -> Option<(&'v Value, String)> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .filter(|e| !e.value.is_null())
            .map(|e| (&e.value, join(&self.path, key)))
    }

    /// Whether `key` is written at all (even as `null`).
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// Reads a mapping, warning about keys not in `known` (with a "did you mean" hint).
/// `tolerate_unknown` silences warnings for keys that resemble no known key (top level,
/// where NuNet files keep anchor templates).
pub(crate) fn obj<'v>(
    c: &mut Collector,
    v: &'v Value,
    path: &str,
    known: &[&str],
    tolerate_unknown: bool,
) -> Option<Obj<'v>> {
    let Kind::Map(entries) = &v.kind else {
        c.error_at(
            path,
            v.line,
            format!("expected a mapping, got {}", v.describe()),
        );
        return None;
    };
    c.see(path, v.line);
    for e in entries {
        let p = join(path, &e.key);
        c.see(&p, e.line);
        if known.contains(&e.key.as_str()) {
            continue;
        }
        match suggest(&e.key, known) {
            Some(s) => c.warn_at(
                &p,
                e.line,
                format!("unknown key {:?} is ignored; did you mean {s:?}?", e.key),
            ),
            None if !tolerate_unknown => {
                c.warn_at(&p, e.line, format!("unknown key {:?} is ignored", e.key))
            }
            None => {}
        }
    }
    Some(Obj {
        entries,
        path: path.to_string(),
        line: v.line,
    })
}

/// Reads a mapping whose keys are names (allocations, nodes, templates…), in file order.
pub(crate) fn named<'v>(
    c: &mut Collector,
    v: &'v Value,
    path: &str,
) -> Vec<(String, &'v Value, String)> {
    let Some(o) = obj(c, v, path, &[], true) else {
        return Vec::new();
    };
    o.entries
        .iter()
        .map(|e| (e.key.clone(), &e.value, join(path, &e.key)))
        .collect()
}

pub(crate) fn string(c: &mut Collector, v: &Value, path: &str) -> Option<String> {
    c.see(path, v.line);
    match &v.kind {
        Kind::Scalar { text, .. } => Some(text.clone()),
        Kind::Null => None,
        _ => {
            c.error_at(
                path,
                v.line,
                format!("expected a string, got {}", v.describe()),
            );
            None
        }
    }
}

pub(crate) fn opt_string(c: &mut Collector, o: &Obj<'_>, key: &str) -> Option<String> {
    let (v, p) = o.get(key)?;
    string(c, v, &p)
}

pub(crate) fn req_string(c: &mut Collector, o: &Obj<'_>, key: &str, what: &str) -> Option<String> {
    match o.get(key) {
        Some((v, p)) => {
            let s = string(c, v, &p)?;
            if s.trim().is_empty() {
                c.error_at(&p, v.line, format!("{what} must not be empty"));
                return None;
            }
            Some(s)
        }
        None => {
            c.error_at(
                &o.path_of(key),
                o.line,
                format!("missing; {what} is required"),
            );
            None
        }
    }
}

pub(crate) fn boolean(c: &mut Collector, v: &Value, path: &str) -> Option<bool> {
    c.see(path, v.line);
    match v.as_scalar().map(str::to_ascii_lowercase).as_deref() {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => {
            c.error_at(
                path,
                v.line,
                format!("expected true or false, got {}", v.describe()),
            );
            None
        }
    }
}

pub(crate) fn opt_bool(c: &mut Collector, o: &Obj<'_>, key: &str) -> Option<bool> {
    let (v, p) = o.get(key)?;
    boolean(c, v, &p)
}

pub(crate) fn number(c: &mut Collector, v: &Value, path: &str, what: &str) -> Option<f64> {
    c.see(path, v.line);
    let n = v
        .as_scalar()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|n| n.is_finite());
    if n.is_none() {
        c.error_at(
            path,
            v.line,
            format!("expected {what}, got {}", v.describe()),
        );
    }
    n
}

pub(crate) fn integer(c: &mut Collector, v: &Value, path: &str, min: u64, max: u64) -> Option<u64> {
    c.see(path, v.line);
    let n = v.as_scalar().and_then(|s| s.trim().parse::<u64>().ok());
    match n {
        Some(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            c.error_at(
                path,
                v.line,
                format!(
                    "expected a whole number from {min} to {max}, got {}",
                    v.describe()
                ),
            );
            None
        }
    }
}

pub(crate) fn string_list(c: &mut Collector, v: &Value, path: &str) -> Vec<String> {
    c.see(path, v.line);
    match &v.kind {
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let p = index(path, i);
                c.see(&p, item.line);
                match &item.kind {
                    Kind::Scalar { text, .. } => Some(text.clone()),
                    _ => {
                        c.error_at(
                            &p,
                            item.line,
                            format!("expected a string, got {}", item.describe()),
                        );
                        None
                    }
                }
            })
            .collect(),
        Kind::Null => Vec::new(),
        _ => {
            c.error_at(
                path,
                v.line,
                format!("expected a list of strings, got {}", v.describe()),
            );
            Vec::new()
        }
    }
}

pub(crate) fn opt_list(c: &mut Collector, o: &Obj<'_>, key: &str) -> Vec<String> {
    match o.get(key) {
        Some((v, p)) => string_list(c, v, &p),
        None => Vec::new(),
    }
}

/// A size in bytes; warns when a bare number is so large it was probably meant as MB.
pub(crate) fn size(c: &mut Collector, v: &Value, path: &str) -> Option<u64> {
    c.see(path, v.line);
    let Some(text) = v.as_scalar() else {
        c.error_at(
            path,
            v.line,
            format!("expected a size like \"2GiB\", got {}", v.describe()),
        );
        return None;
    };
    match units::parse_size(text) {
        Ok(b) => {
            if text.trim().parse::<f64>().is_ok_and(|n| n >= 256.0) {
                c.warn_at(
                    path,
                    v.line,
                    format!("{text} without a unit means {text} GiB; write \"{text}MB\" or \"{text}MiB\" if that is what you meant"),
                );
            }
            Some(b)
        }
        Err(e) => {
            c.error_at(path, v.line, e);
            None
        }
    }
}

pub(crate) fn with_unit<T>(
    c: &mut Collector,
    v: &Value,
    path: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Option<T> {
    c.see(path, v.line);
    let Some(text) = v.as_scalar() else {
        c.error_at(
            path,
            v.line,
            format!("expected a value with a unit, got {}", v.describe()),
        );
        return None;
    };
    parse(text).map_err(|e| c.error_at(path, v.line, e)).ok()
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
pub(crate) fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// `environment:` as a mapping or as a `KEY=VALUE` list. A name set twice keeps its last
/// value, in the place of the last setting.
pub(crate) fn environment(c: &mut Collector, v: &Value, path: &str) -> Vec<EnvVar> {
    // Replaced settings are left as `None`; `seen` finds a name's setting in one lookup.
    let mut out: Vec<Option<EnvVar>> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut push = |c: &mut Collector, name: String, value: String, p: &str, line: usize| {
        if !valid_env_name(&name) {
            c.error_at(p, line, format!("{} is not a valid environment variable name (letters, digits and _, not starting with a digit)", quote_short(&name)));
            return;
        }
        if let Some(earlier) = seen.insert(name.clone(), out.len()) {
            c.warn_at(
                p,
                line,
                format!("{name} is set twice; the last value is used"),
            );
            if let Some(slot) = out.get_mut(earlier) {
                *slot = None;
            }
        }
        out.push(Some(EnvVar { name, value }));
    };
    match &v.kind {
        Kind::Map(entries) => {
            for e in entries {
                let p = join(path, &e.key);
                c.see(&p, e.line);
                let value = match &e.value.kind {
                    Kind::Scalar { text, .. } => text.clone(),
                    Kind::Null => String::new(),
                    _ => {
                        c.error_at(
                            &p,
                            e.value.line,
                            format!("expected a string value, got {}", e.value.describe()),
                        );
                        continue;
                    }
                };
                push(c, e.key.clone(), value, &p, e.line);
            }
        }
        Kind::Seq(_) => {
            for (i, item) in string_list(c, v, path).into_iter().enumerate() {
                let p = index(path, i);
                let line = c.line_of(&p).unwrap_or(v.line);
                match item.split_once('=') {
                    Some((k, val)) => push(c, k.to_string(), val.to_string(), &p, line),
                    None => c.error_at(
                        &p,
                        line,
                        format!("expected KEY=VALUE, got {}", quote_short(&item)),
                    ),
                }
            }
        }
        Kind::Null => {}
        Kind::Scalar { .. } => {
            c.error_at(
                path,
                v.line,
                format!(
                    "expected a mapping or a list of KEY=VALUE, got {}",
                    v.describe()
                ),
            );
        }
    }
    out.into_iter().flatten().collect()
}
