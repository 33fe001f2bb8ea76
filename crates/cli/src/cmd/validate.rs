//! `nunet validate <file>`: checks an ensemble file and prints every problem (with its YAML
//! path and line) or a summary: nodes, their allocations and the aggregate resources a
//! provider must offer per node. Exits non-zero when the file is invalid.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use nunet_ensemble::{Context, EnsembleError, Validation, parse_file, summarize};

/// Arguments of `nunet validate`.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Ensemble file (YAML or JSON).
    pub file: PathBuf,
    /// Print the result as JSON (`{valid, problems, summary}`) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let ctx = Context::from_process();
    let shown = args.file.display();
    match parse_file(&args.file, &ctx) {
        Ok(parsed) => {
            let summary = summarize(&parsed.ensemble);
            if args.json {
                let v = Validation {
                    valid: true,
                    problems: parsed.report.problems.clone(),
                    summary: Some(summary),
                };
                println!("{}", v.to_json());
            } else {
                for w in parsed.report.warnings() {
                    eprintln!("warning: {w}");
                }
                println!("{shown}: valid");
                print!("{summary}");
            }
            Ok(())
        }
        Err(EnsembleError::Invalid(report)) => {
            let errors = report.errors().count();
            if args.json {
                let v = Validation {
                    valid: false,
                    problems: report.problems,
                    summary: None,
                };
                println!("{}", v.to_json());
            } else {
                eprint!("{report}");
            }
            bail!("{shown}: {errors} error(s)")
        }
        Err(other) => Err(other).with_context(|| format!("validating {shown}")),
    }
}
