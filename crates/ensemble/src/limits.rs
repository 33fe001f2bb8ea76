//! The bounds every number of an ensemble must respect, whether it comes from a file (the
//! decoder applies them, so `nunet validate` reports them) or arrives already decoded from
//! another node or a client ([`crate::check`] applies the same functions).
//!
//! The bounds keep every value convertible without wrapping or saturating where it is used:
//! millicores in the accounting, nano-CPUs and signed 64-bit byte counts in container
//! runtimes, milliseconds in timers. A value outside them is refused, never clamped.

use std::ops::RangeInclusive;

use crate::units::{format_size, trim_float};

/// Fewest cores an allocation may ask for: one millicore, the accounting's unit.
pub const MIN_CORES: f64 = 0.001;
/// Most cores an allocation may ask for (2^20, like `threads`).
pub const MAX_CORES: f64 = 1_048_576.0;
/// Largest size in bytes: what a signed 64-bit field (Docker's memory limit) holds.
pub const MAX_SIZE: u64 = i64::MAX as u64;
/// Highest clock speed in hertz (1 PHz).
pub const MAX_CLOCK_HZ: u64 = 1_000_000_000_000_000;
/// Longest duration in milliseconds (about 31,000 years).
pub const MAX_DURATION_MS: u64 = 1_000_000_000_000_000;
/// Hardware threads an allocation may ask for.
pub const THREADS: RangeInclusive<u64> = 1..=1 << 20;
/// Standby copies a node may have.
pub const REDUNDANCY: RangeInclusive<u64> = 0..=1000;
/// Public (host) ports: unprivileged ones only.
pub const PUBLIC_PORTS: RangeInclusive<u64> = 1025..=65535;
/// Private ports inside an allocation.
pub const PRIVATE_PORTS: RangeInclusive<u64> = 1..=65535;

/// CPU cores of a request: finite, at least [`MIN_CORES`], at most [`MAX_CORES`].
pub fn cores(n: f64) -> Result<(), String> {
    if n.is_nan() || n <= 0.0 {
        return Err(format!("cores must be positive, got {}", describe(n)));
    }
    if !(MIN_CORES..=MAX_CORES).contains(&n) {
        return Err(format!(
            "cores must be from {MIN_CORES} to {}, got {}",
            trim_float(MAX_CORES),
            describe(n)
        ));
    }
    Ok(())
}

/// CPU cores of a total or an offer: like [`cores`], but zero is allowed (a node without
/// allocations, a provider with nothing free).
pub fn cores_amount(n: f64) -> Result<(), String> {
    if n == 0.0 { Ok(()) } else { cores(n) }
}

/// A size in bytes: at most [`MAX_SIZE`].
pub fn size(bytes: u64) -> Result<(), String> {
    if bytes > MAX_SIZE {
        return Err(format!(
            "{bytes} bytes is larger than the largest size, {} ({MAX_SIZE} bytes)",
            format_size(MAX_SIZE)
        ));
    }
    Ok(())
}

/// The memory of a request: positive (a runtime reads 0 as "no limit") and a valid [`size`].
pub fn ram_size(bytes: u64) -> Result<(), String> {
    if bytes == 0 {
        return Err(
            "ram size must be positive (0 would run the allocation without a memory limit)".into(),
        );
    }
    size(bytes)
}

/// A clock speed in hertz: at most [`MAX_CLOCK_HZ`].
pub fn clock(hz: u64) -> Result<(), String> {
    if hz > MAX_CLOCK_HZ {
        return Err(format!(
            "{hz} Hz is above the highest clock speed, {MAX_CLOCK_HZ} Hz"
        ));
    }
    Ok(())
}

/// A duration in milliseconds: at most [`MAX_DURATION_MS`].
pub fn duration_ms(ms: u64) -> Result<(), String> {
    if ms > MAX_DURATION_MS {
        return Err(format!(
            "{ms} ms is longer than the longest duration, {MAX_DURATION_MS} ms"
        ));
    }
    Ok(())
}

/// A whole number within `range`.
pub fn within(n: u64, range: &RangeInclusive<u64>) -> Result<(), String> {
    if range.contains(&n) {
        Ok(())
    } else {
        Err(format!(
            "expected a whole number from {} to {}, got {n}",
            range.start(),
            range.end()
        ))
    }
}

/// A round-trip time bound in milliseconds: finite and positive.
pub fn rtt_ms(ms: f64) -> Result<(), String> {
    if ms.is_finite() && ms > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "rtt must be greater than 0 ms, got {}",
            describe(ms)
        ))
    }
}

/// A bandwidth bound in bits per second: finite and not negative.
pub fn bandwidth(bps: f64) -> Result<(), String> {
    if bps.is_finite() && bps >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "bandwidth must be a finite number of bits/s, not negative, got {}",
            describe(bps)
        ))
    }
}

/// A float as people read it in messages; NaN and infinities spelled out.
fn describe(n: f64) -> String {
    if n.is_finite() {
        let short = trim_float(n);
        // trim_float keeps two decimals: tiny values would read as 0.
        if short.parse::<f64>().is_ok_and(|s| s == n) {
            short
        } else {
            n.to_string()
        }
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_what_would_wrap_or_mean_unlimited() {
        assert!(cores(1.0).is_ok());
        assert!(cores(MIN_CORES).is_ok());
        for bad in [0.0, -4.0, f64::NAN, f64::INFINITY, 1e300, 0.0001] {
            assert!(cores(bad).is_err(), "{bad}");
        }
        assert!(cores(-4.0).is_err_and(|m| m.contains("-4")));
        assert!(cores_amount(0.0).is_ok());
        assert!(cores_amount(-1.0).is_err());
        assert!(ram_size(0).is_err());
        assert!(ram_size(1).is_ok());
        assert!(size(MAX_SIZE).is_ok());
        assert!(size(MAX_SIZE + 1).is_err());
        assert!(i64::try_from(MAX_SIZE).is_ok());
        assert!(clock(MAX_CLOCK_HZ + 1).is_err());
        assert!(duration_ms(u64::MAX).is_err());
        assert!(within(80, &PUBLIC_PORTS).is_err());
        assert!(rtt_ms(0.0).is_err());
        assert!(rtt_ms(f64::NAN).is_err());
        assert!(bandwidth(-1.0).is_err());
        // Nano-CPUs of the largest request fit in Docker's signed 64-bit field.
        assert!(MAX_CORES * 1e9 < i64::MAX as f64);
    }
}
