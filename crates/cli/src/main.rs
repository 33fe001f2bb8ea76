//! `nunet`: the DMS command line. Thin by design: it parses arguments, finds the node's home,
//! asks for passphrases, and calls the library crates; logic and tests live there.
// The `///` comments of the clap types are `--help` text, where `<name>` is a placeholder.
#![allow(rustdoc::invalid_html_tags)]

mod client;
mod cmd;
mod home;
mod ledger;
mod runinfo;

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

/// NuNet Device Management Service: keys, capabilities and configuration of a node.
#[derive(Parser, Debug)]
#[command(name = "nunet", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Node home (NuNet's user directory): keys (key/), capability contexts (cap/),
    /// dms_config.json. Default ~/.nunet.
    #[arg(long, global = true, env = "NUNET_HOME", value_name = "DIR")]
    user_dir: Option<PathBuf>,
    /// Config file to use instead of <home>/dms_config.json (must exist).
    #[arg(long, global = true, env = "NUNET_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: home::FlagOverrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the DMS daemon (libp2p host, actors, local REST API) with the `dms` context.
    Run(cmd::run::RunArgs),
    /// Build, sign and send actor messages through the local daemon.
    #[command(subcommand)]
    Actor(cmd::actor::ActorCmd),
    /// A local multi-node network on loopback (up / status / down).
    #[command(subcommand)]
    Devnet(cmd::devnet::DevnetCmd),
    /// Manage keys: create key pairs and show their DIDs.
    #[command(subcommand)]
    Key(cmd::key::KeyCmd),
    /// Manage capability contexts: anchors, delegations, grants, revocations.
    #[command(subcommand)]
    Cap(cmd::cap::CapCmd),
    /// Read and change dms_config.json.
    #[command(subcommand)]
    Config(cmd::config::ConfigCmd),
    /// GPUs of this machine: list them, or test GPU containers through Docker.
    #[command(subcommand)]
    Gpu(cmd::gpu::GpuCmd),
    /// Create (or --remove) a TAP device for microVMs with forwarding and NAT (needs root).
    Tap(cmd::tap::TapArgs),
    /// Check an ensemble file (YAML or JSON): print every problem, or a summary.
    Validate(cmd::validate::ValidateArgs),
    /// Deploy an ensemble through the local node and follow it until it runs.
    Deploy(cmd::deploy::DeployArgs),
    /// Copy files or directories to or from another node (`<DID or peer id>:<path>`).
    Cp(cmd::cp::CpArgs),
    /// Status, manifest, logs or shutdown of a deployment.
    #[command(subcommand)]
    Deployment(cmd::deployment::DeploymentCmd),
    /// Print the address of the local daemon's web dashboard (this node, its deployments,
    /// live output), with this run's access token.
    Dashboard(cmd::dashboard::DashboardArgs),
    /// List things the local node knows (deployments, allocations).
    #[command(subcommand)]
    Get(cmd::deployment::GetCmd),
    /// Version, commit and compiler of this binary (NuNet's `version` layout).
    Version,
    /// Shell completions: `source <(nunet completion bash)`, or write the output to your
    /// shell's completion directory (zsh: a file `_nunet` on $fpath; fish:
    /// ~/.config/fish/completions/nunet.fish).
    #[command(visible_alias = "autocomplete")]
    Completion {
        /// bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
    },
}

fn print_version() {
    println!("NuNet Device Management Service");
    println!("Version: {}", env!("CARGO_PKG_VERSION"));
    println!("Commit: {}", env!("NUNET_COMMIT"));
    println!();
    println!("Rust Version: {}", env!("NUNET_RUSTC"));
}

/// A closed stdout (`nunet get deployments | head -1`) ends the command quietly with exit 0:
/// `print!` panics on EPIPE because Rust ignores SIGPIPE, so that one panic is turned into
/// an exit (for every command at once); any other panic is reported as usual.
fn exit_quietly_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload_as_str().unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        report(info);
    }));
}

fn main() {
    exit_quietly_on_closed_stdout();
    let cli = Cli::parse();
    let reads_config = !matches!(
        cli.command,
        Command::Validate(_)
            | Command::Devnet(_)
            | Command::Tap(_)
            | Command::Gpu(_)
            | Command::Version
            | Command::Completion { .. }
    );
    if cli.overrides.any() && !reads_config {
        eprintln!(
            "error: --rest-addr, --rest-port, --data-dir and --debug set the node's configuration; \
             this command does not read it"
        );
        std::process::exit(2);
    }
    if let Err(e) = cli.overrides.check() {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args).map(|()| 0),
        Command::Devnet(c) => cmd::devnet::run(c),
        Command::Tap(a) => cmd::tap::run(a),
        Command::Gpu(c) => cmd::gpu::run(c),
        Command::Version => {
            print_version();
            Ok(0)
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "nunet", &mut std::io::stdout());
            Ok(0)
        }
        command => home::Home::resolve(cli.user_dir.as_deref(), cli.config.as_deref())
            .map(|home| home.with_overrides(cli.overrides.as_env()))
            .and_then(|home| match command {
                Command::Key(c) => cmd::key::run(&home, c),
                Command::Cap(c) => cmd::cap::run(&home, c),
                Command::Config(c) => cmd::config::run(&home, c),
                Command::Run(a) => cmd::run::run(&home, a),
                Command::Actor(c) => cmd::actor::run(&home, c),
                Command::Deploy(a) => cmd::deploy::run(&home, a),
                Command::Cp(a) => cmd::cp::run(&home, a),
                Command::Deployment(c) => cmd::deployment::run(&home, c),
                Command::Get(c) => cmd::deployment::get(&home, c),
                Command::Dashboard(a) => cmd::dashboard::run(&home, a),
                Command::Validate(_)
                | Command::Devnet(_)
                | Command::Gpu(_)
                | Command::Tap(_)
                | Command::Version
                | Command::Completion { .. } => {
                    unreachable!("matched above")
                }
            }),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
