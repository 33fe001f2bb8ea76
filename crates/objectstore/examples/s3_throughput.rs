//! Throughput of publishing a file to an S3-compatible store and staging it back, as a
//! provider does for an allocation's outputs and inputs (used by `bench/data.sh`).
//!
//! `s3_throughput ENDPOINT REGION CREDENTIALS_FILE SIZE_MIB` prints `bucket NAME`,
//! `publish MIB_PER_S` and `stage MIB_PER_S` lines; the bucket it makes is left in the store
//! (`bench/data.sh` times a plain client on it).

use std::time::{Duration, Instant};

use nunet_ensemble::data::S3Credentials;
use nunet_ensemble::spec::ObjectLocation;
use nunet_objectstore::Store;
use nunet_objectstore::transfer::{publish, stage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, region, creds, size] = args.as_slice() else {
        return Err("usage: s3_throughput ENDPOINT REGION CREDENTIALS_FILE SIZE_MIB".into());
    };
    let creds = S3Credentials::parse(&std::fs::read_to_string(creds)?)?;
    let mib: u64 = size.parse()?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let loc = ObjectLocation {
        endpoint: endpoint.clone(),
        region: region.clone(),
        bucket: format!("bench-{}-{}", std::process::id(), stamp.as_millis()),
        key: String::new(),
    };
    let store = Store::new(&loc, Some(&creds), true, Duration::from_secs(600))?;
    store.create_bucket()?;
    let out = tempfile::tempdir()?;
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(out.path().join("data.bin"))?;
        for _ in 0..mib {
            f.write_all(&block)?;
        }
        f.sync_all()?;
    }
    let budget = (mib + 1) << 20;
    let t = Instant::now();
    publish(&store, "bench/", out.path(), budget)?;
    let up = t.elapsed().as_secs_f64();
    let back = tempfile::tempdir()?;
    let t = Instant::now();
    stage(&store, "bench/", back.path(), budget)?;
    let down = t.elapsed().as_secs_f64();
    if std::fs::metadata(back.path().join("data.bin"))?.len() != mib << 20 {
        return Err("the staged file is not the published one".into());
    }
    println!("bucket {}", loc.bucket);
    println!("publish {:.0}", mib as f64 / up);
    println!("stage {:.0}", mib as f64 / down);
    Ok(())
}
