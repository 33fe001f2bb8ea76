//! `nunet key`: create key pairs and show their DIDs.

use anyhow::Result;
use clap::Subcommand;

use crate::home::{Home, passphrase};

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Generate a key pair and store it encrypted (argon2id + XChaCha20-Poly1305) under
    /// <home>/key/<name>.json. The passphrase comes from DMS_PASSPHRASE or a prompt.
    New {
        /// Name of the key (`dms` for the node, `user` for you, by convention).
        name: String,
    },
    /// Print the DID of a key (no passphrase needed).
    Did {
        /// Name of the key.
        name: String,
    },
    /// List keys and their DIDs.
    List,
}

pub fn run(home: &Home, cmd: KeyCmd) -> Result<i32> {
    let ks = home.keystore()?;
    match cmd {
        KeyCmd::New { name } => {
            if ks.exists(&name) {
                anyhow::bail!(
                    "a key named {name:?} already exists (its DID: {})",
                    ks.did(&name)?
                );
            }
            let pass = passphrase(&format!("New passphrase for key {name:?}: "), true)?;
            let key = ks.create(&name, &pass)?;
            println!("{}", key.did());
        }
        KeyCmd::Did { name } => println!("{}", ks.did(&name)?),
        KeyCmd::List => {
            let keys = ks.list()?;
            if keys.is_empty() {
                eprintln!(
                    "no keys in {} (create one with `nunet key new <name>`)",
                    ks.dir().display()
                );
            }
            for (name, did) in keys {
                match did {
                    Ok(d) => println!("{name}\t{d}"),
                    Err(e) => println!("{name}\tunreadable: {e}"),
                }
            }
        }
    }
    Ok(0)
}
