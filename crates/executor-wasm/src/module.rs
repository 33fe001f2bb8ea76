//! Getting module bytes (path, URL, inline), checking their sha256, and compiling them once:
//! compiled modules and their linked pre-instances are cached by the hash of the bytes.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nunet_executor::{ExecutorError, ModuleSource, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;

use crate::run::{P1State, P2State};

/// Largest module accepted from a URL.
const MAX_DOWNLOAD: u64 = 256 << 20;

/// A compiled, linked module ready to instantiate.
#[derive(Clone)]
pub(crate) enum Prepared {
    /// A core module importing `wasi_snapshot_preview1`.
    P1(wasmtime::InstancePre<P1State>),
    /// A component of the `wasi:cli/command` world.
    P2(wasmtime_wasi::p2::bindings::sync::CommandPre<P2State>),
}

/// The compile cache, keyed by the sha256 of the module bytes.
pub(crate) struct ModuleCache {
    engine: Engine,
    p1: wasmtime::Linker<P1State>,
    p2: wasmtime::component::Linker<P2State>,
    compiled: Mutex<HashMap<[u8; 32], Prepared>>,
    /// Directory of compiled artifacts (`<sha256>.cwasm` + `<sha256>.cwasm.sha256`).
    disk: Option<PathBuf>,
}

/// A compiled module or component, before linking.
enum Compiled {
    Module(wasmtime::Module),
    Component(wasmtime::component::Component),
}

fn runtime(e: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Runtime(format!("wasm: {e:#}"))
}

impl ModuleCache {
    pub(crate) fn new(engine: Engine, disk: Option<PathBuf>) -> Result<Self> {
        let mut p1 = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut p1, |s: &mut P1State| &mut s.wasi)
            .map_err(runtime)?;
        let mut p2 = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut p2).map_err(runtime)?;
        Ok(Self {
            engine,
            p1,
            p2,
            compiled: Mutex::new(HashMap::new()),
            disk,
        })
    }

    fn lookup(&self, hash: &[u8; 32]) -> Option<Prepared> {
        self.compiled.lock().ok()?.get(hash).cloned()
    }

    /// Number of modules compiled so far.
    pub(crate) fn len(&self) -> usize {
        self.compiled.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Compiles (or finds) the module for `bytes`.
    pub(crate) fn prepare(self: &Arc<Self>, bytes: &[u8]) -> Result<Prepared> {
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(p) = self.lookup(&hash) {
            return Ok(p);
        }
        let compiled = match self.load(&hash) {
            Some(c) => c,
            None => {
                let c = if is_component(bytes) {
                    Compiled::Component(
                        wasmtime::component::Component::new(&self.engine, bytes)
                            .map_err(runtime)?,
                    )
                } else {
                    Compiled::Module(wasmtime::Module::new(&self.engine, bytes).map_err(runtime)?)
                };
                self.store(&hash, &c);
                c
            }
        };
        let prepared = match compiled {
            Compiled::Component(c) => {
                let pre = self.p2.instantiate_pre(&c).map_err(runtime)?;
                Prepared::P2(
                    wasmtime_wasi::p2::bindings::sync::CommandPre::new(pre).map_err(runtime)?,
                )
            }
            Compiled::Module(m) => Prepared::P1(self.p1.instantiate_pre(&m).map_err(runtime)?),
        };
        if let Ok(mut c) = self.compiled.lock() {
            c.insert(hash, prepared.clone());
        }
        Ok(prepared)
    }
}

impl ModuleCache {
    fn paths(&self, hash: &[u8; 32]) -> Option<(PathBuf, PathBuf)> {
        let dir = self.disk.as_ref()?;
        let name = hex::encode(hash);
        Some((
            dir.join(format!("{name}.cwasm")),
            dir.join(format!("{name}.cwasm.sha256")),
        ))
    }

    /// Loads a compiled artifact written by [`Self::store`], if present and intact.
    fn load(&self, hash: &[u8; 32]) -> Option<Compiled> {
        let (artifact, sum) = self.paths(hash)?;
        let bytes = std::fs::read(&artifact).ok()?;
        let expected = std::fs::read_to_string(&sum).ok()?;
        if hex::encode(Sha256::digest(&bytes)) != expected.trim() {
            return None;
        }
        let kind = wasmtime::Engine::detect_precompiled(&bytes)?;
        // SAFETY: wasmtime requires that deserialized bytes come from `serialize` of a
        // compatible engine. These do: the files live in this executor's own cache directory,
        // are written only by `store` below (artifact first, then the checksum of exactly
        // those bytes, each by atomic rename), and were just checked against that checksum;
        // wasmtime itself rejects artifacts of another version or engine configuration.
        #[allow(unsafe_code)]
        let compiled = unsafe {
            match kind {
                wasmtime::Precompiled::Module => {
                    wasmtime::Module::deserialize(&self.engine, &bytes).map(Compiled::Module)
                }
                wasmtime::Precompiled::Component => {
                    wasmtime::component::Component::deserialize(&self.engine, &bytes)
                        .map(Compiled::Component)
                }
            }
        };
        compiled.ok()
    }

