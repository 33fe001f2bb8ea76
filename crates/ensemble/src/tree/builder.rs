//! Builds the value tree from the YAML parser's events, charging every value, alias
//! expansion and anchor copy against the limits of [`super`] before making it.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::Event;
use yaml_rust2::scanner::TScalarStyle;

use super::{
    Entry, Kind, Limit, MAX_DEPTH, MAX_EXPANDED_BYTES, MAX_KEY_BYTES, MAX_VALUES, NODE_BYTES,
    ReadError, TreeIssue, Value,
};

/// The merge key.
const MERGE: &str = "<<";

/// Values and bytes charged so far.
#[derive(Debug, Default)]
pub(super) struct Budget {
    values: usize,
    bytes: usize,
    /// Whether an alias or an anchor copy was charged (for the message).
    shared: bool,
}

impl Budget {
    /// Charges `values` and `bytes`; `shared` when they are an alias expansion or an anchor
    /// copy.
    pub(super) fn charge(
        &mut self,
        values: usize,
        bytes: usize,
        shared: bool,
    ) -> Result<(), Limit> {
        self.shared |= shared;
        self.values = self.values.saturating_add(values);
        if self.values > MAX_VALUES {
            return Err(Limit::Values);
        }
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(if self.shared {
                Limit::AliasBytes
            } else {
                Limit::Bytes
            });
        }
        Ok(())
    }
}

/// A value's cost: how many values it holds (itself included) and its weight in bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    values: usize,
    bytes: usize,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.values = self.values.saturating_add(other.values);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// An open sequence or mapping.
struct Frame {
    anchor: usize,
    line: usize,
    /// Cost of the container and of what it holds so far.
    cost: Cost,
    body: Body,
}

enum Body {
    Seq(Vec<Value>),
    Map(MapBody),
}

/// A mapping being read. A key given again replaces the earlier entry, which is left as
/// `None` and dropped at the end, so the check is one hash lookup per key.
#[derive(Default)]
struct MapBody {
    entries: Vec<Option<Entry>>,
    /// Position in `entries` of each key (merge keys excepted: there may be several).
    index: HashMap<String, usize>,
    pending_key: Option<(String, usize)>,
}

struct Anchored {
    value: Value,
    cost: Cost,
}

#[derive(Default)]
pub(super) struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    root: Option<Value>,
    documents: usize,
    budget: Budget,
    issues: Vec<TreeIssue>,
}

impl Builder {
    pub(super) fn on_event(&mut self, ev: Event, line: usize) -> Result<(), ReadError> {
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(ReadError::syntax(
                        "only one YAML document is allowed per ensemble file",
                        line,
                    ));
                }
            }
            Event::Alias(id) => {
                let cost = match self.anchors.get(&id) {
                    Some(a) => a.cost,
                    None => {
                        return Err(ReadError::syntax("alias refers to an unknown anchor", line));
                    }
                };
                self.charge(cost, true, line)?;
                let value = match self.anchors.get(&id) {
                    Some(a) => a.value.clone(),
                    None => {
                        return Err(ReadError::syntax("alias refers to an unknown anchor", line));
                    }
                };
                self.push_value(value, cost, 0, line)?;
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                let kind = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Kind::Null
                } else {
                    Kind::Scalar { text, plain }
                };
                let text_len = match &kind {
                    Kind::Scalar { text, .. } => text.len(),
                    _ => 0,
                };
                let cost = Cost {
                    values: 1,
                    bytes: NODE_BYTES.saturating_add(text_len),
                };
                self.charge(cost, false, line)?;
                self.push_value(Value { kind, line }, cost, anchor, line)?;
            }
            Event::SequenceStart(anchor, _) => self.open(anchor, line, Body::Seq(Vec::new()))?,
            Event::MappingStart(anchor, _) => {
                self.open(anchor, line, Body::Map(MapBody::default()))?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err(ReadError::syntax("unbalanced document", line));
                };
                let kind = match frame.body {
                    Body::Seq(items) => Kind::Seq(items),
                    Body::Map(m) => {
                        Kind::Map(apply_merge_keys(m.entries.into_iter().flatten().collect()))
                    }
                };
                let value = Value {
                    kind,
                    line: frame.line,
                };
                self.push_value(value, frame.cost, frame.anchor, line)?;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    pub(super) fn finish(self) -> Result<(Value, Vec<TreeIssue>), ReadError> {
        if let Some(frame) = self.stack.last() {
            return Err(ReadError::syntax("unbalanced document", frame.line));
        }
        let root = self.root.unwrap_or(Value {
            kind: Kind::Null,
            line: 1,
        });
        Ok((root, self.issues))
    }

    fn charge(&mut self, cost: Cost, shared: bool, line: usize) -> Result<(), ReadError> {
        self.budget
            .charge(cost.values, cost.bytes, shared)
            .map_err(|limit| ReadError::Limit { limit, line })
    }

    fn open(&mut self, anchor: usize, line: usize, body: Body) -> Result<(), ReadError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(ReadError::Limit {
                limit: Limit::Depth,
                line,
            });
        }
        let cost = Cost {
            values: 1,
            bytes: NODE_BYTES,
        };
        self.charge(cost, false, line)?;
        self.stack.push(Frame {
            anchor,
            line,
            cost,
            body,
        });
        Ok(())
    }

    /// Adds a finished value (of cost `cost`, already charged) to the open container.
    fn push_value(
        &mut self,
        value: Value,
        cost: Cost,
        anchor: usize,
        line: usize,
    ) -> Result<(), ReadError> {
        if anchor > 0 {
            // The copy kept for aliases is memory too.
            self.charge(
                Cost {
                    values: 0,
                    bytes: cost.bytes,
                },
                true,
                line,
            )?;
            self.anchors.insert(
                anchor,
                Anchored {
                    value: value.clone(),
                    cost,
                },
            );
        }
        let Some(frame) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(value);
            }
            return Ok(());
        };
        frame.cost.add(cost);
        let m = match &mut frame.body {
            Body::Seq(items) => {
                items.push(value);
                return Ok(());
            }
            Body::Map(m) => m,
        };
        let Some((key, key_line)) = m.pending_key.take() else {
            let key = match value.kind {
                Kind::Scalar { text, .. } => text,
                Kind::Null => String::new(),
                _ => {
                    return Err(ReadError::syntax(
                        "mapping keys must be plain strings",
                        value.line,
                    ));
                }
            };
            if key.len() > MAX_KEY_BYTES {
                return Err(ReadError::Limit {
                    limit: Limit::KeyBytes,
                    line: value.line,
                });
            }
            m.pending_key = Some((key, value.line));
            return Ok(());
        };
        if key != MERGE
            && let Some(earlier) = m.index.insert(key.clone(), m.entries.len())
            && let Some(slot) = m.entries.get_mut(earlier)
        {
            *slot = None;
            self.issues.push(TreeIssue {
                line: key_line,
                message: format!("duplicate key {key:?}; the later value is used"),
            });
        }
        m.entries.push(Some(Entry {
            key,
            line: key_line,
            value,
        }));
        Ok(())
    }
}

