use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration. Every section has defaults, so a file only holds what differs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directories, environment, port range, geolocation override.
    pub general: General,
    /// The local REST API.
    pub rest: Rest,
    /// Profiling endpoint (off by default).
    pub profiler: Profiler,
    /// libp2p host.
    pub p2p: P2p,
    /// Workload policy.
    pub job: Job,
    /// The ensemble VPN (IP over libp2p).
    pub subnet: Subnet,
    /// Logs.
    pub observability: Observability,
    /// What peers may read and write with `nunet cp`.
    #[serde(default)]
    pub files: Files,
    /// What onboarding leaves to the host.
    #[serde(default)]
    pub onboarding: Onboarding,
}

/// `onboarding.*`: the share of the machine that stays with the host whatever is onboarded.
/// Onboarding refuses a request that reaches into it and names the limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Onboarding {
    /// CPU cores kept for the host (fractions allowed).
    pub reserve_cpu_cores: f64,
    /// GiB of memory kept for the host.
    pub reserve_ram_gb: f64,
    /// GiB of the data dir's filesystem that must stay free beyond what is onboarded.
    pub reserve_disk_gb: f64,
}

impl Default for Onboarding {
    fn default() -> Self {
        Self {
            reserve_cpu_cores: 1.0,
            reserve_ram_gb: 2.0,
            reserve_disk_gb: 5.0,
        }
    }
}

/// Largest value of each `onboarding.reserve_*` key (cores or GiB).
pub const MAX_ONBOARDING_RESERVE: f64 = 1_048_576.0;

/// `files.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Files {
    /// Move file bytes over a TCP connection of their own (AES-256-GCM, keyed over the
    /// libp2p connection) when the peer is reached directly; false keeps them on the libp2p
    /// connection (slower: it carries about a fifth of what the link does here). Where the
    /// direct connection cannot be made (a NAT, a firewall), the bytes stay on the libp2p
    /// connection anyway and `nunet cp` says so.
    pub direct: bool,
    /// Directories peers may read from and write into by absolute path (`nunet cp`), besides
    /// the node's file area `<data_dir>/files` where relative paths point. Resolved
    /// (symlinks, `..`) before the check; only peers granted `/dms/node/files/read` or
    /// `/dms/node/files/write` get that far.
    pub roots: Vec<PathBuf>,
}

impl Default for Files {
    fn default() -> Self {
        Self {
            direct: true,
            roots: Vec::new(),
        }
    }
}

/// `general.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    /// Deployment environment label.
    pub env: String,
    /// Keys and capability contexts.
    pub user_dir: PathBuf,
    /// Scratch space for workloads.
    pub work_dir: PathBuf,
    /// Database and persistent state.
    pub data_dir: PathBuf,
    /// Verbose logging.
    pub debug: bool,
    /// First port the node may hand to workloads.
    pub port_available_range_from: u32,
    /// Last port (inclusive) the node may hand to workloads.
    pub port_available_range_to: u32,
    /// Manual geolocation: city.
    pub host_city: String,
    /// Manual geolocation: country (ISO code or name).
    pub host_country: String,
    /// Manual geolocation: continent.
    pub host_continent: String,
    /// Serve GlusterFS volumes to deployers (`/dms/volume/{create,start,delete}`; NuNet's
    /// storage mode). Needs `glusterd` on this host and `storage_glusterfs_hostname`.
    #[serde(default)]
    pub storage_mode: bool,
    /// Where volume bricks go (empty: `<data_dir>/storage/bricks`).
    #[serde(default)]
    pub storage_bricks_dir: PathBuf,
    /// This storage node's TLS certificate and key (`glusterfs.pem`, `glusterfs.key`,
    /// created when missing) and each volume's client certificate (empty:
    /// `<data_dir>/storage/ca`).
    #[serde(default)]
    pub storage_ca_directory: PathBuf,
    /// The host name or address clients reach this node's bricks at (the brick spec's host).
    #[serde(default)]
    pub storage_glusterfs_hostname: String,
    /// glusterd's command socket (empty: glusterd's default, `/var/run/glusterd.socket`).
    #[serde(default)]
    pub storage_glusterd_socket: PathBuf,
    /// Size in MiB of a volume whose create call names none (NuNet's calls never do).
    /// Each volume's brick is a filesystem image of its size, allocated when it is made.
    #[serde(default = "default_storage_volume_size_mb")]
    pub storage_volume_size_mb: u64,
}

