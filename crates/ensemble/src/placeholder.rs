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

use std::collections::HashMap;
use std::path::PathBuf;

use crate::problem::{Collector, index, join};
use crate::tree::{Kind, Value};

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
                if meta.len() > MAX_FILE_BYTES {
                    return Err(format!("file {key:?} is larger than 1 MiB"));
                }
                match std::fs::read_to_string(&path) {
                    Ok(mut s) => {
                        if s.ends_with('\n') {
                            s.pop();
                            if s.ends_with('\r') {
                                s.pop();
                            }
                        }
                        Ok(Some(s))
                    }
                    Err(e) => Err(format!("cannot read file {key:?}: {e}")),
                }
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

/// Expands the placeholders of one string.
pub fn expand(text: &str, ctx: &Context) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        if rest[..pos].ends_with('$') {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated placeholder in {text:?}"))?;
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
            return Err(format!("empty placeholder ${{{expr}}}"));
        }
        match (ctx.lookup(source, key)?, default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                let what = if source == "file" {
                    "file"
                } else {
                    "environment variable"
                };
                return Err(format!(
                    "{what} {key:?} is not set and ${{{expr}}} has no default (write ${{{expr}:-default}})"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolves every placeholder in the tree, reporting each failure at its path.
pub(crate) fn resolve(value: &mut Value, path: &str, ctx: &Context, out: &mut Collector) {
    match &mut value.kind {
        Kind::Scalar { text, .. } => {
            if text.contains("${") {
                match expand(text, ctx) {
                    Ok(v) => *text = v,
                    Err(e) => out.error_at(path, value.line, e),
                }
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve(item, &index(path, i), ctx, out);
            }
        }
        Kind::Map(entries) => {
            for e in entries.iter_mut() {
                let p = join(path, &e.key);
                resolve(&mut e.value, &p, ctx, out);
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
