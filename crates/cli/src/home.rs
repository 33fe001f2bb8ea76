//! Where a node keeps its things, and how secrets are asked for.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nunet_capability::{Anchors, ContextFile};
use nunet_config::Loaded;
use nunet_did::{KdfParams, Keypair, Keystore, Signer};
use zeroize::Zeroizing;

/// NuNet's global flags that set one configuration key each, for this command only (flag >
/// `DMS_*` environment > file > default, as in NuNet).
#[derive(clap::Args, Debug, Default)]
pub struct FlagOverrides {
    /// REST API address the CLI calls and the daemon binds (`rest.addr`).
    #[arg(long, global = true, value_name = "ADDR")]
    rest_addr: Option<String>,
    /// REST API port (`rest.port`).
    #[arg(long, global = true, value_name = "PORT")]
    rest_port: Option<u16>,
    /// Database and persistent state (`general.data_dir`).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Debug logging (`general.debug`); `--debug=false` turns it off.
    #[arg(
        long,
        global = true,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    debug: Option<bool>,
}

impl FlagOverrides {
    /// Whether any flag was given.
    pub fn any(&self) -> bool {
        !self.as_env().is_empty()
    }

    /// `--data-dir` meant the node home before it meant `general.data_dir` (NuNet's meaning):
    /// a directory that holds a home's files is refused instead of being read as data.
    pub fn check(&self) -> Result<()> {
        let Some(d) = &self.data_dir else {
            return Ok(());
        };
        let home_files = ["key", "cap", nunet_config::load::FILE_NAME];
        if let Some(f) = home_files.iter().find(|f| d.join(f).exists()) {
            bail!(
                "--data-dir {} holds {f}: it looks like a node home. --data-dir sets \
                 general.data_dir (as in NuNet); the home is --user-dir (or NUNET_HOME)",
                d.display()
            );
        }
        Ok(())
    }

    /// The flags as the `DMS_*` variables they stand for.
    pub fn as_env(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut put = |k: &str, val: Option<String>| {
            if let Some(val) = val {
                v.push((k.to_string(), val));
            }
        };
        put("DMS_REST_ADDR", self.rest_addr.clone());
        put("DMS_REST_PORT", self.rest_port.map(|p| p.to_string()));
        put(
            "DMS_GENERAL_DATA_DIR",
            self.data_dir.as_ref().map(|d| d.display().to_string()),
        );
        put("DMS_GENERAL_DEBUG", self.debug.map(|d| d.to_string()));
        v
    }
}

/// The node's home directory and what lives in it.
pub struct Home {
    /// Root directory (`--user-dir`, `NUNET_HOME`, or `~/.nunet`).
    pub dir: PathBuf,
    /// Configuration keys set by flags, as `DMS_*` variables (consulted before the environment).
    overrides: Vec<(String, String)>,
    /// Whether `dir` is the default `~/.nunet` (then NuNet's other config places are searched).
    default_home: bool,
    /// Explicit `--config` file.
    pub config_path: Option<PathBuf>,
    /// The configuration, read once per command (keys, contexts and the API all need it).
    loaded: std::sync::OnceLock<Loaded>,
}

impl Home {
    pub fn resolve(user_dir: Option<&Path>, config: Option<&Path>) -> Result<Self> {
        let dir = match user_dir {
            Some(d) => d.to_path_buf(),
            None => {
                let home = std::env::var_os("HOME")
                    .context("HOME is not set; pass --user-dir or set NUNET_HOME")?;
                PathBuf::from(home).join(".nunet")
            }
        };
        Ok(Self {
            dir,
            overrides: Vec::new(),
            default_home: user_dir.is_none(),
            config_path: config.map(Path::to_path_buf),
            loaded: std::sync::OnceLock::new(),
        })
    }

    /// The same home, with configuration keys set by flags.
    pub fn with_overrides(mut self, overrides: Vec<(String, String)>) -> Self {
        self.overrides = overrides;
        self
    }

