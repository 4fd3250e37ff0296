//! The state-transfer scenario of issue 11 item 4, shared by its test and its bench: A on
//! host 1 and B on host 2, `--profile fast`, B holding `sessions` values of 1 KiB, and A
//! restarted (SIGTERM, start) again and again, each time pulling the whole store from B.
//! Suspicions and deaths of the live peer on either side are counted both from `/metrics`
//! and from the `cluster change` log lines.

use std::time::{Duration, Instant};

use crate::logs::{is_event, parse_rfc3339_us};
use crate::resp_client::Reply;
use crate::scenario::{Cluster, Opts};

/// Bytes of every session value.
pub const VALUE_LEN: usize = 1024;

/// What one restart of A saw.
#[derive(Debug, Clone)]
pub struct Restart {
    /// From A's "pulling the full session state" log line to its "state transfer complete".
    pub transfer: Duration,
    /// From starting A's process to its `/health` answering 200.
    pub to_healthy: Duration,
    /// A's `tandem_loop_slice_max_seconds` after the transfer (`None`: not exported).
    pub slice_max: Option<f64>,
    /// Suspicions and deaths (metrics) that A's process counted during its life.
    pub suspicions: u64,
    pub detections: u64,
}

/// The value of session `i`: its number, padded to [`VALUE_LEN`] bytes.
pub fn value(i: usize) -> Vec<u8> {
    let mut v = format!("{i:07}-").into_bytes();
    v.resize(VALUE_LEN, b'a' + (i % 26) as u8);
    v
}

pub fn key(i: usize) -> String {
    format!("xfer:{i:07}")
}

/// Starts the pair on `fast` (no witness, no load balancer); `None` without namespaces.
pub fn start_pair() -> Option<Cluster> {
    Cluster::start(Opts {
        witness: false,
        haproxy: false,
        emulated: None,
        extra: ["--profile", "fast", "--max-sessions", "200000"]
            .map(String::from)
            .to_vec(),
    })
}

/// Writes sessions `0..n` through B (pipelined, synchronous: A holds them too).
pub fn fill(c: &Cluster, n: usize) {
    let mut b = c.direct(2).unwrap_or_else(|e| panic!("connect to B: {e}"));
    for start in (0..n).step_by(200) {
        let cmds: Vec<Vec<Vec<u8>>> = (start..n.min(start + 200))
            .map(|i| vec![b"SET".to_vec(), key(i).into_bytes(), value(i)])
            .collect();
        let replies = b
            .pipeline(&cmds)
            .unwrap_or_else(|e| panic!("SET batch at {start}: {e}"));
        for (k, r) in replies.iter().enumerate() {
            assert!(r.is_ok(), "SET {}: {r:?}", key(start + k));
        }
    }
}

/// Restarts A once: SIGTERM, start, wait until it is healthy (synced from B). Checks that A
/// holds all `n` sessions (count, and the values of every `n / sample`-th key).
pub fn restart_a(c: &mut Cluster, n: usize, sample: usize) -> Restart {
    let old = c.node(1);
    assert!(c.net.sigterm(old).is_some(), "A did not stop on SIGTERM");
    let started = Instant::now();
    let idx = c.start_node(1);
    c.wait_healthy(1, Duration::from_secs(60));
    let to_healthy = started.elapsed();
    let log = c.net.log(idx);
    let at = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .and_then(|l| parse_rfc3339_us(l.split_whitespace().next()?))
    };
    let (Some(pull), Some(done)) = (
        at("pulling the full session state"),
        at("state transfer complete"),
    ) else {
        panic!("A's log has no complete transfer:\n{log}")
    };
    let held = c.metric(1, "tandem_sessions").unwrap_or(0);
    assert_eq!(
        held as usize, n,
        "A holds {held} of {n} sessions after its sync"
    );
    let mut a = c.direct(1).unwrap_or_else(|e| panic!("connect to A: {e}"));
    let keys: Vec<usize> = (0..n).step_by(sample.max(1)).collect();
    for chunk in keys.chunks(500) {
        let names: Vec<String> = chunk.iter().map(|&i| key(i)).collect();
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(names.iter().map(|k| k.as_bytes()));
        let Ok(Reply::Array(Some(vals))) = a.cmd(&args) else {
            panic!("MGET on A failed")
        };
        for (&i, v) in chunk.iter().zip(vals) {
            assert_eq!(v.bytes(), Some(&value(i)[..]), "A's value of {}", key(i));
        }
    }
    Restart {
        transfer: Duration::from_micros(u64::try_from(done - pull).unwrap_or(0)),
        to_healthy,
        slice_max: metric_f64(c, 1, "tandem_loop_slice_max_seconds"),
        suspicions: c.metric(1, "tandem_suspicions_total").unwrap_or(0),
        detections: c.metric(1, "tandem_detections_total").unwrap_or(0),
    }
}

/// A sample that may be fractional (seconds).
pub fn metric_f64(c: &Cluster, host: usize, name: &str) -> Option<f64> {
    let (code, body) = c.net.get(c.node(host), "/metrics")?;
    if code != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The loop figures of the node on `host` (for failure messages).
pub fn loop_figures(c: &Cluster, host: usize) -> String {
    let Some((_, body)) = c.net.get(c.node(host), "/metrics") else {
        return format!("host {host}: no /metrics");
    };
    let names = [
        "tandem_loop_slice_max_seconds",
        "tandem_loop_turn_max_seconds",
        "tandem_loop_timer_late_max_seconds",
        "tandem_loop_stalls_total",
        "tandem_stall_pardons_total",
        "tandem_send_dropped_total",
        "tandem_suspicions_total",
    ];
    let lines: Vec<&str> = body
        .lines()
        .filter(|l| names.iter().any(|n| l.starts_with(n)))
        .collect();
    format!("host {host}: {}", lines.join(", "))
}

/// `cluster change` log lines of node index `node` that suspect or declare dead a member.
pub fn false_alarms(c: &Cluster, node: usize) -> Vec<String> {
    c.net
        .log(node)
        .lines()
        .filter(|l| is_event(l, "member_suspect") || is_event(l, "member_dead"))
        .map(str::to_string)
        .collect()
}

/// UDP datagrams the kernel of `host`'s namespace dropped because a socket's receive buffer
/// was full (`UdpRcvbufErrors`), since the namespace was made. (`UdpInErrors` also counts the
/// datagrams the cluster sockets' filters drop by design, so it says nothing here.)
pub fn socket_buffer_drops(c: &Cluster, host: usize) -> u64 {
    let out = crate::sh(&["ip", "netns", "exec", c.net.ns(host), "nstat", "-asz"]);
    out.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "UdpRcvbufErrors").then(|| w.next()?.parse().ok())?
        })
        .unwrap_or(0)
}
