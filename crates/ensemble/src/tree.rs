//! A YAML (or JSON) document as a tree of values that remember their source line.
//!
//! Anchors and aliases are expanded here (an alias becomes a copy of the anchored value, still
//! carrying the line where it was written), and YAML merge keys (`<<: *base`) are applied.
//! Every scalar is kept as text together with whether it was quoted, so the decoder decides
//! what type it is (`2` may be a core count, `"2"` a string) and can quote it back in errors.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting accepted; deeper documents are refused rather than risking the stack.
pub const MAX_DEPTH: usize = 64;
/// Most values a document may expand to (after aliases), against "billion laughs" inputs.
pub const MAX_VALUES: usize = 200_000;

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

    /// Short description of the value for error messages: scalars are quoted back, other
    /// values named by their shape.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "nothing".to_string(),
            Kind::Scalar { text, .. } => format!("{text:?}"),
            Kind::Seq(_) => "a list".to_string(),
            Kind::Map(_) => "a mapping".to_string(),
        }
    }

    fn count(&self) -> usize {
        match &self.kind {
            Kind::Null | Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(Value::count).sum::<usize>(),
            Kind::Map(entries) => 1 + entries.iter().map(|e| e.value.count()).sum::<usize>(),
        }
    }
}

/// A document that could not be read at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub struct SyntaxError {
    /// What is wrong.
    pub message: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
}

/// A problem found while building the tree that does not stop it (duplicate keys).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeIssue {
    /// Line of the offending key.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses YAML, or JSON when the YAML reader refuses a document that is valid JSON.
pub fn parse(text: &str) -> Result<(Value, Vec<TreeIssue>), SyntaxError> {
    match parse_yaml(text) {
        Ok(v) => Ok(v),
        Err(yaml_err) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(json) => from_json(&json, 0).map(|v| (v, Vec::new())).ok_or(yaml_err),
            Err(_) => Err(yaml_err),
        },
    }
}

fn from_json(v: &serde_json::Value, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let kind = match v {
        serde_json::Value::Null => Kind::Null,
        serde_json::Value::Bool(b) => Kind::Scalar {
            text: b.to_string(),
            plain: true,
        },
        serde_json::Value::Number(n) => Kind::Scalar {
            text: n.to_string(),
            plain: true,
        },
        serde_json::Value::String(s) => Kind::Scalar {
            text: s.clone(),
            plain: false,
        },
        serde_json::Value::Array(items) => Kind::Seq(
            items
                .iter()
                .map(|i| from_json(i, depth + 1))
                .collect::<Option<Vec<_>>>()?,
        ),
        serde_json::Value::Object(map) => Kind::Map(
            map.iter()
                .map(|(k, v)| {
                    Some(Entry {
                        key: k.clone(),
                        line: 0,
                        value: from_json(v, depth + 1)?,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        ),
    };
    Some(Value { kind, line: 0 })
}

fn parse_yaml(text: &str) -> Result<(Value, Vec<TreeIssue>), SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        message: e.info().to_string(),
        line: e.marker().line(),
        column: e.marker().col() + 1,
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    let root = builder.root.unwrap_or(Value {
        kind: Kind::Null,
        line: 1,
    });
    Ok((root, builder.issues))
}

enum Frame {
    Seq {
        anchor: usize,
        line: usize,
        items: Vec<Value>,
    },
    Map {
        anchor: usize,
        line: usize,
        entries: Vec<Entry>,
        pending_key: Option<(String, usize)>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: std::collections::HashMap<usize, Value>,
    root: Option<Value>,
    documents: usize,
    values: usize,
    error: Option<SyntaxError>,
    issues: Vec<TreeIssue>,
}

impl Builder {
    fn fail(&mut self, message: impl Into<String>, line: usize) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                message: message.into(),
                line,
                column: 0,
            });
        }
    }

    fn push_value(&mut self, value: Value, anchor: usize) {
        self.values += value.count();
        if self.values > MAX_VALUES {
            self.fail(
                format!("document expands to more than {MAX_VALUES} values"),
                value.line,
            );
            return;
        }
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(value);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => match value.kind {
                    Kind::Scalar { text, .. } => *pending_key = Some((text, value.line)),
                    Kind::Null => *pending_key = Some((String::new(), value.line)),
                    _ => {
                        let line = value.line;
                        self.fail("mapping keys must be plain strings", line);
                    }
                },
                Some((key, line)) => {
                    if entries.iter().any(|e| e.key == key) && key != "<<" {
                        self.issues.push(TreeIssue {
                            line,
                            message: format!("duplicate key {key:?}; the later value is used"),
                        });
                        entries.retain(|e| e.key != key);
                    }
                    entries.push(Entry { key, line, value });
                }
            },
        }
    }
}

fn apply_merge_keys(entries: Vec<Entry>) -> Vec<Entry> {
    if !entries.iter().any(|e| e.key == "<<") {
        return entries;
    }
    let (merges, mut own): (Vec<Entry>, Vec<Entry>) =
        entries.into_iter().partition(|e| e.key == "<<");
    for merge in merges {
        let sources = match merge.value.kind {
            Kind::Map(m) => vec![m],
            Kind::Seq(items) => items
                .into_iter()
                .filter_map(|i| match i.kind {
                    Kind::Map(m) => Some(m),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        for source in sources {
            for entry in source {
                if !own.iter().any(|e| e.key == entry.key) {
                    own.push(entry);
                }
            }
        }
    }
    own
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail("only one YAML document is allowed per ensemble file", line);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(v) => self.push_value(v, 0),
                None => self.fail("alias refers to an unknown anchor", line),
            },
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                let kind = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Kind::Null
                } else {
                    Kind::Scalar { text, plain }
                };
                self.push_value(Value { kind, line }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(format!("nesting deeper than {MAX_DEPTH} levels"), line);
                    return;
                }
                self.stack.push(Frame::Seq {
                    anchor,
                    line,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(format!("nesting deeper than {MAX_DEPTH} levels"), line);
                    return;
                }
                self.stack.push(Frame::Map {
                    anchor,
                    line,
                    entries: Vec::new(),
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    self.fail("unbalanced document", line);
                    return;
                };
                let (value, anchor) = match frame {
                    Frame::Seq {
                        anchor,
                        line,
                        items,
                    } => (
                        Value {
                            kind: Kind::Seq(items),
                            line,
                        },
                        anchor,
                    ),
                    Frame::Map {
                        anchor,
                        line,
                        entries,
                        ..
                    } => (
                        Value {
                            kind: Kind::Map(apply_merge_keys(entries)),
                            line,
                        },
                        anchor,
                    ),
                };
                // Container values were already counted item by item.
                self.values = self.values.saturating_sub(value.count().saturating_sub(1));
                self.push_value(value, anchor);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
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
        assert!(err.message.contains("expands"), "{err}");
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        assert!(parse("a: [1, 2\n").is_err());
    }

    #[test]
    fn json_is_accepted() {
        let (v, _) = parse(r#"{"version": "V1", "allocations": {"a": {"x": [1, "2"]}}}"#).unwrap();
        assert_eq!(v.get("version").unwrap().as_scalar(), Some("V1"));
    }
}