/// Default of `general.storage_volume_size_mb`: 10 GiB.
fn default_storage_volume_size_mb() -> u64 {
    10 << 10
}

/// Smallest storage volume, in MiB (an ext4 filesystem with a journal).
pub const MIN_STORAGE_VOLUME_MB: u64 = 16;
/// Largest storage volume, in MiB (1 PiB).
pub const MAX_STORAGE_VOLUME_MB: u64 = 1 << 30;

/// `rest.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rest {
    /// Listen address (keep it on loopback: the API is the node's local bridge).
    pub addr: String,
    /// Listen port; 0: the kernel picks one when the daemon binds, and the daemon reports it
    /// in `<general.data_dir>/run.json`, where the CLI looks it up.
    pub port: u16,
}

/// `profiler.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiler {
    /// Whether to serve profiles.
    pub enabled: bool,
    /// Listen address.
    pub addr: String,
    /// Listen port.
    pub port: u16,
}

/// `p2p.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2p {
    /// Multiaddrs to listen on (TCP and QUIC).
    pub listen_address: Vec<String>,
    /// Peers to dial at start (`/ip4/…/tcp/…/p2p/<peer id>`).
    pub bootstrap_peers: Vec<String>,
    /// Resident memory of the process, MiB, above which new inbound libp2p connections are
    /// refused (0: no limit).
    pub memory: u64,
    /// File descriptors for libp2p connections: split into pending and established,
    /// inbound and outbound connection limits (see docs/config.md).
    pub fd: u64,
    /// Private swarm: 64 hex characters of pre-shared key, or a path to a `swarm.key` file
    /// (libp2p's v1 format in `/base16/`, `/base64/` or `/bin/`, as NuNet and go-ipfs write
    /// it; the first 32 bytes are the key); empty = public network.
    pub swarm_key: String,
    /// Serve as a circuit relay for other peers.
    pub relay_server: bool,
    /// Relay server: reservations held at once (private peers reachable through this node).
    #[serde(default = "default_relay_max_reservations")]
    pub relay_max_reservations: u64,
    /// Relay server: relayed connections (circuits) open at once.
    #[serde(default = "default_relay_max_circuits")]
    pub relay_max_circuits: u64,
    /// Relay server: circuits open at once with one peer at either end.
    #[serde(default = "default_relay_max_circuits_per_peer")]
    pub relay_max_circuits_per_peer: u64,
    /// Relay server: MiB one circuit may carry (both directions together) before it is reset.
    #[serde(default = "default_relay_circuit_mb")]
    pub relay_circuit_mb: u64,
    /// Relay server: seconds one circuit may live before it is closed.
    #[serde(default = "default_relay_circuit_secs")]
    pub relay_circuit_secs: u64,
    /// Let AutoNAT probe between peers at private addresses (LANs, testbeds); off on the
    /// internet, where only peers at public addresses can say whether this node is public.
    #[serde(default)]
    pub nat_probe_private_addrs: bool,
}

/// `job.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Allow privileged Docker containers.
    pub allow_privileged_docker: bool,
    /// Directories whose files ensembles may name by path on this provider (microVM
    /// kernels, initrds and root filesystems; WASM modules), besides `<data_dir>/images`.
    /// Anything else — `/etc/shadow`, a symlink out of a root, `..` — is refused.
    pub image_roots: Vec<PathBuf>,
    /// Host directories whose subdirectories ensembles may mount as `local` volumes by
    /// absolute path (`src: /srv/data/x`). Empty: only named volumes, which the provider
    /// creates under `<data_dir>/volumes`. Paths are resolved (symlinks, `..`) before the
    /// check.
    pub volume_roots: Vec<PathBuf>,
    /// GlusterFS servers (host names or addresses, as ensembles write them) whose volumes
    /// ensembles may mount on this provider; `*`: any. Empty: none (a deployer could
    /// otherwise mount any GlusterFS volume this host can reach).
    pub glusterfs_servers: Vec<String>,
    /// Object stores (`host` or `host:port` of an ensemble's S3 `endpoint`; `*`: any) that
    /// inputs and outputs may reach at addresses that are not public (loopback, private
    /// networks, link-local). Stores on the public internet are always allowed; empty: no
    /// other (a deployer could otherwise make this host's daemon fetch from services on
    /// its own network).
    #[serde(default)]
    pub s3_private_endpoints: Vec<String>,
    /// Seconds a microVM's kernel may take to start its init before the VM is killed and
    /// its allocation fails (0: no limit).
    pub vm_boot_timeout_secs: u64,
    /// MiB of output kept per allocation and stream (stdout, stderr) on this provider, for
    /// `deployment logs`; beyond it the oldest output is dropped, and a follower is told
    /// how much. At least 1.
    #[serde(default = "default_output_retention_mb")]
    pub output_retention_mb: u64,
}

