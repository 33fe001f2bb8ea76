//! A YAML (or JSON) document as a tree of values that remember their source line.
//!
//! Anchors and aliases are expanded here (an alias becomes a copy of the anchored value, still
//! carrying the line where it was written), and YAML merge keys (`<<: *base`) are applied.
//! Every scalar is kept as text together with whether it was quoted, so the decoder decides
//! what type it is (`2` may be a core count, `"2"` a string) and can quote it back in errors.
//!
//! # Limits
//! A document is refused, with a [`ReadError::Limit`], when it nests deeper than
//! [`MAX_DEPTH`], has a mapping key longer than [`MAX_KEY_BYTES`], or expands to more than
//! [`MAX_VALUES`] values or [`MAX_EXPANDED_BYTES`] bytes. The byte count is the document's
//! [`weight`]: every value costs [`NODE_BYTES`] plus the length of its text or key, and
//! an alias costs the weight of the value it copies, charged *before* the copy is made (as is
//! the copy kept of each anchored value). A few bytes aliased many times are therefore refused
//! as surely as many values. Reading takes time linear in the expanded document and no stack
//! proportional to its nesting.

mod builder;

use yaml_rust2::parser::{Event, Parser};

/// Deepest nesting accepted; deeper documents are refused rather than risking the stack.
pub const MAX_DEPTH: usize = 64;
/// Most values a document may expand to (after aliases), against "billion laughs" inputs.
pub const MAX_VALUES: usize = 200_000;
/// Most bytes a document may expand to (after aliases and merge keys; see [`weight`]),
/// against a long string aliased many times. Files are at most 4 MiB
/// ([`crate::MAX_FILE_BYTES`]), so only anchors and aliases (and, later, placeholders and
/// resource templates) come near this.
pub const MAX_EXPANDED_BYTES: usize = 32 * 1024 * 1024;
/// Longest mapping key accepted. Keys are names (allocations, nodes, environment
/// variables…); every problem path repeats them, so they are kept short.
pub const MAX_KEY_BYTES: usize = 256;
/// What one value costs in [`weight`] besides its text: the size of a [`Value`].
pub const NODE_BYTES: usize = std::mem::size_of::<Value>();

/// One value of the document and the 1-based line it starts on (0 when unknown, e.g. JSON
/// read by the fallback parser).
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// What the value is.
    pub kind: Kind,
    /// 1-based source line; 0 when the source gave no position.
    pub line: usize,
}

/// The shape of a [`Value`].
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `null`, `~` or nothing at all.
    Null,
    /// A scalar: its text and whether it was written without quotes (plain scalars may be
    /// numbers or booleans; quoted ones are always strings).
    Scalar {
        /// The scalar's text, after placeholder resolution.
        text: String,
        /// True when the scalar was written without quotes or block style.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Value>),
    /// A mapping with its keys in document order.
    Map(Vec<Entry>),
}

/// A mapping entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key text.
    pub key: String,
    /// The line of the key.
    pub line: usize,
    /// The value.
    pub value: Value,
}

/// Longest text quoted whole by [`quote_short`]; longer ones are cut.
const DESCRIBE_CHARS: usize = 80;

impl Value {
    /// A plain or quoted scalar's text; `None` for anything else.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A mapping's entries; `None` for anything else.
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Looks a key up in a mapping.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// Short description of the value for error messages: scalars are quoted back (long ones
    /// cut, with their length), other values named by their shape.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "nothing".to_string(),
            Kind::Scalar { text, .. } => quote_short(text),
            Kind::Seq(_) => "a list".to_string(),
            Kind::Map(_) => "a mapping".to_string(),
        }
    }
}

/// `text` quoted for a message; when longer than a line, its start and its length.
pub fn quote_short(text: &str) -> String {
    if text.chars().nth(DESCRIBE_CHARS).is_none() {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(DESCRIBE_CHARS - 20).collect();
    format!("{head:?}… ({} bytes)", text.len())
}

/// What a value costs against [`MAX_EXPANDED_BYTES`]: [`NODE_BYTES`] per value plus its text,
/// and for a mapping entry [`NODE_BYTES`] plus the key.
pub fn weight(v: &Value) -> usize {
    let inner = match &v.kind {
        Kind::Null => 0,
        Kind::Scalar { text, .. } => text.len(),
        Kind::Seq(items) => items.iter().map(weight).fold(0, usize::saturating_add),
        Kind::Map(entries) => entries
            .iter()
            .map(|e| (NODE_BYTES + e.key.len()).saturating_add(weight(&e.value)))
            .fold(0, usize::saturating_add),
    };
    NODE_BYTES.saturating_add(inner)
}

/// A limit a document went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    Depth,
    /// More than [`MAX_VALUES`] values after alias expansion.
    #[error("the ensemble expands to more than {MAX_VALUES} values")]
    Values,
    /// More than [`MAX_EXPANDED_BYTES`] bytes, anchors and aliases counted.
    #[error(
        "the ensemble expands to more than {MAX_EXPANDED_BYTES} bytes through anchors and aliases"
    )]
    AliasBytes,
    /// More than [`MAX_EXPANDED_BYTES`] bytes without any alias.
    #[error("the ensemble is larger than {MAX_EXPANDED_BYTES} bytes once read")]
    Bytes,
    /// A key longer than [`MAX_KEY_BYTES`].
    #[error("a mapping key is longer than {MAX_KEY_BYTES} bytes")]
    KeyBytes,
}

