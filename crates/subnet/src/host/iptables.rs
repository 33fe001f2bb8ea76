//! Our iptables chains and rules (whatever `iptables` is on PATH: nf_tables or legacy backend).
//!
//! Every rule we add carries a `-m comment --comment nunet:<tag>`: `nunet:<hash8>` for rules of
//! one ensemble, `nunet:common` for the shared jumps and default verdicts. Removal works from
//! `iptables-save` output by tag, so it never touches rules it did not create.

use std::sync::Mutex;

use super::cmd::Host;
use super::error::HostError;

/// Filter chain jumped from the top of FORWARD.
pub const FWD: &str = "NUNET-FWD";
/// Filter chain jumped from the top of INPUT.
pub const IN: &str = "NUNET-IN";
/// Nat chain (DNAT of public ports) jumped from PREROUTING and OUTPUT for local destinations.
pub const PORTS: &str = "NUNET-PORTS";
/// Nat chain (MASQUERADE of internet egress) jumped from POSTROUTING.
pub const SNAT: &str = "NUNET-SNAT";
/// Tag of shared rules.
pub const COMMON_TAG: &str = "nunet:common";

/// Serialises our read-modify-write sequences on the firewall within this process (iptables'
/// own `-w` lock only covers single commands).
pub static LOCK: Mutex<()> = Mutex::new(());

/// One rule: table, chain, match arguments, comment tag, target arguments.
#[derive(Clone, Debug)]
pub struct Rule {
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
    top: bool,
}

impl Rule {
    /// A rule; `top` inserts at position 1 instead of appending.
    pub fn new(
        table: &'static str,
        chain: &'static str,
        matches: &[&str],
        tag: &str,
        target: &[&str],
        top: bool,
    ) -> Self {
        let mut spec: Vec<String> = matches.iter().map(|s| s.to_string()).collect();
        spec.extend(["-m", "comment", "--comment", tag].map(String::from));
        spec.extend(target.iter().map(|s| s.to_string()));
        Self {
            table,
            chain,
            spec,
            top,
        }
    }

    fn args<'a>(&'a self, op: &'a str) -> Vec<&'a str> {
        let mut a = vec!["-w", "-t", self.table, op, self.chain];
        if op == "-I" {
            a.push("1");
        }
        a.extend(self.spec.iter().map(String::as_str));
        a
    }

    /// Adds the rule unless an identical one exists.
    pub fn ensure(&self, host: &Host) -> Result<(), HostError> {
        if host.succeeds("iptables", &self.args("-C"))? {
            return Ok(());
        }
        host.run("iptables", &self.args(if self.top { "-I" } else { "-A" }))?;
        Ok(())
    }

    /// Deletes the rule; a missing rule or chain is not an error.
    pub fn delete(&self, host: &Host) -> Result<bool, HostError> {
        host.run_delete("iptables", &self.args("-D"))
    }
}

fn common_rules() -> Vec<Rule> {
    let c = COMMON_TAG;
    let est = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"];
    let with = |a: &[&'static str], b: &[&'static str]| [a, b].concat();
    vec![
        // Replies of accepted flows first (inserted at the top, above the drops).
        Rule::new("filter", FWD, &est, c, &["-j", "ACCEPT"], true),
        // Anything between ensemble interfaces that no per-ensemble rule accepted.
        Rule::new(
            "filter",
            FWD,
            &["-i", "nv+", "-o", "nv+"],
            c,
            &["-j", "DROP"],
            false,
        ),
        Rule::new(
            "filter",
            FWD,
            &["-i", "nv+", "-o", "nn+"],
            c,
            &["-j", "DROP"],
            false,
        ),
        Rule::new(
            "filter",
            FWD,
            &["-i", "nn+", "-o", "nv+"],
            c,
            &["-j", "DROP"],
            false,
        ),
        Rule::new(
            "filter",
            FWD,
            &["-i", "nn+", "-o", "nn+"],
            c,
            &["-j", "DROP"],
            false,
        ),
        // Containers to the outside world (routing already keeps 10/8 inside the ensemble).
        Rule::new("filter", FWD, &["-i", "nv+"], c, &["-j", "ACCEPT"], false),
        // Containers and remote peers reach no local address except the gateways accepted above.
        Rule::new(
            "filter",
            IN,
            &with(&["-i", "nv+"], &est),
            c,
            &["-j", "ACCEPT"],
            false,
        ),
        Rule::new("filter", IN, &["-i", "nv+"], c, &["-j", "DROP"], false),
        Rule::new(
            "filter",
            IN,
            &with(&["-i", "nn+"], &est),
            c,
            &["-j", "ACCEPT"],
            false,
        ),
        Rule::new("filter", IN, &["-i", "nn+"], c, &["-j", "DROP"], false),
    ]
}