fn default_output_retention_mb() -> u64 {
    256
}

fn default_relay_max_reservations() -> u64 {
    128
}

fn default_relay_max_circuits() -> u64 {
    256
}

fn default_relay_max_circuits_per_peer() -> u64 {
    32
}

fn default_relay_circuit_mb() -> u64 {
    256
}

fn default_relay_circuit_secs() -> u64 {
    15 * 60
}

/// Largest `p2p.relay_max_reservations`, `relay_max_circuits` and
/// `relay_max_circuits_per_peer`.
pub const MAX_RELAY_SLOTS: u64 = 65_536;
/// Largest `p2p.relay_circuit_mb`: 1 TiB.
pub const MAX_RELAY_CIRCUIT_MB: u64 = 1 << 20;
/// Largest `p2p.relay_circuit_secs`: a day.
pub const MAX_RELAY_CIRCUIT_SECS: u64 = 24 * 3600;

/// Largest `job.output_retention_mb`: 1 TiB.
pub const MAX_OUTPUT_RETENTION_MB: u64 = 1 << 20;

/// `subnet.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// Give container allocations an address in their ensemble's VPN (needs root and
    /// `/dev/net/tun`). Off only where several nodes share one network namespace, e.g. the
    /// loopback devnet: their subnets would collide in the one kernel routing table.
    pub enabled: bool,
    /// Carry ensemble packets between directly connected members as encrypted UDP datagrams
    /// (keyed over libp2p, used only after a probe confirms the path); off: every packet
    /// goes over the libp2p stream.
    pub datagrams: bool,
    /// UDP port the datagram path receives on (0: any free port); open it in a firewall
    /// to let peers use the fast path.
    pub datagram_port: u16,
    /// Microseconds a subnet thread that just sent datagrams keeps polling for the answer
    /// before it sleeps (0: never): that much CPU per burst of traffic buys one thread
    /// wake-up less per round trip (lower latency).
    pub datagram_busy_poll_us: u32,
}

/// `observability.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observability {
    /// Log settings.
    pub logging: Logging,
    /// Trace export.
    #[serde(default)]
    pub tracing: Tracing,
}

/// `observability.tracing.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// OTLP/HTTP collector (`http://host:4318`; spans are posted as JSON to
    /// `<endpoint>/v1/traces`). Empty: no traces are exported, and none are recorded.
    #[serde(default)]
    pub endpoint: String,
}

/// `observability.logging.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// trace, debug, info, warn or error.
    pub level: String,
    /// Log file (JSON lines); empty = stderr only.
    pub file: String,
    /// Rotation of the log file.
    pub rotation: Rotation,
}

/// `observability.logging.rotation.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// Rotate at this size.
    pub max_size_mb: u64,
    /// Keep this many old files.
    pub max_backups: u64,
    /// Delete files older than this.
    pub max_age_days: u64,
}

/// Largest `job.vm_boot_timeout_secs`: a week.
pub const MAX_VM_BOOT_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