/// A document that could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// Neither YAML nor JSON, or YAML this reader does not accept (several documents, an
    /// alias to an unknown anchor, a mapping as a key).
    #[error("{message} (line {line}, column {column})")]
    Syntax {
        /// What is wrong.
        message: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
    },
    /// Well-formed, but over one of the limits of this module.
    #[error("{limit} (line {line})")]
    Limit {
        /// Which limit.
        limit: Limit,
        /// 1-based line where reading stopped (0 when unknown).
        line: usize,
    },
}

impl ReadError {
    /// 1-based line of the problem (0 when unknown).
    pub fn line(&self) -> usize {
        match self {
            ReadError::Syntax { line, .. } | ReadError::Limit { line, .. } => *line,
        }
    }

    fn syntax(message: impl Into<String>, line: usize) -> Self {
        ReadError::Syntax {
            message: message.into(),
            line,
            column: 0,
        }
    }
}

/// A problem found while building the tree that does not stop it (duplicate keys).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeIssue {
    /// Line of the offending key.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses YAML, or JSON when the YAML reader finds a syntax error in a document that is
/// valid JSON. A document over a limit is refused, whichever way it could be read.
pub fn parse(text: &str) -> Result<(Value, Vec<TreeIssue>), ReadError> {
    match parse_yaml(text) {
        Ok(v) => Ok(v),
        Err(yaml_err @ ReadError::Syntax { .. }) => {
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(json) => {
                    let mut budget = builder::Budget::default();
                    let v = from_json(&json, 0, &mut budget)
                        .map_err(|limit| ReadError::Limit { limit, line: 0 })?;
                    Ok((v, Vec::new()))
                }
                Err(_) => Err(yaml_err),
            }
        }
        Err(e) => Err(e),
    }
}

fn from_json(
    v: &serde_json::Value,
    depth: usize,
    budget: &mut builder::Budget,
) -> Result<Value, Limit> {
    if depth > MAX_DEPTH {
        return Err(Limit::Depth);
    }
    let scalar = |text: String, plain: bool| Kind::Scalar { text, plain };
    let kind = match v {
        serde_json::Value::Null => Kind::Null,
        serde_json::Value::Bool(b) => scalar(b.to_string(), true),
        serde_json::Value::Number(n) => scalar(n.to_string(), true),
        serde_json::Value::String(s) => scalar(s.clone(), false),
        serde_json::Value::Array(items) => {
            budget.charge(1, NODE_BYTES, false)?;
            Kind::Seq(
                items
                    .iter()
                    .map(|i| from_json(i, depth + 1, budget))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
        serde_json::Value::Object(map) => {
            budget.charge(1, NODE_BYTES, false)?;
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                if k.len() > MAX_KEY_BYTES {
                    return Err(Limit::KeyBytes);
                }
                budget.charge(1, NODE_BYTES + k.len(), false)?;
                entries.push(Entry {
                    key: k.clone(),
                    line: 0,
                    value: from_json(v, depth + 1, budget)?,
                });
            }
            Kind::Map(entries)
        }
    };
    if let Kind::Null | Kind::Scalar { .. } = &kind {
        let len = match &kind {
            Kind::Scalar { text, .. } => text.len(),
            _ => 0,
        };
        budget.charge(1, NODE_BYTES + len, false)?;
    }
    Ok(Value { kind, line: 0 })
}

/// Reads YAML event by event (the parser's own `load` recurses once per nesting level, so
/// deep block nesting would overflow the stack before any limit is seen).
fn parse_yaml(text: &str) -> Result<(Value, Vec<TreeIssue>), ReadError> {
    let mut b = builder::Builder::default();
    let mut parser = Parser::new_from_str(text);
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| ReadError::Syntax {
            message: e.info().to_string(),
            line: e.marker().line(),
            column: e.marker().col() + 1,
        })?;
        if ev == Event::StreamEnd {
            break;
        }
        b.on_event(ev, mark.line())?;
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_anchors_and_merge_keys() {
        let text = "base: &b\n  x: 1\n  y: 2\nuse:\n  <<: *b\n  y: 3\ncopy: *b\n";
        let (v, issues) = parse(text).unwrap();
        assert!(issues.is_empty());
        let used = v.get("use").unwrap();
        assert_eq!(used.get("x").unwrap().as_scalar(), Some("1"));
        assert_eq!(used.get("y").unwrap().as_scalar(), Some("3"));
        assert_eq!(
            v.get("copy").unwrap().get("y").unwrap().as_scalar(),
            Some("2")
        );
        assert_eq!(v.get("base").unwrap().get("y").unwrap().line, 3);
    }

    #[test]
    fn quoted_scalars_are_not_plain_and_null_is_null() {
        let (v, _) = parse("a: \"2\"\nb: 2\nc: ~\n").unwrap();
        assert_eq!(
            v.get("a").unwrap().kind,
            Kind::Scalar {
                text: "2".into(),
                plain: false
            }
        );
        assert_eq!(
            v.get("b").unwrap().kind,
            Kind::Scalar {
                text: "2".into(),
                plain: true
            }
        );
        assert!(v.get("c").unwrap().is_null());
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let (v, issues) = parse("a: 1\na: 2\n").unwrap();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].line, 2);
        assert_eq!(v.get("a").unwrap().as_scalar(), Some("2"));
    }

    #[test]
    fn hostile_inputs_are_refused_not_crashing() {
        let deep = "[".repeat(10_000);
        assert!(parse(&deep).is_err());
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            laughs.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let err = parse(&laughs).unwrap_err();
        assert!(err.to_string().contains("expands"), "{err}");
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        assert!(parse("a: [1, 2\n").is_err());
    }

    #[test]
    fn json_is_accepted() {
        let (v, _) = parse(r#"{"version": "V1", "allocations": {"a": {"x": [1, "2"]}}}"#).unwrap();
        assert_eq!(v.get("version").unwrap().as_scalar(), Some("V1"));
    }
}
