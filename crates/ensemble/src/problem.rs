//! Problems found in an ensemble file: each has a YAML path, a line and a message, and is
//! either an error (the ensemble cannot be deployed) or a warning (it can, but something in
//! the file is probably not what its author meant).

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::tree::MAX_EXPANDED_BYTES;

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The ensemble is invalid.
    Error,
    /// The ensemble is valid but probably not what was meant.
    Warning,
}

/// One finding, e.g. `allocations.web.resources.ram.size: expected a size like "2GiB", got
/// "lots" (line 14)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Dotted YAML path (`nodes.n1.ports[0].public`); empty for the document itself.
    pub path: String,
    /// 1-based line, when the source gave one.
    pub line: Option<usize>,
    /// What is wrong, and where possible what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// All problems of one file, errors first, then in source order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The problems.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
    }

    pub(crate) fn sort(&mut self) {
        self.problems
            .sort_by_key(|p| (p.severity, p.line.unwrap_or(usize::MAX)));
        self.problems.dedup();
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            let tag = match p.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            writeln!(f, "{tag}: {p}")?;
        }
        Ok(())
    }
}

/// Collects problems while decoding and validating, and remembers the line of every path it
/// has seen so later checks can point at the source.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    pub(crate) problems: Vec<Problem>,
    lines: HashMap<String, usize>,
    /// Bytes the document has expanded to so far (see [`crate::tree::weight`]).
    expanded: usize,
    /// Whether the expansion went over [`MAX_EXPANDED_BYTES`] (reported once).
    over: bool,
}

impl Collector {
    /// Sets the size of the document as read.
    pub(crate) fn expanded(&mut self, bytes: usize) {
        self.expanded = bytes;
    }

    /// Bytes the document may still grow by.
    pub(crate) fn room(&self) -> usize {
        MAX_EXPANDED_BYTES.saturating_sub(self.expanded)
    }

    /// Charges `bytes` of growth (placeholder text, a resource template's copy) against
    /// [`MAX_EXPANDED_BYTES`]. Over it, reports one error (at the first place that went over,
    /// naming `through`) and returns false, then and for every later charge.
    pub(crate) fn grow(&mut self, bytes: usize, path: &str, line: usize, through: &str) -> bool {
        if !self.over && bytes <= self.room() {
            self.expanded += bytes;
            return true;
        }
        if !self.over {
            self.over = true;
            self.error_at(
                path,
                line,
                format!(
                    "the ensemble expands to more than {MAX_EXPANDED_BYTES} bytes through {through}"
                ),
            );
        }
        false
    }

    pub(crate) fn see(&mut self, path: &str, line: usize) {
        if line > 0 {
            self.lines.entry(path.to_string()).or_insert(line);
        }
    }

    /// The line of `path`, or of its closest ancestor that has one.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    pub(crate) fn error_at(&mut self, path: &str, line: usize, message: impl Into<String>) {
        self.push(
            Severity::Error,
            path,
            Some(line).filter(|l| *l > 0),
            message.into(),
        );
    }

    pub(crate) fn warn_at(&mut self, path: &str, line: usize, message: impl Into<String>) {
        self.push(
            Severity::Warning,
            path,
            Some(line).filter(|l| *l > 0),
            message.into(),
        );
    }

    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        let line = self.line_of(path);
        self.push(Severity::Error, path, line, message.into());
    }

    pub(crate) fn warn(&mut self, path: &str, message: impl Into<String>) {
        let line = self.line_of(path);
        self.push(Severity::Warning, path, line, message.into());
    }

    fn push(&mut self, severity: Severity, path: &str, line: Option<usize>, message: String) {
        self.problems.push(Problem {
            severity,
            path: path.to_string(),
            line,
            message,
        });
    }

    pub(crate) fn into_report(self) -> Report {
        let mut r = Report {
            problems: self.problems,
        };
        r.sort();
        r
    }
}

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// The known name closest to `unknown` (edit distance ≤ 2, ignoring case, `_` and `-`), for
/// "did you mean" hints.
pub(crate) fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let u = unknown.to_ascii_lowercase().replace(['_', '-'], "");
    let len = u.chars().count();
    known
        .iter()
        .map(|k| (k, k.replace('_', "")))
        // The distance is at least the difference in length: skip the work for long keys.
        .filter(|(_, k)| k.chars().count().abs_diff(len) <= 2)
        .map(|(k, plain)| (k, edit_distance(&u, &plain)))
        .filter(|(_, d)| *d <= 2)
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| *k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_and_missing_underscores() {
        assert_eq!(
            suggest("dnsname", &["dns_name", "depends_on"]),
            Some("dns_name")
        );
        assert_eq!(
            suggest("clockspeed", &["cores", "clock_speed"]),
            Some("clock_speed")
        );
        assert_eq!(
            suggest("allocation", &["allocations", "nodes"]),
            Some("allocations")
        );
        assert_eq!(suggest("zebra", &["allocations", "nodes"]), None);
    }

    #[test]
    fn line_of_falls_back_to_ancestors() {
        let mut c = Collector::default();
        c.see("nodes.n1", 7);
        assert_eq!(c.line_of("nodes.n1.ports[0].public"), Some(7));
        assert_eq!(c.line_of("allocations"), None);
    }
}
