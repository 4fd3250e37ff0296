//! Client-visible outage on a floating VIP when its host fails (issue 14), tandem
//! (`--profile fast`) and keepalived (VRRPv3, 10 ms adverts, the fastest it offers) on the
//! same namespace topology, in the same run: hosts 1 and 2 run the pair, host 3 is the
//! client. Per run: host 3 pings the VIP every millisecond (`ping -i 0.001 -D`); after 300
//! ms host 1 fails (its link down and its daemon killed with -9, which is what a host
//! failure looks like); the outage is the longest gap between two echo replies. Then host
//! 1 comes back clean (stale address removed, link up, daemon restarted) and takes the VIP
//! back before the next run.
//!
//! Also tandem on `lan`, tandem `fast` with an IPv6 VIP (the cluster on an IPv6 group, the
//! VIP announced by neighbour advertisement), and tandem `fast` on SIGTERM (a graceful stop,
//! host 1 stays up).
//! Prints p50, p99 and max per system. Needs root; installs the keepalived Debian package
//! when it is missing; prints SKIP if that fails. Bounded: every wait has a limit.
//! Run: `cargo bench -p tandem-tests --bench vip_outage` (TANDEM_BENCH_RUNS, default 20).
// A failed unwrap in a bench is a failed bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tandem_tests::{sh, wait_for, Net};

/// A VIP: its address as `ip addr` prints it, and the cluster flags that float it.
#[derive(Clone, Copy)]
struct Vip {
    cidr: &'static str,
    flags: [&'static str; 4],
}

const VIP: Vip = Vip {
    cidr: "198.18.0.100/24",
    flags: [
        "--vip",
        "198.18.0.100/24@1",
        "--group",
        "239.255.72.77:7377",
    ],
};
const VIP6: Vip = Vip {
    cidr: "fd00:7a6e::100/64",
    flags: [
        "--vip",
        "fd00:7a6e::100/64@1",
        "--group",
        "[ff02::7a6e]:7377",
    ],
};
const PING_COUNT: &str = "1200";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("vip_outage: run with `cargo bench -p tandem-tests --bench vip_outage`");
        return;
    }
    let runs: usize = std::env::var("TANDEM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let fast = tandem_runs(runs, "fast", Failure::Host, VIP);
    let keepalived = keepalived_runs(runs);
    let lan = tandem_runs(runs, "lan", Failure::Host, VIP);
    let fast6 = tandem_runs(runs, "fast", Failure::Host, VIP6);
    let graceful = tandem_runs(runs, "fast", Failure::Sigterm, VIP);
    println!("client-visible VIP outage on host failure (link down + kill -9), {runs} runs each:");
    report("tandem --profile fast", fast);
    report("keepalived advert_int 0.01", keepalived);
    report("tandem --profile lan", lan);
    report("tandem --profile fast, IPv6", fast6);
    println!("on a graceful stop (SIGTERM):");
    report("tandem --profile fast", graceful);
}

fn report(name: &str, mut v: Vec<f64>) {
    if v.is_empty() {
        println!("  {name:28} no runs");
        return;
    }
    v.sort_by(f64::total_cmp);
    let pick = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "  {name:28} n={:3}  p50 {:6.1} ms  p99 {:6.1} ms  max {:6.1} ms",
        v.len(),
        pick(0.5),
        pick(0.99),
        v[v.len() - 1]
    );
}

fn wait_owner(net: &Net, host: usize, other: usize, vip: Vip) -> bool {
    wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
        (net.holds_address(host, vip.cidr) && !net.holds_address(other, vip.cidr)).then_some(())
    })
    .is_some()
}

/// Starts the ping from host 3, returns it (it ends by itself after PING_COUNT echoes).
fn start_ping(net: &Net, vip: Vip) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            net.ns(3),
            "ping",
            "-n",
            "-D",
            "-i",
            "0.001",
            "-W",
            "1",
        ])
        .args(["-c", PING_COUNT, vip.cidr.split('/').next().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ping")
}

/// The longest gap between two replies, in milliseconds.
fn outage(ping: Child) -> Option<f64> {
    let out = ping.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stamps: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    let gap = stamps.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    (stamps.len() > 10).then_some(gap * 1000.0)
}

/// Fails host 1 (link down, its daemon processes killed) while the ping runs.
fn fail_host1(net: &mut Net, vip: Vip, kill: impl FnOnce(&mut Net)) -> Child {
    let ping = start_ping(net, vip);
    std::thread::sleep(Duration::from_millis(300));
    net.link(1, false);
    kill(net);
    ping
}

/// Brings host 1 back clean: the stale VIP removed, link up.
fn restore_host1(net: &Net, vip: Vip) {
    let _ = Command::new("ip")
        .args(["-n", net.ns(1), "addr", "del", vip.cidr, "dev", "eth0"])
        .stderr(Stdio::null())
        .status();
    net.link(1, true);
}

/// How host 1's node goes away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Link down, then kill -9: a host failure.
    Host,
    /// SIGTERM: a graceful stop (the node releases its VIP before its Leave).
    Sigterm,
}

