//! Packet loss and partitions with nftables inside the host namespaces (this kernel has no
//! `sch_netem`; delay comes from the [`linkemu`](crate::linkemu) topology instead).
//!
//! Each fault is its own nftables table in the host's namespace, so setting one never
//! disturbs another, and removing it is deleting the table:
//! - `inet tdm_loss`: drops a random `percent` of the frames that *arrive* on `eth0` (input
//!   hook). Input, not output, so that each receiver of a multicast frame loses it
//!   independently, as on a real lossy link; a frame crossing one link is rolled once.
//! - `inet tdm_part`: drops everything arriving from the hosts on the other side of a
//!   partition (by source address). Set on both sides, so it is symmetric.
//!
//! The tables die with the namespace, so a panicking test leaves nothing behind.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::Net;

/// Runs `nft -f -` with `script` inside namespace `ns`; panics with nft's message on error.
fn nft(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("nft: {e}"));
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("nft: {e}"));
    assert!(
        out.status.success(),
        "nft in {ns} failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Replaces table `inet name` in `ns` by `body` (chains), or just removes it if `body` is
/// empty. The leading `table` line makes the `delete` valid when the table does not exist.
fn replace_table(ns: &str, name: &str, body: &str) {
    let mut script = format!("table inet {name}\ndelete table inet {name}\n");
    if !body.is_empty() {
        script.push_str(&format!("table inet {name} {{\n{body}\n}}\n"));
    }
    nft(ns, &script);
}

impl Net {
    /// Drops `percent` % of the frames arriving at host `host` (random, independent per
    /// frame); 0 removes the rule.
    pub fn loss(&self, host: usize, percent: u32) {
        assert!(percent <= 100, "loss {percent}%");
        let body = if percent == 0 {
            String::new()
        } else {
            format!(
                "chain input {{ type filter hook input priority -100; policy accept;\n\
                 iifname \"eth0\" numgen random mod 100 < {percent} counter drop\n}}"
            )
        };
        replace_table(self.ns(host), "tdm_loss", &body);
    }

    /// [`Net::loss`] on every host.
    pub fn loss_all(&self, percent: u32) {
        for h in 1..=self.hosts.len() {
            self.loss(h, percent);
        }
    }

    /// Cuts the network into `sides`: hosts in different sides no longer hear each other
    /// (both directions, unicast and multicast). Hosts in no side (e.g. a load balancer)
    /// still reach everyone. Replaces any earlier partition.
    pub fn partition(&self, sides: &[&[usize]]) {
        self.heal();
        for (k, side) in sides.iter().enumerate() {
            let other_hosts: Vec<usize> = sides
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != k)
                .flat_map(|(_, s)| s.iter().copied())
                .collect();
            if other_hosts.is_empty() {
                continue;
            }
            let join = |f: &dyn Fn(usize) -> String| {
                other_hosts
                    .iter()
                    .map(|&h| f(h))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let set = join(&|h| Net::addr(h).to_string());
            let set6 = join(&|h| Net::addr6(h).to_string());
            // IPv6 link-scope multicast may come from the link-local address: the other
            // side's MACs catch those.
            let macs = join(&|h| self.mac(h));
            let body = format!(
                "chain input {{ type filter hook input priority -100; policy accept;\n\
                 ip saddr {{ {set} }} counter drop\n\
                 ip6 saddr {{ {set6} }} counter drop\n\
                 ether saddr {{ {macs} }} counter drop\n}}\n\
                 chain output {{ type filter hook output priority -100; policy accept;\n\
                 ip daddr {{ {set} }} counter drop\n\
                 ip6 daddr {{ {set6} }} counter drop\n}}"
            );
            for &h in side.iter() {
                replace_table(self.ns(h), "tdm_part", &body);
            }
        }
    }

    /// Cuts only the link between hosts `a` and `b` (both directions): a non-transitive
    /// partition, every other pair still hears each other. Replaces any earlier partition.
    pub fn cut(&self, a: usize, b: usize) {
        self.heal();
        for (me, other) in [(a, b), (b, a)] {
            let body = format!(
                "chain input {{ type filter hook input priority -100; policy accept;\n\
                 ip saddr {} counter drop\n}}\n\
                 chain output {{ type filter hook output priority -100; policy accept;\n\
                 ip daddr {} counter drop\n}}",
                Net::addr(other),
                Net::addr(other)
            );
            replace_table(self.ns(me), "tdm_part", &body);
        }
    }

    /// Removes every partition.
    pub fn heal(&self) {
        for h in 1..=self.hosts.len() {
            self.heal_host(h);
        }
    }

    /// Removes host `host`'s side of a partition: it hears the others again (and they hear
    /// it once their own sides go too), so a test can heal unevenly.
    pub fn heal_host(&self, host: usize) {
        replace_table(self.ns(host), "tdm_part", "");
    }

    /// Frames host `host` dropped so far by its loss rule (nft counter), for checks.
    pub fn loss_dropped(&self, host: usize) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns(host),
                "nft",
                "list",
                "table",
                "inet",
                "tdm_loss",
            ])
            .output();
        let Ok(out) = out else { return 0 };
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}
