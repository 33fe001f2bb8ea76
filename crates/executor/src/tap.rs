//! TAP networking for VMs (`nunet tap <main_iface> <vm_iface> <CIDR>`): a TAP device with the
//! host's address of the VM subnet, IPv4 forwarding, and NAT from the subnet out through the
//! main interface — and the exact undo. Uses `ip` (iproute2) and `iptables`; needs root.
//! Every step can run inside a named network namespace, which is how the tests keep their
//! traffic off the host's interfaces.

use std::net::Ipv4Addr;
use std::process::Command;

/// What a TAP setup is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSetup {
    /// Host interface whose route reaches the outside (e.g. `eth0`).
    pub main_iface: String,
    /// TAP interface to create (e.g. `tap0`).
    pub vm_iface: String,
    /// Host address on the TAP with prefix length (e.g. `172.16.0.1/24`).
    pub address: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Run every command inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
}

/// Errors of the TAP helpers.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The CIDR does not parse.
    #[error("invalid CIDR {0:?}: expected an IPv4 address with prefix, like 172.16.0.1/24")]
    Cidr(String),
    /// An interface name is not acceptable to the kernel.
    #[error("invalid interface name {0:?}: 1-15 characters of letters, digits, '-', '_' or '.'")]
    Iface(String),
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command could not be run at all.
    #[error("cannot run {0}: {1} (is iproute2/iptables installed?)")]
    Spawn(String, std::io::Error),
}

fn valid_iface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl TapSetup {
    /// Parses the three `nunet tap` arguments.
    pub fn parse(main_iface: &str, vm_iface: &str, cidr: &str) -> Result<Self, TapError> {
        for name in [main_iface, vm_iface] {
            if !valid_iface(name) {
                return Err(TapError::Iface(name.to_string()));
            }
        }
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| TapError::Cidr(cidr.into()))?;
        let address: Ipv4Addr = addr.parse().map_err(|_| TapError::Cidr(cidr.into()))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=30).contains(p))
            .ok_or_else(|| TapError::Cidr(cidr.into()))?;
        Ok(Self {
            main_iface: main_iface.into(),
            vm_iface: vm_iface.into(),
            address,
            prefix,
            netns: None,
        })
    }

    /// The subnet in CIDR form (`172.16.0.0/24`).
    pub fn subnet(&self) -> String {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        let net = Ipv4Addr::from(u32::from(self.address) & mask);
        format!("{net}/{}", self.prefix)
    }

    /// The iptables rules (after `-A`/`-D`), in the order they are added.
    fn rules(&self) -> Vec<Vec<String>> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let subnet = self.subnet();
        vec![
            s(&[
                "-t",
                "nat",
                "POSTROUTING",
                "-s",
                &subnet,
                "-o",
                &self.main_iface,
                "-j",
                "MASQUERADE",
            ]),
            s(&[
                "FORWARD",
                "-i",
                &self.vm_iface,
                "-o",
                &self.main_iface,
                "-j",
                "ACCEPT",
            ]),
            s(&[
                "FORWARD",
                "-i",
                &self.main_iface,
                "-o",
                &self.vm_iface,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ]),
        ]
    }

    /// Commands that create the setup.
    pub fn create_commands(&self) -> Vec<Vec<String>> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cidr = format!("{}/{}", self.address, self.prefix);
        let mut cmds = vec![
            s(&["ip", "tuntap", "add", "dev", &self.vm_iface, "mode", "tap"]),
            s(&["ip", "addr", "add", &cidr, "dev", &self.vm_iface]),
            s(&["ip", "link", "set", &self.vm_iface, "up"]),
            s(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
        ];
        for rule in self.rules() {
            cmds.push(iptables(&rule, "-A"));
        }
        cmds
    }

    /// Commands that undo [`Self::create_commands`], in reverse order.
    pub fn remove_commands(&self) -> Vec<Vec<String>> {
        let mut cmds: Vec<Vec<String>> = self
            .rules()
            .iter()
            .rev()
            .map(|r| iptables(r, "-D"))
            .collect();
        cmds.push(vec![
            "ip".into(),
            "link".into(),
            "del".into(),
            self.vm_iface.clone(),
        ]);
        cmds
    }

    fn run(&self, argv: &[String]) -> Result<(), TapError> {
        let mut full: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            full.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        full.extend(argv.iter().cloned());
        let out = Command::new(&full[0])
            .args(&full[1..])
            .output()
            .map_err(|e| TapError::Spawn(full[0].clone(), e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TapError::Command {
                command: full.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Creates the TAP device, enables forwarding and adds the NAT/forward rules. On failure
    /// the steps this call completed are undone (an existing device of the same name is left
    /// alone).
    pub fn create(&self) -> Result<(), TapError> {
        let creates = self.create_commands();
        let mut undo: Vec<Vec<String>> = Vec::new();
        for cmd in creates {
            if let Err(e) = self.run(&cmd) {
                for u in undo.iter().rev() {
                    let _ = self.run(u);
                }
                return Err(e);
            }
            if cmd[0] == "iptables" {
                undo.push(
                    cmd.iter()
                        .map(|a| if a == "-A" { "-D".into() } else { a.clone() })
                        .collect(),
                );
            } else if cmd[..3] == ["ip", "tuntap", "add"] {
                undo.push(vec![
                    "ip".into(),
                    "link".into(),
                    "del".into(),
                    self.vm_iface.clone(),
                ]);
            }
        }
        Ok(())
    }

    /// Removes the rules and the TAP device. Leaves `ip_forward` as it is (other things may
    /// rely on it). Tries every step and reports the first failure.
    pub fn remove(&self) -> Result<(), TapError> {
        let mut first = None;
        for cmd in self.remove_commands() {
            if let Err(e) = self.run(&cmd) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn iptables(rule: &[String], op: &str) -> Vec<String> {
    let mut v = vec!["iptables".to_string(), "-w".to_string()];
    let mut rest = rule.iter();
    if rule.first().map(String::as_str) == Some("-t") {
        v.extend(rest.by_ref().take(2).cloned());
    }
    v.push(op.to_string());
    v.extend(rest.cloned());
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_plans() {
        let t = TapSetup::parse("eth0", "tap0", "172.16.0.1/24").unwrap();
        assert_eq!(t.subnet(), "172.16.0.0/24");
        let create = t.create_commands();
        assert_eq!(create[0].join(" "), "ip tuntap add dev tap0 mode tap");
        assert!(create.iter().any(|c| c.join(" ")
            == "iptables -w -t nat -A POSTROUTING -s 172.16.0.0/24 -o eth0 -j MASQUERADE"));
        let remove = t.remove_commands();
        assert_eq!(remove.len(), 4);
        assert!(
            remove[2]
                .join(" ")
                .starts_with("iptables -w -t nat -D POSTROUTING")
        );
        assert_eq!(remove[3].join(" "), "ip link del tap0");
        for bad in [
            ("eth0", "tap0", "172.16.0.1"),
            ("eth0", "tap0", "1.2.3/24"),
            ("e th0", "tap0", "1.2.3.4/24"),
        ] {
            assert!(TapSetup::parse(bad.0, bad.1, bad.2).is_err(), "{bad:?}");
        }
        assert!(TapSetup::parse("eth0", "a-very-long-interface", "10.0.0.1/8").is_err());
    }
}