fn jumps() -> Vec<Rule> {
    let c = COMMON_TAG;
    let local = ["-m", "addrtype", "--dst-type", "LOCAL"];
    vec![
        Rule::new("filter", "INPUT", &[], c, &["-j", IN], true),
        Rule::new("filter", "FORWARD", &[], c, &["-j", FWD], true),
        Rule::new("nat", "PREROUTING", &local, c, &["-j", PORTS], true),
        Rule::new(
            "nat",
            "OUTPUT",
            &[&["!", "-d", "127.0.0.0/8"][..], &local].concat(),
            c,
            &["-j", PORTS],
            true,
        ),
        Rule::new("nat", "POSTROUTING", &[], c, &["-j", SNAT], true),
    ]
}

/// Creates our chains, their default rules and the jumps into them (idempotent). Call with
/// [`LOCK`] held.
pub fn ensure_base(host: &Host) -> Result<(), HostError> {
    for (table, chain) in [
        ("filter", FWD),
        ("filter", IN),
        ("nat", PORTS),
        ("nat", SNAT),
    ] {
        if !host.succeeds("iptables", &["-w", "-t", table, "-n", "-L", chain])? {
            host.run("iptables", &["-w", "-t", table, "-N", chain])?;
        }
    }
    for r in common_rules() {
        r.ensure(host)?;
    }
    for r in jumps() {
        r.ensure(host)?;
    }
    Ok(())
}

/// One `-A CHAIN …` line of `iptables-save`, split into arguments.
#[derive(Debug)]
struct SavedRule {
    table: &'static str,
    chain: String,
    args: Vec<String>,
    tag: Option<String>,
}

/// Splits a saved rule line into arguments (double quotes group, backslash escapes).
fn split_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut any = false;
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if in_quotes => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn saved_rules(host: &Host) -> Result<Vec<SavedRule>, HostError> {
    let mut out = Vec::new();
    for table in ["filter", "nat"] {
        let text = host.run("iptables-save", &["-t", table])?;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("-A ") else {
                continue;
            };
            let mut args = split_args(rest);
            if args.is_empty() {
                continue;
            }
            let chain = args.remove(0);
            let tag = args
                .windows(2)
                .find(|w| w[0] == "--comment")
                .map(|w| w[1].clone())
                .filter(|t| t.starts_with("nunet:"));
            out.push(SavedRule {
                table,
                chain,
                args,
                tag,
            });
        }
    }
    Ok(out)
}

/// Deletes every rule whose tag satisfies `remove`; returns how many were deleted.
pub fn remove_tagged(host: &Host, remove: impl Fn(&str) -> bool) -> Result<usize, HostError> {
    let mut n = 0;
    for r in saved_rules(host)? {
        let Some(tag) = &r.tag else { continue };
        if !remove(tag) {
            continue;
        }
        let mut a: Vec<&str> = vec!["-w", "-t", r.table, "-D", &r.chain];
        a.extend(r.args.iter().map(String::as_str));
        if host.run_delete("iptables", &a)? {
            n += 1;
        }
    }
    Ok(n)
}

/// Whether a NUNET port rule for `proto`/`port` exists (any ensemble).
pub fn port_in_use(host: &Host, proto: &str, port: u16) -> Result<bool, HostError> {
    let port = port.to_string();
    Ok(saved_rules(host)?.iter().any(|r| {
        r.chain == PORTS
            && r.args.windows(2).any(|w| w[0] == "-p" && w[1] == proto)
            && r.args.windows(2).any(|w| w[0] == "--dport" && w[1] == port)
    }))
}

/// When no ensemble rule is left, removes the jumps, default rules and our chains. Returns
/// whether it removed any chain. Call with [`LOCK`] held.
pub fn remove_base_if_unused(host: &Host) -> Result<bool, HostError> {
    let rules = saved_rules(host)?;
    if rules
        .iter()
        .any(|r| r.tag.as_deref().is_some_and(|t| t != COMMON_TAG))
    {
        return Ok(false);
    }
    remove_tagged(host, |t| t == COMMON_TAG)?;
    let mut removed = false;
    for (table, chain) in [
        ("filter", FWD),
        ("filter", IN),
        ("nat", PORTS),
        ("nat", SNAT),
    ] {
        // Untagged rules in our chains can only be left-overs of ours: flush, then delete.
        host.run_delete("iptables", &["-w", "-t", table, "-F", chain])?;
        removed |= host.run_delete("iptables", &["-w", "-t", table, "-X", chain])?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::split_args;

    #[test]
    fn splits_quoted_comment() {
        let a = split_args(r#"-i nv+ -m comment --comment "nunet:ab cd" -j ACCEPT"#);
        assert_eq!(
            a,
            [
                "-i",
                "nv+",
                "-m",
                "comment",
                "--comment",
                "nunet:ab cd",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(split_args(r#"--comment """#), ["--comment", ""]);
    }
}