fn tandem_runs(runs: usize, profile: &str, failure: Failure, vip: Vip) -> Vec<f64> {
    let Some(mut net) = Net::new(3) else {
        println!("tandem: SKIP (no namespaces)");
        return Vec::new();
    };
    let mut args = vec!["--insecure", "--profile", profile, "--vip-hold", "200ms"];
    args.extend_from_slice(&vip.flags);
    let mut n1 = net.start(1, &args);
    net.start(2, &args);
    let mut out = Vec::new();
    for run in 0..runs {
        if !wait_owner(&net, 1, 2, vip) {
            println!("tandem: run {run}: host 1 never held the VIP; stopping");
            break;
        }
        let ping = match failure {
            Failure::Host => fail_host1(&mut net, vip, |net| net.kill9(n1)),
            Failure::Sigterm => {
                let ping = start_ping(&net, vip);
                std::thread::sleep(Duration::from_millis(300));
                net.sigterm(n1);
                ping
            }
        };
        match outage(ping) {
            Some(ms) => out.push(ms),
            None => println!("tandem: run {run}: no replies"),
        }
        restore_host1(&net, vip);
        n1 = net.start(1, &args);
    }
    out
}

fn keepalived_conf(net: &Net, host: usize, priority: u8) -> String {
    let path = std::env::temp_dir().join(format!("{}-keepalived-{host}.conf", net.ns(host)));
    let conf = format!(
        "global_defs {{\n  vrrp_version 3\n  router_id h{host}\n}}\n\
         vrrp_instance VI {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  \
         priority {priority}\n  advert_int 0.01\n  virtual_ipaddress {{\n    {} dev eth0\n  }}\n}}\n",
        VIP.cidr
    );
    std::fs::write(&path, conf).unwrap();
    path.to_string_lossy().into_owned()
}

fn start_keepalived(net: &Net, host: usize, conf: &str, generation: usize) -> Child {
    let dir = std::env::temp_dir();
    let pid = |what: &str| {
        dir.join(format!("{}-{generation}-{what}.pid", net.ns(host)))
            .to_string_lossy()
            .into_owned()
    };
    Command::new("ip")
        .args([
            "netns",
            "exec",
            net.ns(host),
            "keepalived",
            "--dont-fork",
            "--vrrp",
        ])
        .args(["-f", conf, "-p", &pid("main"), "-r", &pid("vrrp")])
        .args(["--no-syslog", "--log-console"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join(format!("{}-keepalived.log", net.ns(host))))
                .map_or(Stdio::null(), Stdio::from),
        )
        .spawn()
        .expect("keepalived")
}

/// SIGKILL to every process in host `host`'s namespace (only keepalived runs there).
fn kill_host_processes(net: &Net, host: usize) {
    for pid in sh(&["ip", "netns", "pids", net.ns(host)]).split_whitespace() {
        if pid.parse::<u32>().is_ok() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

fn keepalived_runs(runs: usize) -> Vec<f64> {
    let present = || Command::new("keepalived").arg("--version").output().is_ok();
    if !present() {
        // The Debian package, as the issue asks: installed by the bench when missing.
        println!("keepalived: installing the Debian package");
        let _ = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "keepalived",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
    }
    if !present() {
        println!("keepalived: SKIP (apt-get install keepalived failed)");
        return Vec::new();
    }
    let Some(mut net) = Net::new(3) else {
        println!("keepalived: SKIP (no namespaces)");
        return Vec::new();
    };
    let c1 = keepalived_conf(&net, 1, 150);
    let c2 = keepalived_conf(&net, 2, 100);
    let mut k1 = start_keepalived(&net, 1, &c1, 0);
    let mut k2 = start_keepalived(&net, 2, &c2, 0);
    let mut out = Vec::new();
    for run in 0..runs {
        if !wait_owner(&net, 1, 2, VIP) {
            println!("keepalived: run {run}: host 1 never held the VIP; stopping");
            break;
        }
        let ping = fail_host1(&mut net, VIP, |net| kill_host_processes(net, 1));
        let _ = k1.wait();
        match outage(ping) {
            Some(ms) => out.push(ms),
            None => println!("keepalived: run {run}: no replies"),
        }
        restore_host1(&net, VIP);
        k1 = start_keepalived(&net, 1, &c1, run + 1);
    }
    kill_host_processes(&net, 1);
    kill_host_processes(&net, 2);
    let _ = k1.wait();
    let _ = k2.wait();
    let tmp = std::env::temp_dir();
    for (host, last) in [(1, runs), (2, 0)] {
        let _ = std::fs::remove_file(tmp.join(format!("{}-keepalived.log", net.ns(host))));
        for g in 0..=last {
            for f in ["main", "vrrp"] {
                let _ = std::fs::remove_file(tmp.join(format!("{}-{g}-{f}.pid", net.ns(host))));
            }
        }
    }
    for c in [c1, c2] {
        let _ = std::fs::remove_file(c);
    }
    out
}