    /// Writes a compiled artifact and its checksum; failures only cost a recompile later.
    fn store(&self, hash: &[u8; 32], compiled: &Compiled) {
        let Some((artifact, sum)) = self.paths(hash) else {
            return;
        };
        let bytes = match compiled {
            Compiled::Module(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
        };
        let Ok(bytes) = bytes else {
            return;
        };
        let write = |path: &Path, data: &[u8]| -> std::io::Result<()> {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, data)?;
            std::fs::rename(&tmp, path)
        };
        if write(&artifact, &bytes).is_ok() {
            let _ = write(&sum, hex::encode(Sha256::digest(&bytes)).as_bytes());
        }
    }
}

/// Components carry layer 1 in the version field (`\0asm` `0d 00 01 00`); core modules
/// `01 00 00 00`.
pub(crate) fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[6..8] == [1, 0]
}

/// Reads the module bytes and checks them against `sha256` (hex) when given.
pub(crate) fn fetch(
    source: &ModuleSource,
    sha256: Option<&str>,
    timeout: Duration,
    public_only: bool,
) -> Result<Vec<u8>> {
    let bytes = match source {
        ModuleSource::Inline(b) => b.clone(),
        ModuleSource::Path(p) => std::fs::read(p).map_err(|source| ExecutorError::File {
            path: p.clone(),
            source,
        })?,
        ModuleSource::Url(url) => download(url, timeout, public_only)?,
    };
    if let Some(expected) = sha256 {
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            return Err(ExecutorError::InvalidSpec(format!(
                "module sha256 mismatch: expected {expected}, got {actual}"
            )));
        }
    }
    Ok(bytes)
}

fn download(url: &str, timeout: Duration, public_only: bool) -> Result<Vec<u8>> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ExecutorError::InvalidSpec(format!(
            "module URL {url:?} is not http(s)"
        )));
    }
    let agent = nunet_objectstore::egress::agent(
        nunet_objectstore::egress::Deadline::Whole(timeout),
        public_only,
        "modules are fetched from the internet only",
    );
    let fail =
        |e: &dyn std::fmt::Display| ExecutorError::Runtime(format!("downloading {url}: {e}"));
    let response = agent.get(url).call().map_err(|e| fail(&e))?;
    if !response.status().is_success() {
        return Err(fail(&format!("HTTP {}", response.status())));
    }
    let mut bytes = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(MAX_DOWNLOAD + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e))?;
    if bytes.len() as u64 > MAX_DOWNLOAD {
        return Err(fail(&format!("larger than {MAX_DOWNLOAD} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn checks_sha256() {
        let src = ModuleSource::Inline(b"abc".to_vec());
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            fetch(&src, Some(good), Duration::from_secs(1), true).unwrap(),
            b"abc"
        );
        let err = fetch(
            &src,
            Some(&good.replace('b', "c")),
            Duration::from_secs(1),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("sha256 mismatch"), "{err}");
        let err = fetch(
            &ModuleSource::Url("ftp://x".into()),
            None,
            Duration::from_secs(1),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not http"), "{err}");
    }

    /// A deployer's module URL pointing at the provider itself (a service on loopback, here
    /// a listener that would answer) is refused before anything connects.
    #[test]
    fn module_urls_on_non_public_addresses_are_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/m.wasm", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let err = fetch(&ModuleSource::Url(url), None, Duration::from_secs(5), true).unwrap_err();
        assert!(err.to_string().contains("not public"), "{err}");
        assert!(listener.accept().is_err(), "nothing may have connected");
        let err = fetch(
            &ModuleSource::Url("http://localhost:1/m.wasm".into()),
            None,
            Duration::from_secs(5),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not public"), "{err}");
    }

    #[test]
    fn tells_components_from_modules() {
        assert!(is_component(b"\0asm\x0d\x00\x01\x00"));
        assert!(!is_component(b"\0asm\x01\x00\x00\x00"));
    }
}
