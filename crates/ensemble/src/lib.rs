//! NuNet ensemble specs: reading the YAML (or JSON) files users write (NUNET-FORMATS §1),
//! checking them, and comparing resources.
//!
//! [`parse_str`] / [`parse_file`] read a file (anchors, aliases and merge keys, `${…}`
//! placeholders, units), decode it into an [`Ensemble`], and check every rule at once: the
//! result is either the ensemble plus its warnings, or a [`Report`] of *all* problems, each
//! with a YAML path and a line. [`check::ensemble`] applies the same rules to an ensemble that
//! arrives already decoded (JSON from a client or another node), and
//! [`Resources::check_request`] to the resources inside deployment messages; the numeric
//! bounds are in [`limits`]. [`Resources::satisfied_by`] compares a request with a provider's
//! offer.
//!
//! This crate is pure: it does no network IO, starts nothing, and reads files only for
//! `${file:…}` placeholders. It must not depend on the actor, network or executor crates;
//! placement (choosing peers) lives in `nunet-placement`.
//!
//! ```
//! let yaml = r#"
//! version: V1
//! allocations:
//!   hello:
//!     executor: docker
//!     type: task
//!     resources: {cpu: {cores: 1}, ram: {size: 0.5}, disk: {size: 1}}
//!     execution: {type: docker, image: hello-world}
//! nodes:
//!   n1: {allocations: [hello]}
//! "#;
//! let parsed = nunet_ensemble::parse_str(yaml, &nunet_ensemble::Context::from_process()).unwrap();
//! assert_eq!(parsed.ensemble.allocations[0].dns_name, "hello");
//! assert_eq!(parsed.ensemble.allocations[0].resources.ram.size, 512 * 1024 * 1024);
//! ```

pub mod check;
pub mod data;
pub mod decode;
pub mod execution;
pub mod limits;
pub mod placeholder;
pub mod problem;
pub mod resources;
pub mod spec;
pub mod summary;
pub mod tree;
pub mod units;
pub mod validate;
pub mod volumes;

use std::path::{Path, PathBuf};

pub use execution::{EnvVar, Execution};
pub use placeholder::Context;
pub use problem::{Problem, Report, Severity};
pub use resources::{Resources, Shortfall};
pub use spec::{EdgeConstraint, Ensemble, Location, LocationConstraint, NodeConfig};
pub use summary::{Summary, Validation, summarize};

/// Largest ensemble file accepted.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why an ensemble could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file has errors; the report lists all of them (and the warnings).
    #[error("invalid ensemble:\n{0}")]
    Invalid(Report),
}

/// A valid ensemble and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The ensemble.
    pub ensemble: Ensemble,
    /// Warnings only (a report with errors is returned as [`EnsembleError::Invalid`]).
    pub report: Report,
}

/// Reads, decodes and validates an ensemble from text (YAML or JSON).
pub fn parse_str(text: &str, ctx: &Context) -> Result<Parsed, EnsembleError> {
    let mut c = problem::Collector::default();
    let (mut root, issues) = match tree::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let line = (e.line() > 0).then_some(e.line());
            let message = match e {
                tree::ReadError::Syntax { message, .. } => {
                    format!("not valid YAML or JSON: {message}")
                }
                tree::ReadError::Limit { limit, .. } => limit.to_string(),
            };
            let report = Report {
                problems: vec![Problem {
                    severity: Severity::Error,
                    path: String::new(),
                    line,
                    message,
                }],
            };
            return Err(EnsembleError::Invalid(report));
        }
    };
    // Placeholders and resource templates may grow the document further, within the same
    // budget as aliases.
    c.expanded(tree::weight(&root));
    for issue in issues {
        c.error_at("", issue.line, issue.message);
    }
    placeholder::resolve(&mut root, &mut String::new(), ctx, &mut c);
    let ensemble = match decode::ensemble(&mut c, &root) {
        Some((e, declared)) => {
            validate::validate(&mut c, &e, &declared);
            Some(e)
        }
        None => None,
    };
    let report = c.into_report();
    match ensemble {
        Some(ensemble) if !report.has_errors() => Ok(Parsed { ensemble, report }),
        _ => Err(EnsembleError::Invalid(report)),
    }
}

/// Reads a file and calls [`parse_str`]. Relative `${file:…}` paths start from
/// `ctx.base_dir` (the working directory by default, as in NuNet).
pub fn parse_file(path: &Path, ctx: &Context) -> Result<Parsed, EnsembleError> {
    let io = |source| EnsembleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(EnsembleError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_str(&text, ctx)
}
