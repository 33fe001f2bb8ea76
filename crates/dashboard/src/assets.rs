//! The dashboard's files, embedded at compile time from `dist/` (see `build.rs`), with the
//! content type and caching each needs. Vite names every file under `assets/` by a hash of
//! its content, so those are cached for good; `index.html` is revalidated every time.

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its bytes.
    pub bytes: &'static [u8],
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Whether its name changes with its content (cache it for good).
    pub immutable: bool,
}

/// `Content-Type` by extension; anything unknown is served as bytes, never sniffed.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// The file at `path` (relative to `/ui/`; empty: `index.html`).
pub fn get(path: &str) -> Option<Asset> {
    let path = if path.is_empty() { "index.html" } else { path };
    FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(p, bytes)| Asset {
            bytes,
            content_type: content_type(p),
            immutable: p.starts_with("assets/"),
        })
}

/// Every embedded path.
pub fn paths() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(p, _)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_scripts_are_embedded_with_their_types() {
        let index = get("").expect("index.html");
        assert!(index.content_type.starts_with("text/html"));
        assert!(!index.immutable);
        let html = std::str::from_utf8(index.bytes).expect("utf-8");
        // Every script and stylesheet the page names is embedded, under /ui/ (no CDN).
        let mut named = 0;
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let url = part.split('"').next().unwrap_or_default();
                if url.starts_with("data:") || url.starts_with('#') {
                    continue;
                }
                let rel = url
                    .strip_prefix("/ui/")
                    .unwrap_or_else(|| panic!("{url} is not under /ui/"));
                let a = get(rel).unwrap_or_else(|| panic!("{rel} is not embedded"));
                assert!(a.immutable, "{rel}");
                named += 1;
            }
        }
        assert!(named >= 2, "a script and a stylesheet: {html}");
        assert!(paths().any(|p| p.ends_with(".js")));
        assert!(get("missing.js").is_none());
        assert_eq!(content_type("x.bin"), "application/octet-stream");
    }
}
