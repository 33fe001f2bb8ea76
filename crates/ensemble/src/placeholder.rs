//! `${source:key:-default}` placeholders in string values, resolved before decoding.
//!
//! * `${NAME}` and `${env:NAME}` read the environment variable `NAME`.
//! * `${file:path}` reads a file (relative paths from [`Context::base_dir`]); one trailing
//!   newline is removed, so `${file:id_ed25519.pub}` gives the bare key. At most 1 MiB.
//! * `:-default` gives the value used when the variable is unset or the file is missing.
//! * `$${` is a literal `${`.
//!
//! A placeholder with no value and no default is an error reported at its YAML path. Keys are
//! never interpolated, only values. A plain scalar stays plain after substitution, so
//! `cores: ${CORES:-2}` is still a number.
//!
//! What placeholders add to a document counts against [`MAX_EXPANDED_BYTES`], like aliases:
//! `${file:…}` of a 1 MiB file written a hundred times is refused, not read a hundred times.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::PathBuf;

use crate::problem::Collector;
use crate::tree::{Kind, MAX_EXPANDED_BYTES, Value, quote_short};

/// Largest file a `${file:…}` placeholder may read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where placeholder values come from.
pub struct Context {
    env: EnvLookup,
    /// Directory that relative `${file:…}` paths start from.
    pub base_dir: PathBuf,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("base_dir", &self.base_dir)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The process environment, with files relative to the current directory (as NuNet does).
    pub fn from_process() -> Self {
        Context {
            env: Box::new(|k| std::env::var(k).ok()),
            base_dir: PathBuf::from("."),
        }
    }

    /// A fixed set of variables (for tests and for callers that sandbox the environment).
    pub fn with_vars(vars: HashMap<String, String>, base_dir: impl Into<PathBuf>) -> Self {
        Context {
            env: Box::new(move |k| vars.get(k).cloned()),
            base_dir: base_dir.into(),
        }
    }

    fn lookup(&self, source: &str, key: &str) -> Result<Option<String>, String> {
        match source {
            "env" => Ok((self.env)(key)),
            "file" => {
                let path = self.base_dir.join(key);
                let meta = match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(_) => return Ok(None),
                };
                // Devices and pipes report no length (`/dev/zero` never ends, a FIFO blocks).
                if !meta.is_file() {
                    return Err(format!("{key:?} is not a regular file"));
                }
                let too_large = || format!("file {key:?} is larger than 1 MiB");
                if meta.len() > MAX_FILE_BYTES {
                    return Err(too_large());
                }
                let cannot = |e: std::io::Error| format!("cannot read file {key:?}: {e}");
                let file = std::fs::File::open(&path).map_err(cannot)?;
                // The file may have grown since `metadata`.
                let mut s = String::new();
                file.take(MAX_FILE_BYTES + 1)
                    .read_to_string(&mut s)
                    .map_err(cannot)?;
                if s.len() as u64 > MAX_FILE_BYTES {
                    return Err(too_large());
                }
                if s.ends_with('\n') {
                    s.pop();
                    if s.ends_with('\r') {
                        s.pop();
                    }
                }
                Ok(Some(s))
            }
            other => Err(format!(
                "unknown placeholder source {other:?} (expected env or file)"
            )),
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::from_process()
    }
}

/// Why a string's placeholders could not be expanded.
enum Failure {
    /// A placeholder is wrong or has no value.
    Bad(String),
    /// The result would be longer than allowed.
    TooLong,
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Bad(s)
    }
}

/// Expands the placeholders of one string.
pub fn expand(text: &str, ctx: &Context) -> Result<String, String> {
    expand_within(text, ctx, MAX_EXPANDED_BYTES).map_err(|f| match f {
        Failure::Bad(s) => s,
        Failure::TooLong => format!("expands to more than {MAX_EXPANDED_BYTES} bytes"),
    })
}

