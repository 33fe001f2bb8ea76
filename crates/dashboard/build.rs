//! Embeds the built dashboard (`dist/`, made by `npm run build` in `web/`) into the crate: a
//! sorted table of relative paths and `include_bytes!` of each file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for e in entries {
        let p = e
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dist = root.join("dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    assert!(
        dist.join("index.html").is_file(),
        "{} has no index.html: build the dashboard (scripts/dashboard-build)",
        dist.display()
    );
    let mut files = Vec::new();
    walk(&dist, &mut files);
    files.sort();
    let mut src = String::from(
        "/// The built dashboard: path under `dist/` → bytes.\npub(crate) static FILES: &[(&str, &[u8])] = &[\n",
    );
    for p in &files {
        let rel = p
            .strip_prefix(&dist)
            .expect("under dist")
            .to_string_lossy()
            .replace('\\', "/");
        writeln!(
            src,
            "    ({rel:?}, include_bytes!({:?})),",
            p.display().to_string()
        )
        .expect("write");
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("assets.rs");
    std::fs::write(&out, src).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
