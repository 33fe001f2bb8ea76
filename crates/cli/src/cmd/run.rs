//! `nunet run`: the daemon.

use anyhow::{Context, Result};
use clap::Args;
use nunet_node::{Node, NodeOptions};

use crate::home::Home;
use crate::runinfo::{self, RunInfo};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Key and capability context of the node.
    #[arg(short = 'c', long = "context", default_value = "dms")]
    context: String,
}

pub fn run(home: &Home, args: RunArgs) -> Result<i32> {
    let loaded = home.config()?;
    let config = loaded.config.clone();
    let logging = init_logging(&config)?;
    for w in &loaded.warnings {
        tracing::warn!(config = ?loaded.file, "{w}");
    }
    let contexts = home.contexts()?;
    let anchors = contexts.load(&args.context).with_context(|| {
        format!(
            "loading capability context {:?} (create it with `nunet cap new {}`)",
            args.context, args.context
        )
    })?;
    let key = home.unlock(&args.context)?;
    if key.did() != anchors.did {
        anyhow::bail!(
            "key {:?} does not match capability context {:?}",
            args.context,
            args.context
        );
    }
    std::fs::create_dir_all(&config.general.data_dir)
        .with_context(|| format!("creating {}", config.general.data_dir.display()))?;
    let data_dir = config.general.data_dir.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let node = Node::start(NodeOptions {
            config,
            key,
            anchors,
            context: Some((contexts, args.context.clone())),
            verify_capabilities: true,
            log: Some(logging),
        })
        .await?;
        let peer_id = node.system.peer_id();
        nunet_traces::describe_node(&node.system.did().to_string(), peer_id);
        let listen: Vec<String> = node
            .network
            .listen_addrs()
            .await
            .iter()
            .map(|a| format!("{a}/p2p/{peer_id}"))
            .collect();
        tracing::info!(did = %node.system.did(), %peer_id, ?listen, api = %node.api_addr, config = ?loaded.file, "node started");
        println!("did {}", node.system.did());
        println!("peer_id {peer_id}");
        for a in &listen {
            println!("listen {a}");
        }
        println!("api http://{}/api/v1", node.api_addr);
        // What was bound (ports 0 resolved), for the CLI, `nunet devnet` and scripts.
        let report = RunInfo {
            pid: std::process::id(),
            did: node.system.did().to_string(),
            peer_id: peer_id.to_string(),
            rest: node.api_addr,
            listen,
        };
        if let Err(e) = report.write(&data_dir) {
            node.shutdown().await;
            return Err(e);
        }
        println!("report {}", runinfo::path(&data_dir).display());
        wait_for_signal().await;
        tracing::info!("shutting down");
        node.shutdown().await;
        RunInfo::remove_own(&data_dir);
        // Spans still queued reach the collector (if one answers) before the process ends.
        nunet_traces::flush(std::time::Duration::from_secs(2));
        tracing::info!("stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Logging as `observability.logging` says: the level (`general.debug` means `debug`), and
/// JSON lines in `file` (relative to the node home) rotated by `rotation`. `RUST_LOG`, when
/// set, replaces the level until it is changed at run time.
fn init_logging(config: &nunet_config::Config) -> Result<std::sync::Arc<nunet_logging::Logging>> {
    let o = &config.observability.logging;
    let level = if config.general.debug {
        nunet_logging::Level::Debug
    } else {
        nunet_logging::Level::parse(&o.level).context("observability.logging.level")?
    };
    let file = (!o.file.trim().is_empty()).then(|| {
        (
            config.general.user_dir.join(o.file.trim()),
            nunet_logging::Limits {
                max_bytes: o.rotation.max_size_mb.saturating_mul(1 << 20),
                max_backups: usize::try_from(o.rotation.max_backups).unwrap_or(usize::MAX),
                max_age: nunet_logging::days(o.rotation.max_age_days),
            },
        )
    });
    // Traces of deployments when a collector is named (else no layer: zero cost).
    let endpoint = config.observability.tracing.endpoint.trim();
    let traces = if endpoint.is_empty() {
        None
    } else {
        let layer = nunet_traces::install(endpoint)?;
        nunet_actor::trace::set_source(nunet_traces::current_traceparent);
        Some(layer.filtered())
    };
    Ok(nunet_logging::init(
        &nunet_logging::Settings {
            level,
            file,
            env_filter: std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()),
        },
        traces,
    )?)
}