    /// The effective configuration (defaults ← file ← DMS_* environment ← flags).
    pub fn config(&self) -> Result<Loaded> {
        if let Some(l) = self.loaded.get() {
            return Ok(l.clone());
        }
        let l = nunet_config::load_from(
            &self.dir,
            self.config_path.as_deref(),
            &self.nunet_places(),
            &|k| {
                self.overrides
                    .iter()
                    .find(|(name, _)| name == k)
                    .map(|(_, v)| v.clone())
                    .or_else(|| std::env::var(k).ok())
            },
        )?;
        Ok(self.loaded.get_or_init(|| l).clone())
    }

    /// NuNet's other places for `dms_config.json`, searched after the home's when the home is
    /// the default `~/.nunet`: the current directory (NuNet's `config` commands write there),
    /// then `$XDG_CONFIG_HOME/nunet` (`~/.config/nunet`). A home given with `--user-dir` or
    /// `NUNET_HOME` is self-contained.
    fn nunet_places(&self) -> Vec<PathBuf> {
        if !self.default_home {
            return Vec::new();
        }
        let mut v = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            v.push(cwd.join(nunet_config::load::FILE_NAME));
        }
        let xdg = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(x) = xdg {
            v.push(x.join("nunet").join(nunet_config::load::FILE_NAME));
        }
        v.dedup();
        v.retain(|p| p != &self.dir.join(nunet_config::load::FILE_NAME));
        v
    }

    /// Prints the configuration's warnings on stderr.
    pub fn print_config_warnings(&self) -> Result<()> {
        for w in self.config()?.warnings {
            eprintln!("warning: {w}");
        }
        Ok(())
    }

    /// Where the local daemon's REST API is: `rest.addr`:`rest.port` from the config, or,
    /// when `rest.port` is 0 (the kernel picks the port when the daemon binds), the address
    /// the running daemon reported in `<general.data_dir>/run.json`.
    pub fn api_endpoint(&self) -> Result<(String, u16)> {
        let c = self.config()?.config;
        if c.rest.port != 0 {
            return Ok((c.rest.addr, c.rest.port));
        }
        let r = crate::runinfo::RunInfo::read_live(&c.general.data_dir)
            .context("rest.port is 0, so the daemon's port is read from its report")?;
        // A wildcard address is reached on loopback ([`Api::new`](crate::client::Api::new)).
        Ok((r.rest.ip().to_string(), r.rest.port()))
    }

    /// The user directory from the config (defaults to the home itself).
    pub fn user_dir(&self) -> Result<PathBuf> {
        Ok(self.config()?.config.general.user_dir)
    }

    pub fn keystore(&self) -> Result<Keystore> {
        let ks = Keystore::open(self.user_dir()?.join("key"))?;
        if std::env::var_os("NUNET_INSECURE_FAST_KDF").is_some_and(|v| v == "1") {
            // Test-only: cheap key derivation for keys created by this process.
            return Ok(ks.with_kdf(KdfParams::INSECURE_FAST));
        }
        Ok(ks)
    }

    pub fn contexts(&self) -> Result<ContextFile> {
        Ok(ContextFile::new(self.user_dir()?.join("cap")))
    }

    /// Unlocks a key, asking for its passphrase.
    pub fn unlock(&self, name: &str) -> Result<Keypair> {
        let ks = self.keystore()?;
        // Fail on a missing or unreadable key before asking for a passphrase.
        let info = ks.inspect(name)?;
        if let Some(mode) = info.readable_by_others {
            eprintln!(
                "warning: key file {} ({}) has mode {mode:o}: others can read (or replace) it and \
                 guess its passphrase offline; `chmod 600` it",
                ks.dir().join(format!("{name}.json")).display(),
                info.format
            );
        }
        let pass = passphrase(&format!("Passphrase for key {name:?}: "), false)?;
        Ok(ks.load(name, &pass)?)
    }

    /// The DID of a stored key; a NuNet key file keeps it encrypted, so that one is unlocked.
    pub fn key_did(&self, name: &str) -> Result<nunet_did::Did> {
        match self.keystore()?.inspect(name)?.did {
            Some(did) => Ok(did),
            None => Ok(self.unlock(name)?.did()),
        }
    }

    /// What a context name means: a keystore context, or a Ledger one (`ledger[:<n|alias>]`).
    pub fn context_ref(&self, name: &str) -> Result<crate::ledger::ContextRef> {
        crate::ledger::resolve(name, &self.user_dir()?)
    }

    /// Loads a context and whatever signs for it: its keystore key (asking for the
    /// passphrase), or the Ledger account its name gives, which must hold the context's DID.
    pub fn context_signer(&self, name: &str) -> Result<(Anchors, Box<dyn Signer>)> {
        let r = self.context_ref(name)?;
        let Some(account) = r.ledger else {
            let (a, k) = self.context_with_key(name)?;
            return Ok((a, Box::new(k)));
        };
        let anchors = self.contexts()?.load(&r.file)?;
        let signer = crate::ledger::open(account)?;
        if Signer::did(&signer) != anchors.did {
            bail!(
                "Ledger account {account} holds {}, not the DID of capability context {name:?} ({}); \
                 is the right device connected?",
                Signer::did(&signer),
                anchors.did
            );
        }
        Ok((anchors, Box::new(signer)))
    }

    /// Loads a context and unlocks its key.
    pub fn context_with_key(&self, name: &str) -> Result<(Anchors, Keypair)> {
        self.ensure_keystore_context(name)?;
        let anchors = self.contexts()?.load(name)?;
        let key = self.unlock(name)?;
        if key.did() != anchors.did {
            bail!(
                "key {name:?} ({}) is not the key of capability context {name:?} ({})",
                key.did(),
                anchors.did
            );
        }
        Ok((anchors, key))
    }

    /// Refuses a Ledger context where a message must be signed by a keystore key (before a
    /// passphrase is asked for or the daemon is called).
    pub fn ensure_keystore_context(&self, name: &str) -> Result<()> {
        if self.context_ref(name)?.ledger.is_some() {
            bail!(
                "context {name:?} is held by a Ledger wallet: it grants, delegates and revokes \
                 (nunet cap …), but messages are signed with a keystore context's key; delegate \
                 what you need to one (e.g. `nunet cap delegate <its DID> --context {name} …`)"
            );
        }
        Ok(())
    }
}