impl Config {
    /// Defaults for a node whose home (keys, contexts, config) is `home`. Everything the node
    /// writes lives under that one directory, so two nodes on a host differ by one flag.
    pub fn defaults(home: &Path) -> Self {
        Self {
            general: General {
                env: "production".into(),
                user_dir: home.to_path_buf(),
                work_dir: home.join("work"),
                data_dir: home.join("data"),
                debug: false,
                port_available_range_from: 16384,
                port_available_range_to: 65535,
                host_city: String::new(),
                host_country: String::new(),
                host_continent: String::new(),
                storage_mode: false,
                storage_bricks_dir: PathBuf::new(),
                storage_ca_directory: PathBuf::new(),
                storage_glusterfs_hostname: String::new(),
                storage_glusterd_socket: PathBuf::new(),
                storage_volume_size_mb: default_storage_volume_size_mb(),
            },
            rest: Rest {
                addr: "127.0.0.1".into(),
                port: 9999,
            },
            profiler: Profiler {
                enabled: false,
                addr: "127.0.0.1".into(),
                port: 6060,
            },
            p2p: P2p {
                listen_address: vec![
                    "/ip4/0.0.0.0/tcp/9000".into(),
                    "/ip4/0.0.0.0/udp/9000/quic-v1".into(),
                ],
                bootstrap_peers: Vec::new(),
                memory: 1024,
                fd: 512,
                swarm_key: String::new(),
                relay_server: false,
                relay_max_reservations: default_relay_max_reservations(),
                relay_max_circuits: default_relay_max_circuits(),
                relay_max_circuits_per_peer: default_relay_max_circuits_per_peer(),
                relay_circuit_mb: default_relay_circuit_mb(),
                relay_circuit_secs: default_relay_circuit_secs(),
                nat_probe_private_addrs: false,
            },
            job: Job {
                allow_privileged_docker: false,
                image_roots: Vec::new(),
                volume_roots: Vec::new(),
                glusterfs_servers: Vec::new(),
                s3_private_endpoints: Vec::new(),
                vm_boot_timeout_secs: 120,
                output_retention_mb: default_output_retention_mb(),
            },
            subnet: Subnet {
                enabled: true,
                datagrams: true,
                datagram_port: 0,
                datagram_busy_poll_us: 500,
            },
            observability: Observability {
                logging: Logging {
                    level: "info".into(),
                    file: String::new(),
                    rotation: Rotation {
                        max_size_mb: 100,
                        max_backups: 5,
                        max_age_days: 28,
                    },
                },
                tracing: Tracing::default(),
            },
            files: Files::default(),
            onboarding: Onboarding::default(),
        }
    }

