//! `nunet dashboard`: prints the address of the local daemon's web dashboard, with the token
//! the daemon wrote for this run.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::client::Api;
use crate::home::Home;

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Print `{"url": …, "token_file": …}` instead of the URL alone.
    #[arg(long)]
    json: bool,
}

/// The dashboard's URL for a daemon at `addr:port` (a wildcard address is reached on
/// loopback) with `token` in the fragment, which browsers never send to a server.
fn url(addr: &str, port: u16, token: &str) -> String {
    let host = match addr.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(nunet_config::client_ip(ip), port).to_string(),
        Err(_) => format!("{addr}:{port}"),
    };
    format!("http://{host}/ui/#token={token}")
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
    let url = url(&addr, port, token);
    if a.json {
        println!("{}", json!({"url": url, "token_file": file}));
    } else {
        println!("{url}");
        eprintln!(
            "Open it in a browser on this machine. The token changes at every start of the daemon; \
             anyone who has it can read this node's deployments and their output."
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_reach_loopback_and_carry_the_token_in_the_fragment() {
        assert_eq!(
            url("127.0.0.1", 9999, "ab"),
            "http://127.0.0.1:9999/ui/#token=ab"
        );
        assert_eq!(url("0.0.0.0", 1, "ab"), "http://127.0.0.1:1/ui/#token=ab");
        assert_eq!(url("::1", 2, "ab"), "http://[::1]:2/ui/#token=ab");
    }
}