/// A passphrase from `DMS_PASSPHRASE`, `DMS_PASSPHRASE_FILE`, or the terminal.
pub fn passphrase(prompt: &str, confirm: bool) -> Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var("DMS_PASSPHRASE") {
        if p.is_empty() {
            bail!("DMS_PASSPHRASE is set but empty; empty passphrases are refused");
        }
        return Ok(Zeroizing::new(p));
    }
    if let Some(f) = std::env::var_os("DMS_PASSPHRASE_FILE") {
        let text =
            Zeroizing::new(std::fs::read_to_string(&f).with_context(|| {
                format!("reading DMS_PASSPHRASE_FILE {}", Path::new(&f).display())
            })?);
        let p = text.trim_end_matches(['\n', '\r']).to_string();
        if p.is_empty() {
            bail!("the passphrase file {} is empty", Path::new(&f).display());
        }
        return Ok(Zeroizing::new(p));
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "a passphrase is needed: set DMS_PASSPHRASE (or DMS_PASSPHRASE_FILE), or run in a terminal"
        );
    }
    let p = Zeroizing::new(rpassword::prompt_password(prompt)?);
    if p.is_empty() {
        bail!("empty passphrases are refused");
    }
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Repeat passphrase: ")?);
        if *again != *p {
            bail!("the passphrases do not match");
        }
    }
    Ok(p)
}