/// Applies `<<` merge keys: the merged mappings' entries are added unless the mapping has
/// the key already (its own keys first, then earlier merges before later ones).
fn apply_merge_keys(entries: Vec<Entry>) -> Vec<Entry> {
    if !entries.iter().any(|e| e.key == MERGE) {
        return entries;
    }
    let (merges, mut own): (Vec<Entry>, Vec<Entry>) =
        entries.into_iter().partition(|e| e.key == MERGE);
    let mut seen: HashSet<String> = own.iter().map(|e| e.key.clone()).collect();
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
        for entry in sources.into_iter().flatten() {
            if seen.insert(entry.key.clone()) {
                own.push(entry);
            }
        }
    }
    own
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tree::weight;

    fn build(text: &str) -> Builder {
        let mut b = Builder::default();
        let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
        loop {
            let (ev, mark) = parser.next_token().unwrap();
            if ev == Event::StreamEnd {
                return b;
            }
            b.on_event(ev, mark.line()).unwrap();
        }
    }

    #[test]
    fn charged_bytes_are_the_weight_of_the_tree() {
        let b = build("a: [1, two, {x: ~}]\nlong_key_name: \"text\"\n");
        let root = b.root.clone().unwrap();
        assert_eq!(b.budget.bytes, weight(&root));
        assert_eq!(b.budget.values, 10);
    }

    #[test]
    fn an_alias_is_charged_the_weight_of_what_it_copies() {
        let plain = build("a: [xxxxxxxx, y]\n");
        let aliased = build("a: &a [xxxxxxxx, y]\nb: *a\n");
        let copy = weight(plain.root.unwrap().get("a").unwrap());
        // The anchor's copy and the alias's copy, plus the key `b`.
        assert_eq!(
            aliased.budget.bytes,
            plain.budget.bytes + 2 * copy + NODE_BYTES + 1
        );
        assert!(aliased.budget.shared);
    }

    #[test]
    fn merge_keys_keep_own_keys_then_earlier_merges() {
        let b = build("x: &x {a: 1, b: 1}\ny: &y {b: 2, c: 2}\nz: {<<: [*x, *y], a: 0}\n");
        let root = b.root.unwrap();
        let z = root.get("z").unwrap();
        let got: Vec<(&str, &str)> = z
            .as_map()
            .unwrap()
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_scalar().unwrap()))
            .collect();
        assert_eq!(got, [("a", "0"), ("b", "1"), ("c", "2")]);
    }
}
