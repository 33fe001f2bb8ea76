//! Units used in ensemble files, parsed into bytes, hertz, milliseconds and bits per second.
//!
//! * Sizes (`ram.size`, `disk.size`, `gpus[].vram`): a bare number means **GiB** (NuNet's
//!   default, fractions allowed: `0.5` = 512 MiB). Suffixes: `B`; SI `KB MB GB TB PB` (powers of
//!   1000); IEC `KiB MiB GiB TiB PiB` (powers of 1024); and the Docker-style single letters
//!   `K M G T P`, read as IEC. Case-insensitive, an optional space before the suffix.
//! * Clock speeds: a bare number means **GHz**; suffixes `Hz kHz MHz GHz THz`.
//! * Durations: a bare number means seconds; Go-style `300ms`, `30s`, `1m30s`, `1.5h`.
//! * RTT (`edge_constraints[].rtt`): a bare number means **milliseconds**; or a duration.
//! * Bandwidth (`edge_constraints[].bw`): a bare number means **bits/s**; suffixes
//!   `bps kbps Mbps Gbps Tbps` (SI, bits; also `bit/s`, `Kbit`, …).

use crate::limits;

const KIB: f64 = 1024.0;

fn split_number(text: &str) -> Option<(f64, String)> {
    let t = text.trim();
    let end = t
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E')))
        .map_or(t.len(), |(i, _)| i);
    // `e` may start a unit only when it is not an exponent; none of our units start with it.
    let (num, unit) = t.split_at(end);
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() {
        return None;
    }
    Some((n, unit.trim().to_ascii_lowercase()))
}

/// `value` rounded to the nearest unit (sizes like 0.1 GiB are not whole bytes) when that is
/// from 0 to `max` ([`crate::limits`]); never clamped.
fn finish(value: f64, max: u64) -> Option<u64> {
    if !(value.is_finite() && value >= 0.0) {
        return None;
    }
    let r = value.round();
    // `max as f64` may round up past `max`: compare as floats first (anything at or above
    // 2^64 would saturate), then exactly.
    if r >= 18_446_744_073_709_551_616.0 {
        return None;
    }
    let n = r as u64;
    (n <= max).then_some(n)
}

/// A size in bytes. `2`, `"2GiB"`, `"512 MiB"`, `"1.5GB"`, `"100m"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("expected a size like \"2GiB\", \"512MiB\" or 2 (GiB), got {text:?}");
    let (n, unit) = split_number(text).ok_or_else(bad)?;
    let mult = match unit.as_str() {
        "" | "gib" | "g" | "gi" => KIB.powi(3),
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "pb" => 1e15,
        "kib" | "k" | "ki" => KIB,
        "mib" | "m" | "mi" => KIB.powi(2),
        "tib" | "t" | "ti" => KIB.powi(4),
        "pib" | "p" | "pi" => KIB.powi(5),
        _ => return Err(bad()),
    };
    finish(n * mult, limits::MAX_SIZE).ok_or_else(bad)
}

/// A clock speed in hertz. `2.4`, `"2.4GHz"`, `"2400 MHz"`.
pub fn parse_frequency(text: &str) -> Result<u64, String> {
    let bad = || format!("expected a clock speed like \"2.4GHz\" or 2.4 (GHz), got {text:?}");
    let (n, unit) = split_number(text).ok_or_else(bad)?;
    let mult = match unit.as_str() {
        "" | "ghz" | "g" => 1e9,
        "hz" => 1.0,
        "khz" | "k" => 1e3,
        "mhz" | "m" => 1e6,
        "thz" => 1e12,
        _ => return Err(bad()),
    };
    finish(n * mult, limits::MAX_CLOCK_HZ).ok_or_else(bad)
}

/// A duration in milliseconds; a bare number is seconds. `30`, `"30s"`, `"1m30s"`, `"250ms"`.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    duration_ms(text, 1000.0).ok_or_else(|| {
        format!("expected a duration like \"30s\", \"1m30s\" or \"500ms\", got {text:?}")
    })
}

