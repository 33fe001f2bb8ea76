//! `nunet config`: read and change dms_config.json.

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use nunet_config::keys;

use crate::home::Home;

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the effective value of a key (e.g. rest.port), or the whole configuration.
    Get {
        /// Dotted key; omit for everything.
        key: Option<String>,
    },
    /// Set a key in the config file (only that key is written; the result must validate).
    Set {
        /// Dotted key, e.g. rest.port or p2p.bootstrap_peers.
        key: String,
        /// Value: text, number, true/false, or a list as JSON or comma-separated.
        value: String,
    },
    /// Open the config file in $EDITOR; the edit is kept only if it validates.
    Edit,
    /// Print which file is read and written, and the DMS_* variables in effect.
    Path,
}

pub fn run(home: &Home, cmd: ConfigCmd) -> Result<i32> {
    match cmd {
        ConfigCmd::Get { key } => {
            let loaded = home.config()?;
            home.print_config_warnings()?;
            let v = serde_json::to_value(&loaded.config)?;
            match key {
                None => println!("{}", serde_json::to_string_pretty(&v)?),
                Some(k) => {
                    let Some(x) = keys::get(&v, &k) else {
                        let known = keys::leaf_keys(&v);
                        let s = keys::suggestions(&known, &k);
                        bail!(
                            "unknown config key {k:?}{}",
                            if s.is_empty() {
                                String::new()
                            } else {
                                format!(" (did you mean one of: {})", s.join(", "))
                            }
                        );
                    };
                    match x {
                        serde_json::Value::String(s) => println!("{s}"),
                        other => println!("{}", serde_json::to_string_pretty(other)?),
                    }
                }
            }
        }
        ConfigCmd::Set { key, value } => {
            let path = home
                .config_path
                .clone()
                .unwrap_or_else(|| home.dir.join(nunet_config::load::FILE_NAME));
            let warnings = nunet_config::load::set_key(&home.dir, &path, &key, &value)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            eprintln!("{} set in {}", key.to_lowercase(), path.display());
        }
        ConfigCmd::Edit => edit(home)?,
        ConfigCmd::Path => {
            let l = home.config()?;
            match &l.file {
                Some(f) => println!("reading {}", f.display()),
                None => println!("no config file found: using defaults"),
            }
            println!("writing {}", l.write_path.display());
            for v in l.env_overrides {
                println!("overridden by environment: {v}");
            }
            for w in l.warnings {
                println!("warning: {w}");
            }
        }
    }
    Ok(0)
}

fn edit(home: &Home) -> Result<()> {
    let path = home
        .config_path
        .clone()
        .unwrap_or_else(|| home.dir.join(nunet_config::load::FILE_NAME));
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .context("set $EDITOR to the editor to use")?;
    let original = if path.exists() {
        std::fs::read_to_string(&path)?
    } else {
        "{}\n".to_string()
    };
    std::fs::create_dir_all(&home.dir)?;
    let draft = home.dir.join(".dms_config.edit.json");
    std::fs::write(&draft, &original)?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("editor")
        .arg(&draft)
        .status()
        .with_context(|| format!("starting editor {editor:?}"))?;
    if !status.success() {
        bail!(
            "the editor exited with {status}; {} is unchanged (your draft: {})",
            path.display(),
            draft.display()
        );
    }
    let value = nunet_config::load::read_file(&draft)
        .and_then(|v| {
            nunet_config::load::resolve(&home.dir, &v, Some(&draft.display().to_string()), &|_| {
                None
            })
            .map(|r| (v, r))
        })
        .map_err(anyhow::Error::from)
        .and_then(|(v, r)| {
            // Loading a file only warns about keys nobody knows (as NuNet runs on); an edit
            // made now is checked strictly, so a typo is caught while the editor is fresh.
            if let Some(k) = r.unknown_keys.first() {
                let w = r.warnings.iter().find(|w| w.contains(k.as_str()));
                bail!(
                    "{}",
                    w.cloned()
                        .unwrap_or_else(|| format!("unknown config key {k:?}"))
                        .replace(" ignored (kept in the file)", "")
                );
            }
            Ok((v, r))
        });
    match value {
        Ok((v, r)) => {
            for w in r.warnings {
                eprintln!("warning: {w}");
            }
            if let Some(b) = nunet_config::load::backup(&path)? {
                eprintln!("the previous file is kept as {}", b.display());
            }
            nunet_config::write_file(&path, &v)?;
            let _ = std::fs::remove_file(&draft);
            eprintln!("saved {}", path.display());
            Ok(())
        }
        Err(e) => bail!(
            "{e}\n{} is unchanged; your draft is kept at {}",
            path.display(),
            draft.display()
        ),
    }
}