/// Expands the placeholders of one string into at most `max` bytes.
fn expand_within(text: &str, ctx: &Context, max: usize) -> Result<String, Failure> {
    let mut out = String::with_capacity(text.len().min(max));
    let mut rest = text;
    let push = |out: &mut String, s: &str| {
        if out.len().saturating_add(s.len()) > max {
            return Err(Failure::TooLong);
        }
        out.push_str(s);
        Ok(())
    };
    while let Some(pos) = rest.find("${") {
        if rest[..pos].ends_with('$') {
            push(&mut out, &rest[..pos - 1])?;
            push(&mut out, "${")?;
            rest = &rest[pos + 2..];
            continue;
        }
        push(&mut out, &rest[..pos])?;
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated placeholder in {}", quote_short(text)))?;
        let expr = &after[..end];
        let (spec, default) = match expr.find(":-") {
            Some(i) => (&expr[..i], Some(&expr[i + 2..])),
            None => (expr, None),
        };
        let (source, key) = match spec.split_once(':') {
            Some((s, k)) => (s.trim(), k.trim()),
            None => ("env", spec.trim()),
        };
        if key.is_empty() {
            return Err(format!("empty placeholder ${{{expr}}}").into());
        }
        match (ctx.lookup(source, key)?, default) {
            (Some(v), _) => push(&mut out, &v)?,
            (None, Some(d)) => push(&mut out, d)?,
            (None, None) => {
                let what = if source == "file" {
                    "file"
                } else {
                    "environment variable"
                };
                return Err(format!(
                    "{what} {key:?} is not set and ${{{expr}}} has no default (write ${{{expr}:-default}})"
                ).into());
            }
        }
        rest = &after[end + 1..];
    }
    push(&mut out, rest)?;
    Ok(out)
}

/// What placeholders are charged as in the expansion budget's error.
const THROUGH: &str = "${…} placeholders";

/// Resolves every placeholder in the tree, reporting each failure at its path. `path` is
/// the value's path; it is extended and restored in place rather than copied per value.
pub(crate) fn resolve(value: &mut Value, path: &mut String, ctx: &Context, out: &mut Collector) {
    match &mut value.kind {
        Kind::Scalar { text, .. } => {
            if text.contains("${") {
                let max = text.len().saturating_add(out.room());
                match expand_within(text, ctx, max) {
                    Ok(v) => {
                        let grown = v.len().saturating_sub(text.len());
                        if out.grow(grown, path, value.line, THROUGH) {
                            *text = v;
                        }
                    }
                    Err(Failure::Bad(e)) => out.error_at(path, value.line, e),
                    Err(Failure::TooLong) => {
                        out.grow(usize::MAX, path, value.line, THROUGH);
                    }
                }
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                resolve(item, path, ctx, out);
                path.truncate(len);
            }
        }
        Kind::Map(entries) => {
            for e in entries.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&e.key);
                resolve(&mut e.value, path, ctx, out);
                path.truncate(len);
            }
        }
        Kind::Null => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ctx() -> Context {
        let vars = HashMap::from([
            ("HOST".to_string(), "h1".to_string()),
            ("E".to_string(), String::new()),
        ]);
        Context::with_vars(vars, std::env::temp_dir())
    }

    #[test]
    fn env_defaults_and_escapes() {
        let c = ctx();
        assert_eq!(expand("${HOST}", &c).unwrap(), "h1");
        assert_eq!(expand("a-${env:HOST}-b", &c).unwrap(), "a-h1-b");
        assert_eq!(expand("${MISSING:-x:y}", &c).unwrap(), "x:y");
        assert_eq!(expand("${env:MISSING:-}", &c).unwrap(), "");
        assert_eq!(expand("${E:-d}", &c).unwrap(), "");
        assert_eq!(expand("$${HOST}", &c).unwrap(), "${HOST}");
        assert!(expand("${MISSING}", &c).unwrap_err().contains("MISSING"));
        assert!(expand("${HOST", &c).unwrap_err().contains("unterminated"));
        assert!(
            expand("${vault:x}", &c)
                .unwrap_err()
                .contains("unknown placeholder source")
        );
    }

    #[test]
    fn file_placeholders_strip_one_newline() {
        let dir = std::env::temp_dir().join(format!("nunet-ph-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key.pub"), "ssh-ed25519 AAAA\n").unwrap();
        let c = Context::with_vars(HashMap::new(), &dir);
        assert_eq!(expand("${file:key.pub}", &c).unwrap(), "ssh-ed25519 AAAA");
        assert_eq!(expand("${file:nope:-none}", &c).unwrap(), "none");
        assert!(expand("${file:nope}", &c).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
