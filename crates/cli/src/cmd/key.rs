//! `nunet key`: create, import and list key pairs, and show their DIDs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use nunet_did::keystore_v3::{self, ScryptCost};
use nunet_did::{Keypair, Keystore, Signer};

use crate::home::{Home, passphrase};

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Generate a key pair and store it encrypted under <user_dir>/key/<name>.json.
    /// The passphrase comes from DMS_PASSPHRASE, DMS_PASSPHRASE_FILE or a prompt.
    New {
        /// Name of the key (`dms` for the node, `user` for you, by convention).
        name: String,
        /// File format: `native` (argon2id + XChaCha20-Poly1305, the DID readable without
        /// the passphrase) or `nunet` (NuNet's keystore v3: scrypt + AES-256-CTR), which
        /// NuNet's own DMS can also open.
        #[arg(long, value_enum, default_value_t = KeyFormatArg::Native)]
        format: KeyFormatArg,
    },
    /// Add a key file from elsewhere: a NuNet key file (keystore v3, e.g. from another
    /// machine's ~/.nunet/key) or one of this node's. Its passphrase is checked first; a
    /// NuNet file is kept byte for byte. Never overwrites a key.
    Import {
        /// The key file.
        file: PathBuf,
        /// Name to store it under (default: the file name without `.json`).
        #[arg(long)]
        name: Option<String>,
    },
    /// Print the DID of a key (a NuNet key file keeps its DID encrypted: it asks for the
    /// passphrase). `ledger[:<account or alias>]` asks the Ledger wallet.
    Did {
        /// Name of the key.
        name: String,
    },
    /// List keys, their formats and DIDs.
    List,
    /// Names for Ledger accounts, used as `ledger:<alias>` (NuNet's ledger_aliases.json).
    #[command(subcommand)]
    LedgerAlias(LedgerAliasCmd),
}

#[derive(Subcommand, Debug)]
pub enum LedgerAliasCmd {
    /// Name Ledger account <account> <alias>: `--context ledger:<alias>` then signs with it.
    Set {
        /// The alias (letters, digits, '.', '_', '-'; not only digits).
        alias: String,
        /// The account index on the device.
        account: u32,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KeyFormatArg {
    Native,
    Nunet,
}

pub fn run(home: &Home, cmd: KeyCmd) -> Result<i32> {
    let ks = home.keystore()?;
    match cmd {
        KeyCmd::New { name, format } => {
            if ks.exists(&name) {
                anyhow::bail!("a key named {name:?} already exists");
            }
            let pass = passphrase(&format!("New passphrase for key {name:?}: "), true)?;
            let key = match format {
                KeyFormatArg::Native => ks.create(&name, &pass)?,
                KeyFormatArg::Nunet => create_nunet(&ks, &name, &pass)?,
            };
            println!("{}", key.did());
        }
        KeyCmd::Import { file, name } => {
            let name = match name {
                Some(n) => n,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                    .context("cannot take a key name from the file name; pass --name")?,
            };
            if ks.exists(&name) {
                anyhow::bail!("a key named {name:?} already exists; choose another with --name");
            }
            let bytes = std::fs::read(&file)
                .with_context(|| format!("reading key file {}", file.display()))?;
            let pass = passphrase(&format!("Passphrase of {}: ", file.display()), false)?;
            let did = ks.import(&name, &bytes, &pass)?;
            eprintln!("imported {} as key {name:?}", file.display());
            println!("{did}");
        }
        KeyCmd::Did { name } => match home.context_ref(&name)?.ledger {
            Some(account) => println!("{}", Signer::did(&crate::ledger::open(account)?)),
            None => println!("{}", home.key_did(&name)?),
        },
        KeyCmd::LedgerAlias(LedgerAliasCmd::Set { alias, account }) => {
            crate::ledger::set_alias(&home.user_dir()?, &alias, account)?;
            eprintln!("ledger:{alias} is Ledger account {account}");
        }
        KeyCmd::List => {
            let keys = ks.list()?;
            if keys.is_empty() {
                eprintln!(
                    "no keys in {} (create one with `nunet key new <name>`)",
                    ks.dir().display()
                );
            }
            for (name, info) in keys {
                match info {
                    Ok(i) => println!(
                        "{name}\t{}\t{}",
                        i.did.map(|d| d.to_string()).unwrap_or_else(|| {
                            format!("(DID encrypted: `nunet key did {name}`)")
                        }),
                        i.format
                    ),
                    Err(e) => println!("{name}\tunreadable: {e}"),
                }
            }
        }
    }
    Ok(0)
}

/// A new key in NuNet's format, stored through [`Keystore::import`] so the same checks and
/// the no-overwrite rule apply.
fn create_nunet(ks: &Keystore, name: &str, pass: &str) -> Result<Keypair> {
    let key = Keypair::generate();
    let cost = if std::env::var_os("NUNET_INSECURE_FAST_KDF").is_some_and(|v| v == "1") {
        ScryptCost::INSECURE_FAST
    } else {
        ScryptCost::NUNET
    };
    let bytes = keystore_v3::seal(name, &key, pass, cost)?;
    ks.import(name, &bytes, pass)?;
    Ok(key)
}
