//! `nunet dashboard`: prints the address of the local daemon's web dashboard with a one-time
//! code (used once, within a minute) that the page trades for the run's token. The token
//! itself stays in the node's data dir: a URL left in a browser's history, a command line or
//! a terminal is spent.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::client::Api;
use crate::home::Home;

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Print `{"url": …, "expires_in_s": …, "token_file": …}` instead of the URL alone.
    #[arg(long)]
    json: bool,
}

/// `host:port` of a daemon at `addr:port` (a wildcard address is reached on loopback).
fn host(addr: &str, port: u16) -> String {
    match addr.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(nunet_config::client_ip(ip), port).to_string(),
        Err(_) => format!("{addr}:{port}"),
    }
}

/// The dashboard's URL with `code` in the fragment, which browsers never send to a server.
fn url(host: &str, code: &str) -> String {
    format!("http://{host}/ui/#code={code}")
}

pub fn run(home: &Home, a: DashboardArgs) -> Result<i32> {
    let (addr, port) = home.api_endpoint()?;
    // The token file of a daemon that stopped is stale: ask the daemon first.
    Api::new(&addr, port, Duration::from_secs(5)).get("/health")?;
    let data_dir = home.config()?.config.general.data_dir;
    let file = data_dir.join(nunet_dashboard::TOKEN_FILE);
    let token = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "reading {} (the daemon writes it at start; this user must be able to read the node's data dir)",
            file.display()
        )
    })?;
    let token = token.trim();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{} does not hold a dashboard token", file.display());
    }
    let host = host(&addr, port);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    let mut r = agent
        .post(&format!("http://{host}/api/v1/ui/codes"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_empty()
        .with_context(|| format!("asking the daemon at {host} for a dashboard code"))?;
    let status = r.status().as_u16();
    let v: serde_json::Value = r.body_mut().read_json().unwrap_or_default();
    let Some(code) = v["code"].as_str().filter(|_| status == 200) else {
        bail!(
            "the daemon at {host} gave no dashboard code ({status}): {}",
            v["error"]["message"].as_str().unwrap_or("no reason given")
        );
    };
    let url = url(&host, code);
    if a.json {
        println!(
            "{}",
            json!({"url": url, "expires_in_s": v["expires_in_s"], "token_file": file})
        );
    } else {
        println!("{url}");
        eprintln!(
            "Open it in a browser on this machine within a minute; it works once. The page then \
             keeps this run's token: anyone with it can read this node's deployments and output."
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_reach_loopback_and_carry_the_code_in_the_fragment() {
        assert_eq!(
            url(&host("127.0.0.1", 9999), "ab"),
            "http://127.0.0.1:9999/ui/#code=ab"
        );
        assert_eq!(host("0.0.0.0", 1), "127.0.0.1:1");
        assert_eq!(host("::1", 2), "[::1]:2");
    }
}
