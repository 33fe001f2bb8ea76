//! NuNet's token format: the bytes its tokens are signed over.
//!
//! A NuNet token is signed over `"dms:token:"` followed by Go's `encoding/json` encoding of
//! the token without its outer `sig` (`lib/ucan/token.go`, `SignatureData`). The verifier
//! re-encodes what it decoded, so this module reproduces Go's encoder exactly for the token's
//! types: fields in declaration order (`act, iss, sub, aud, topic?, cap, nonce, exp, depth?,
//! chain?, sig?`), DIDs as `{"uri":…}` (`{}` when empty), `[]byte` as padded standard base64,
//! a nil slice as `null`, and Go's string escaping (HTML-safe: `<`, `>`, `&`, U+2028 and
//! U+2029 as `\u…` escapes; `\b` `\f` `\n` `\r` `\t` short; other controls `\u00xx`).
//!
//! A NuNet token chained on a token of this node's format carries that parent as this node
//! serialises it (compact `serde_json`): such mixed chains never reach NuNet's nodes, which
//! could not verify the parent anyway, and each link's signature is checked by its own rule.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::token::{DmsToken, Token, TokenFormat};

/// Domain prefix of NuNet's token signatures.
pub const NUNET_SIGNING_PREFIX: &[u8] = b"dms:token:";

/// `"dms:token:"` ‖ Go JSON of `t` without its `sig`.
pub fn signing_bytes(t: &DmsToken) -> Vec<u8> {
    let mut out = String::with_capacity(512);
    out.push_str(std::str::from_utf8(NUNET_SIGNING_PREFIX).unwrap_or_default());
    dms_body(&mut out, t, false);
    out.into_bytes()
}

/// Go JSON of a whole token (`{"dms":{…}}`, with its signature), as a chain link is encoded.
fn token(out: &mut String, t: &Token) {
    let d = t.dms();
    match d.format {
        TokenFormat::NuNet => {
            out.push_str("{\"dms\":");
            dms_body(out, d, true);
            out.push('}');
        }
        TokenFormat::Native => out.push_str(&serde_json::to_string(t).unwrap_or_default()),
    }
}

fn dms_body(out: &mut String, t: &DmsToken, with_sig: bool) {
    out.push_str("{\"act\":");
    string(out, &t.act.to_string());
    out.push_str(",\"iss\":");
    did(out, Some(t.iss.as_str()));
    out.push_str(",\"sub\":");
    did(out, Some(t.sub.as_str()));
    out.push_str(",\"aud\":");
    did(out, t.aud.as_ref().map(|d| d.as_str()));
    if !t.topic.is_empty() {
        out.push_str(",\"topic\":");
        list(out, t.topic.iter().map(|c| c.as_str()));
    }
    out.push_str(",\"cap\":");
    if t.cap.is_empty() && t.cap_null {
        out.push_str("null");
    } else {
        list(out, t.cap.iter().map(|c| c.as_str()));
    }
    out.push_str(",\"nonce\":");
    if t.nonce.is_empty() && t.nonce_null {
        out.push_str("null");
    } else {
        bytes(out, &t.nonce);
    }
    out.push_str(",\"exp\":");
    out.push_str(&t.exp.to_string());
    if t.depth != 0 {
        out.push_str(",\"depth\":");
        out.push_str(&t.depth.to_string());
    }
    if let Some(c) = &t.chain {
        out.push_str(",\"chain\":");
        token(out, c);
    }
    if with_sig && !t.sig.is_empty() {
        out.push_str(",\"sig\":");
        bytes(out, &t.sig);
    }
    out.push('}');
}

fn did(out: &mut String, uri: Option<&str>) {
    match uri {
        Some(u) if !u.is_empty() => {
            out.push_str("{\"uri\":");
            string(out, u);
            out.push('}');
        }
        _ => out.push_str("{}"),
    }
}

fn list<'a>(out: &mut String, items: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, s);
    }
    out.push(']');
}

fn bytes(out: &mut String, b: &[u8]) {
    out.push('"');
    out.push_str(&B64.encode(b));
    out.push('"');
}

/// Go's `encodeState.string` with HTML escaping on (Go ≥ 1.22 for `\b` and `\f`).
pub fn string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let b = c as u32 as u8;
                out.push_str("\\u00");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(s: &str) -> String {
        let mut o = String::new();
        string(&mut o, s);
        o
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        assert_eq!(go("/dms/node"), "\"/dms/node\"");
        assert_eq!(go("a<b>&c"), "\"a\\u003cb\\u003e\\u0026c\"");
        assert_eq!(go("q\"\\"), "\"q\\\"\\\\\"");
        assert_eq!(
            go("\n\r\t\u{8}\u{c}\u{1}\u{1f}"),
            "\"\\n\\r\\t\\b\\f\\u0001\\u001f\""
        );
        assert_eq!(go("\u{2028}\u{2029}é\u{7f}/"), "\"\\u2028\\u2029é\u{7f}/\"");
    }
}