    /// Checks values that types alone cannot; returns every problem found, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let g = &self.general;
        if g.env.trim().is_empty() {
            p.push("general.env: must not be empty".to_string());
        }
        for (k, v) in [
            ("general.user_dir", &g.user_dir),
            ("general.work_dir", &g.work_dir),
            ("general.data_dir", &g.data_dir),
        ] {
            if v.as_os_str().is_empty() {
                p.push(format!("{k}: must not be empty"));
            }
        }
        for (k, v) in [
            (
                "general.port_available_range_from",
                g.port_available_range_from,
            ),
            ("general.port_available_range_to", g.port_available_range_to),
        ] {
            if !(1..=65535).contains(&v) {
                p.push(format!("{k}: {v} is not a port (1-65535)"));
            }
        }
        if g.port_available_range_from > g.port_available_range_to {
            p.push(format!(
                "general.port_available_range_from: {} is above port_available_range_to {}",
                g.port_available_range_from, g.port_available_range_to
            ));
        }
        for (k, v) in [
            ("general.storage_bricks_dir", &g.storage_bricks_dir),
            ("general.storage_ca_directory", &g.storage_ca_directory),
            (
                "general.storage_glusterd_socket",
                &g.storage_glusterd_socket,
            ),
        ] {
            if !v.as_os_str().is_empty() && !v.is_absolute() {
                p.push(format!("{k}: {} is not an absolute path", v.display()));
            }
        }
        if !(MIN_STORAGE_VOLUME_MB..=MAX_STORAGE_VOLUME_MB).contains(&g.storage_volume_size_mb) {
            p.push(format!(
                "general.storage_volume_size_mb: {} is outside {MIN_STORAGE_VOLUME_MB}-{MAX_STORAGE_VOLUME_MB}",
                g.storage_volume_size_mb
            ));
        }
        if g.storage_mode && g.storage_glusterfs_hostname.trim().is_empty() {
            p.push(
                "general.storage_glusterfs_hostname: must name the host clients reach this \
                 node's bricks at when storage_mode is on"
                    .to_string(),
            );
        }
        if self.rest.addr.parse::<std::net::IpAddr>().is_err() {
            p.push(format!(
                "rest.addr: {:?} is not an IP address",
                self.rest.addr
            ));
        }
        for (key, roots) in [
            ("job.image_roots", &self.job.image_roots),
            ("job.volume_roots", &self.job.volume_roots),
            ("files.roots", &self.files.roots),
        ] {
            for (i, r) in roots.iter().enumerate() {
                if !r.is_absolute() {
                    p.push(format!(
                        "{key}[{i}]: {} is not an absolute path",
                        r.display()
                    ));
                }
            }
        }
        // The VM executor adds it to the clock: beyond that, `now + timeout` overflows.
        if self.job.vm_boot_timeout_secs > MAX_VM_BOOT_TIMEOUT_SECS {
            p.push(format!(
                "job.vm_boot_timeout_secs: {} is more than {MAX_VM_BOOT_TIMEOUT_SECS} (a week)",
                self.job.vm_boot_timeout_secs
            ));
        }
        if !(1..=MAX_OUTPUT_RETENTION_MB).contains(&self.job.output_retention_mb) {
            p.push(format!(
                "job.output_retention_mb: {} is not between 1 and {MAX_OUTPUT_RETENTION_MB}",
                self.job.output_retention_mb
            ));
        }
        let r = &self.p2p;
        for (key, v, most) in [
            (
                "p2p.relay_max_reservations",
                r.relay_max_reservations,
                MAX_RELAY_SLOTS,
            ),
            (
                "p2p.relay_max_circuits",
                r.relay_max_circuits,
                MAX_RELAY_SLOTS,
            ),
            (
                "p2p.relay_max_circuits_per_peer",
                r.relay_max_circuits_per_peer,
                r.relay_max_circuits.clamp(1, MAX_RELAY_SLOTS),
            ),
            (
                "p2p.relay_circuit_mb",
                r.relay_circuit_mb,
                MAX_RELAY_CIRCUIT_MB,
            ),
            (
                "p2p.relay_circuit_secs",
                r.relay_circuit_secs,
                MAX_RELAY_CIRCUIT_SECS,
            ),
        ] {
            if !(1..=most).contains(&v) {
                p.push(format!("{key}: {v} is not between 1 and {most}"));
            }
        }
        let o = &self.onboarding;
        for (key, v) in [
            ("onboarding.reserve_cpu_cores", o.reserve_cpu_cores),
            ("onboarding.reserve_ram_gb", o.reserve_ram_gb),
            ("onboarding.reserve_disk_gb", o.reserve_disk_gb),
        ] {
            if !(0.0..=MAX_ONBOARDING_RESERVE).contains(&v) {
                p.push(format!(
                    "{key}: {v} is not between 0 and {MAX_ONBOARDING_RESERVE}"
                ));
            }
        }
        if self.profiler.addr.parse::<std::net::IpAddr>().is_err() {
            p.push(format!(
                "profiler.addr: {:?} is not an IP address",
                self.profiler.addr
            ));
        }
        if self.p2p.listen_address.is_empty() {
            p.push("p2p.listen_address: at least one address is needed".into());
        }
        for (i, a) in self.p2p.listen_address.iter().enumerate() {
            if let Err(e) = a.parse::<multiaddr::Multiaddr>() {
                p.push(format!(
                    "p2p.listen_address[{i}]: {a:?} is not a multiaddr ({e})"
                ));
            }
        }
        for (i, a) in self.p2p.bootstrap_peers.iter().enumerate() {
            match a.parse::<multiaddr::Multiaddr>() {
                Err(e) => p.push(format!(
                    "p2p.bootstrap_peers[{i}]: {a:?} is not a multiaddr ({e})"
                )),
                Ok(m) if !m.iter().any(|x| matches!(x, multiaddr::Protocol::P2p(_))) => p.push(
                    format!("p2p.bootstrap_peers[{i}]: {a:?} must end in /p2p/<peer id>"),
                ),
                Ok(_) => {}
            }
        }
        let key = self.p2p.swarm_key.trim();
        let hex64 = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
        if !key.is_empty() && !hex64 && !Path::new(key).is_absolute() {
            p.push(
                "p2p.swarm_key: give 64 hex characters or an absolute path to a swarm.key file"
                    .into(),
            );
        }
        if !["trace", "debug", "info", "warn", "error"]
            .contains(&self.observability.logging.level.as_str())
        {
            p.push(format!(
                "observability.logging.level: {:?} is not one of trace, debug, info, warn, error",
                self.observability.logging.level
            ));
        }
        let endpoint = self.observability.tracing.endpoint.trim();
        if !endpoint.is_empty() {
            let host = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
                p.push(format!(
                    "observability.tracing.endpoint: {endpoint:?} is not an http:// or https:// URL with a host"
                ));
            }
        }
        if self.observability.logging.rotation.max_size_mb == 0 {
            p.push(
                "observability.logging.rotation.max_size_mb: must be at least 1 (MiB)".to_string(),
            );
        }
        p
    }
}
