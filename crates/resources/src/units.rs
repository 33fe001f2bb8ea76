//! Units: CPU in millicores, sizes in bytes; people read cores and GiB.

/// One GiB in bytes.
pub const GIB: u64 = 1 << 30;

/// `1536 << 20` → `"1.5 GiB"`; whole numbers without decimals (`"2 GiB"`).
pub fn fmt_bytes(b: u64) -> String {
    let g = b as f64 / GIB as f64;
    let r = (g * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0} GiB")
    } else {
        format!("{r:.1} GiB")
    }
}

/// `1500` → `"1.5 cores"`, `1000` → `"1 core"`.
pub fn fmt_cores(milli: u64) -> String {
    let c = milli as f64 / 1000.0;
    let s = format!("{:.2}", c);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if milli == 1000 {
        "1 core".into()
    } else {
        format!("{s} cores")
    }
}

/// GiB (possibly fractional, from a command line) to bytes; `None` if negative or not finite.
pub fn gib_to_bytes(g: f64) -> Option<u64> {
    (g.is_finite() && g >= 0.0 && g * (GIB as f64) < u64::MAX as f64)
        .then(|| (g * GIB as f64).round() as u64)
}

/// Cores (possibly fractional) to millicores; `None` if negative or not finite.
pub fn cores_to_milli(c: f64) -> Option<u64> {
    (0.0..1e12)
        .contains(&c)
        .then(|| (c * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_bytes(2 * GIB), "2 GiB");
        assert_eq!(fmt_bytes(23 * GIB + 400 * (1 << 20)), "23.4 GiB");
        assert_eq!(fmt_cores(1000), "1 core");
        assert_eq!(fmt_cores(2500), "2.5 cores");
        assert_eq!(fmt_cores(16000), "16 cores");
        assert_eq!(gib_to_bytes(1.5), Some(1536 << 20));
        assert_eq!(gib_to_bytes(-1.0), None);
        assert_eq!(gib_to_bytes(f64::NAN), None);
        assert_eq!(cores_to_milli(0.25), Some(250));
    }
}
