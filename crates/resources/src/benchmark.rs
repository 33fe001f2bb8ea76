//! Machine benchmark run at onboarding: CPU integer throughput on one core and on all cores,
//! memory copy bandwidth, sequential disk write (synced) and read in the data dir. Every part
//! is bounded by time (and the disk test by size), so the whole run stays under
//! [`BenchBudget::total`] (≤ 10 s by default it is about 4.5 s).
//!
//! The read figure comes right after the write and may be served from the page cache; it is
//! labelled as what it is, a sequential read of a freshly written file.

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use nunet_store::BenchmarkRecord;

/// Time and size limits for one run.
#[derive(Clone, Copy, Debug)]
pub struct BenchBudget {
    /// Single-core CPU test.
    pub cpu_single: Duration,
    /// All-core CPU test.
    pub cpu_multi: Duration,
    /// Memory copy test.
    pub memory: Duration,
    /// Disk write test (the read is bounded by what was written).
    pub disk: Duration,
    /// Most bytes written by the disk test.
    pub disk_max_bytes: u64,
}

impl Default for BenchBudget {
    fn default() -> Self {
        BenchBudget {
            cpu_single: Duration::from_millis(1000),
            cpu_multi: Duration::from_millis(1000),
            memory: Duration::from_millis(500),
            disk: Duration::from_millis(1500),
            disk_max_bytes: 256 << 20,
        }
    }
}

impl BenchBudget {
    /// A few tens of milliseconds in all (tests).
    pub fn quick() -> Self {
        BenchBudget {
            cpu_single: Duration::from_millis(20),
            cpu_multi: Duration::from_millis(20),
            memory: Duration::from_millis(20),
            disk: Duration::from_millis(20),
            disk_max_bytes: 4 << 20,
        }
    }

    /// Upper bound of the run's wall time (the disk read is at most as long as the write,
    /// plus slack for thread start-up and the final sync).
    pub fn total(&self) -> Duration {
        self.cpu_single + self.cpu_multi + self.memory + self.disk * 2 + Duration::from_millis(500)
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The disk test could not write or read its scratch file.
    #[error("disk benchmark in {dir}: {source}")]
    Disk {
        /// Directory.
        dir: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// One "op": a multiply-xorshift step, enough to keep an ALU busy and not fold away.
#[inline]
fn mix(x: u64) -> u64 {
    let x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (x >> 29);
    x ^ (x << 7)
}

fn spin(d: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 0x1234_5678_u64;
    let mut ops = 0u64;
    while start.elapsed() < d {
        for _ in 0..10_000 {
            x = mix(black_box(x));
        }
        ops += 10_000;
    }
    black_box(x);
    ops
}

fn per_s(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

fn cpu(budget: &BenchBudget, threads: u32) -> (f64, f64) {
    let t = Instant::now();
    let single = per_s(spin(budget.cpu_single) as f64, t.elapsed());
    let t = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| spin(budget.cpu_multi)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    (single, per_s(total as f64, t.elapsed()))
}

fn memory(d: Duration) -> f64 {
    const SIZE: usize = 32 << 20;
    let src = vec![1u8; SIZE];
    let mut dst = vec![0u8; SIZE];
    let t = Instant::now();
    let mut bytes = 0u64;
    while t.elapsed() < d {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
        bytes += SIZE as u64;
    }
    per_s(bytes as f64, t.elapsed())
}

fn disk(dir: &Path, d: Duration, max: u64) -> std::io::Result<(f64, f64)> {
    const CHUNK: usize = 4 << 20;
    let path = dir.join(format!(".nunet-bench-{}", std::process::id()));
    let result = (|| {
        let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect();
        let mut f = std::fs::File::create(&path)?;
        let t = Instant::now();
        let mut written = 0u64;
        while written < max && (written == 0 || t.elapsed() < d) {
            f.write_all(&chunk)?;
            written += CHUNK as u64;
        }
        f.sync_all()?;
        let w = per_s(written as f64, t.elapsed());
        drop(f);
        let mut f = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; CHUNK];
        let t = Instant::now();
        let mut read = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            read += n as u64;
        }
        Ok((w, per_s(read as f64, t.elapsed())))
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Runs the benchmark, writing its scratch file in `data_dir`.
pub fn run(
    data_dir: &Path,
    budget: &BenchBudget,
    now_ms: i64,
) -> Result<BenchmarkRecord, BenchError> {
    let started = Instant::now();
    let threads = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1);
    let (single, multi) = cpu(budget, threads);
    let mem = memory(budget.memory);
    let (w, r) =
        disk(data_dir, budget.disk, budget.disk_max_bytes).map_err(|source| BenchError::Disk {
            dir: data_dir.display().to_string(),
            source,
        })?;
    Ok(BenchmarkRecord {
        taken_at_ms: now_ms,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        threads,
        cpu_single_ops_s: single,
        cpu_multi_ops_s: multi,
        mem_bandwidth_bytes_s: mem,
        disk_write_bytes_s: w,
        disk_read_bytes_s: r,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quick_run_is_bounded_and_measures_something() {
        let tmp = tempfile::tempdir().unwrap();
        let b = BenchBudget::quick();
        let t = Instant::now();
        let r = run(tmp.path(), &b, 5).unwrap();
        assert!(
            t.elapsed() < b.total() + Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        assert!(r.cpu_single_ops_s > 0.0 && r.cpu_multi_ops_s > 0.0);
        assert!(r.mem_bandwidth_bytes_s > 0.0);
        assert!(r.disk_write_bytes_s > 0.0 && r.disk_read_bytes_s > 0.0);
        assert_eq!(r.taken_at_ms, 5);
        // The scratch file is gone.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        assert!(BenchBudget::default().total() <= Duration::from_secs(10));
    }

    #[test]
    fn unwritable_dir_is_an_error() {
        let err = run(Path::new("/nonexistent/dir"), &BenchBudget::quick(), 0).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir"), "{err}");
    }
}