/// A round-trip time in milliseconds; a bare number is milliseconds. `20`, `"20ms"`, `"0.5s"`.
pub fn parse_rtt_ms(text: &str) -> Result<f64, String> {
    let bad = || format!("expected a round-trip time like 20 (ms) or \"20ms\", got {text:?}");
    if let Ok(n) = text.trim().parse::<f64>() {
        return if n.is_finite() && n >= 0.0 {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let total = duration_parts(text).ok_or_else(bad)?;
    Ok(total)
}

fn duration_ms(text: &str, bare_unit_ms: f64) -> Option<u64> {
    if let Ok(n) = text.trim().parse::<f64>() {
        return finish(n * bare_unit_ms, limits::MAX_DURATION_MS);
    }
    finish(duration_parts(text)?, limits::MAX_DURATION_MS)
}

/// Sums Go-style duration parts (`1h2m3.5s`), in milliseconds.
fn duration_parts(text: &str) -> Option<f64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(num_end);
        let n: f64 = num.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let mult = match unit.trim() {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        total += n * mult;
        rest = tail.trim_start();
    }
    total.is_finite().then_some(total)
}

/// A bandwidth in bits per second. `1000000`, `"100Mbps"`, `"1 Gbit/s"`.
pub fn parse_bandwidth(text: &str) -> Result<f64, String> {
    let bad =
        || format!("expected a bandwidth like \"100Mbps\" or a number of bits/s, got {text:?}");
    let (n, unit) = split_number(text).ok_or_else(bad)?;
    let unit = unit.trim_end_matches("/s").trim_end_matches("ps");
    let unit = unit
        .strip_suffix("bit")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        _ => return Err(bad()),
    };
    let v = n * mult;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(bad())
    }
}

/// Bytes as a short human string: `24GiB`, `1.5GiB`, `512MiB`, `100B`.
pub fn format_size(bytes: u64) -> String {
    let units = [
        ("PiB", KIB.powi(5)),
        ("TiB", KIB.powi(4)),
        ("GiB", KIB.powi(3)),
        ("MiB", KIB * KIB),
        ("KiB", KIB),
    ];
    let b = bytes as f64;
    for (name, size) in units {
        if b >= size {
            return format!("{}{name}", trim_float(b / size));
        }
    }
    format!("{bytes}B")
}

/// Hertz as GHz/MHz: `2.4GHz`.
pub fn format_frequency(hz: u64) -> String {
    if hz >= 1_000_000_000 {
        format!("{}GHz", trim_float(hz as f64 / 1e9))
    } else {
        format!("{}MHz", trim_float(hz as f64 / 1e6))
    }
}

/// Bits per second with an SI suffix: `100Mbps`.
pub fn format_bandwidth(bps: f64) -> String {
    for (name, size) in [("Tbps", 1e12), ("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3)] {
        if bps >= size {
            return format!("{}{name}", trim_float(bps / size));
        }
    }
    format!("{}bps", trim_float(bps))
}

/// A float with at most two decimals and no trailing zeros.
pub fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_default_to_gib_and_accept_si_and_iec() {
        assert_eq!(parse_size("2").unwrap(), 2 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("0.5").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_size("512MiB").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_size("512 MB").unwrap(), 512_000_000);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("4kb").unwrap(), 4000);
        assert_eq!(parse_size("100m").unwrap(), 100 * 1024 * 1024);
        assert!(parse_size("lots").unwrap_err().contains("\"lots\""));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1e300").is_err());
        // 8192 PiB is 2^63 bytes: one more than a signed 64-bit limit holds.
        assert!(parse_size("8192PiB").is_err());
        assert!(parse_size("8191.99PiB").is_ok());
        assert!(parse_size("NaN").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn frequencies_default_to_ghz() {
        assert_eq!(parse_frequency("2.4").unwrap(), 2_400_000_000);
        assert_eq!(parse_frequency("2400MHz").unwrap(), 2_400_000_000);
        assert_eq!(parse_frequency("3 GHz").unwrap(), 3_000_000_000);
        assert!(parse_frequency("fast").is_err());
    }

    #[test]
    fn durations_rtt_and_bandwidth() {
        assert_eq!(parse_duration_ms("30").unwrap(), 30_000);
        assert_eq!(parse_duration_ms("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        assert_eq!(parse_duration_ms("1.5h").unwrap(), 5_400_000);
        assert!(parse_duration_ms("soon").is_err());
        assert_eq!(parse_rtt_ms("20").unwrap(), 20.0);
        assert_eq!(parse_rtt_ms("0.5s").unwrap(), 500.0);
        assert_eq!(parse_bandwidth("1000").unwrap(), 1000.0);
        assert_eq!(parse_bandwidth("100Mbps").unwrap(), 1e8);
        assert_eq!(parse_bandwidth("1 Gbit/s").unwrap(), 1e9);
        assert!(parse_bandwidth("fast").is_err());
    }

    #[test]
    fn formatting_round_trips_common_values() {
        assert_eq!(format_size(24 * 1024 * 1024 * 1024), "24GiB");
        assert_eq!(format_size(1536 * 1024 * 1024), "1.5GiB");
        assert_eq!(format_size(100), "100B");
        assert_eq!(format_frequency(2_400_000_000), "2.4GHz");
        assert_eq!(format_bandwidth(1e8), "100Mbps");
    }
}
