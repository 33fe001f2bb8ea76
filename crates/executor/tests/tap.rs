//! TAP + forwarding + NAT, created and removed inside a network namespace this test makes
//! (its traffic never touches the host's interfaces).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use nunet_executor::tap::TapSetup;

fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            common::missing(&format!("{} ({e})", args[0]));
        });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

#[test]
fn tap_forwarding_and_nat_are_created_and_removed() {
    let ns = Netns(format!("nunet-tap-{}", std::process::id()));
    let (ok, out) = sh(&["ip", "netns", "add", &ns.0]);
    assert!(ok, "ip netns add: {out}");
    for cmd in [
        "ip link set lo up",
        "ip link add nmain0 type veth peer name nmain1",
        "ip link set nmain1 up",
        "ip addr add 192.0.2.10/24 dev nmain0",
        "ip link set nmain0 up",
    ] {
        let mut argv = vec!["ip", "netns", "exec", &ns.0];
        argv.extend(cmd.split(' '));
        let (ok, out) = sh(&argv);
        assert!(ok, "{cmd}: {out}");
    }
    let mut tap = TapSetup::parse("nmain0", "ntap0", "172.31.7.1/24").unwrap();
    tap.netns = Some(ns.0.clone());
    tap.create().unwrap();

    let (_, addr) = sh(&["ip", "-n", &ns.0, "-4", "addr", "show", "dev", "ntap0"]);
    assert!(addr.contains("inet 172.31.7.1/24"), "{addr}");
    let (_, fwd) = sh(&[
        "ip",
        "netns",
        "exec",
        &ns.0,
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
    ]);
    assert_eq!(fwd.trim(), "1");
    let (_, nat) = sh(&[
        "ip",
        "netns",
        "exec",
        &ns.0,
        "iptables",
        "-t",
        "nat",
        "-S",
        "POSTROUTING",
    ]);
    assert!(
        nat.contains("-s 172.31.7.0/24 -o nmain0 -j MASQUERADE"),
        "{nat}"
    );
    let (_, filter) = sh(&["ip", "netns", "exec", &ns.0, "iptables", "-S", "FORWARD"]);
    assert!(filter.contains("-i ntap0 -o nmain0 -j ACCEPT"), "{filter}");
    let (ok, ping) = sh(&[
        "ip",
        "netns",
        "exec",
        &ns.0,
        "/bin/busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "172.31.7.1",
    ]);
    assert!(ok, "the host side of the TAP answers: {ping}");
    // Creating it again fails cleanly and leaves the first one intact.
    assert!(tap.create().is_err());
    let (ok, _) = sh(&["ip", "-n", &ns.0, "link", "show", "ntap0"]);
    assert!(ok, "a failed create leaves the existing device alone");

    tap.remove().unwrap();
    let (ok, _) = sh(&["ip", "-n", &ns.0, "link", "show", "ntap0"]);
    assert!(!ok, "ntap0 is gone");
    let (_, nat) = sh(&[
        "ip",
        "netns",
        "exec",
        &ns.0,
        "iptables",
        "-t",
        "nat",
        "-S",
        "POSTROUTING",
    ]);
    assert!(!nat.contains("MASQUERADE"), "{nat}");
    let (_, filter) = sh(&["ip", "netns", "exec", &ns.0, "iptables", "-S", "FORWARD"]);
    assert!(!filter.contains("ntap0"), "{filter}");
    assert!(
        tap.remove().is_err(),
        "removing twice reports the missing pieces"
    );
}
