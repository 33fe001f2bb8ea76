//! `dms_config.json` as the daemon and `nunet config` load it: the file's text parsed, every
//! key and value checked over the defaults, the typed config validated; plus one
//! `DMS_<KEY>` environment override and `nunet config set`'s value parsing. Never panics; a
//! configuration that loads writes back to a file that loads to the same configuration.
#![no_main]

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nunet_config::Config;
use nunet_config::keys::{env_name, get, leaf_keys, parse_value};
use nunet_config::load::{defaults_value, parse_text, resolve};

const HOME: &str = "/nonexistent/nunet-fuzz";

fn known() -> &'static (serde_json::Value, Vec<String>) {
    static K: OnceLock<(serde_json::Value, Vec<String>)> = OnceLock::new();
    K.get_or_init(|| {
        let d = defaults_value(Path::new(HOME));
        let keys = leaf_keys(&d);
        (d, keys)
    })
}

/// What the daemon computes from a configuration that loaded, before anything can fail.
fn derive(c: &Config) {
    // The VM executor's boot watch: now + timeout.
    let _ = Instant::now() + Duration::from_secs(c.job.vm_boot_timeout_secs);
    let _ = Duration::from_micros(c.subnet.datagram_busy_poll_us.into());
    for addr in [&c.rest.addr, &c.profiler.addr] {
        addr.parse::<IpAddr>().expect("validated: an IP address");
    }
    assert!(c.general.port_available_range_from <= c.general.port_available_range_to);
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let home = Path::new(HOME);
    let (defaults, keys) = known();
    // The whole input as the file.
    if let Ok(file) = parse_text(text, Path::new("dms_config.json"))
        && let Ok(r) = resolve(home, &file, Some("dms_config.json"), &|_| None)
    {
        let config = r.config;
        derive(&config);
        let written = serde_json::to_string(&config).expect("a config encodes");
        let reread = parse_text(&written, Path::new("dms_config.json")).expect("rereads");
        let again = resolve(home, &reread, None, &|_| None)
            .expect("a written config loads")
            .config;
        assert_eq!(
            serde_json::to_value(&again).ok(),
            serde_json::to_value(&config).ok(),
            "a written config loads differently"
        );
    }
    // The input as one environment variable's value (the first byte picks the key).
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    let key = &keys[usize::from(pick) % keys.len()];
    let var = env_name(key);
    let empty = serde_json::Value::Object(Default::default());
    if let Ok(r) = resolve(home, &empty, None, &|k| {
        (k == var).then(|| value.to_string())
    }) {
        derive(&r.config);
    }
    if let Some(like) = get(defaults, key) {
        let _ = parse_value(value, like);
    }
});
