//! The fault-injection suite (issue 6): real tandemd processes on namespace hosts A, B and a
//! witness W, a real HAProxy in front of A and B, clients only through HAProxy unless a
//! scenario checks one node. Every wait is bounded; every set-up is torn down on panic.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use tandem_tests::resp_client::{Reply, Resp};
use tandem_tests::scenario::{Cluster, Opts};

const DOWN_BOUND: Duration = Duration::from_secs(5);
const HEAL: Duration = Duration::from_secs(20);

fn val(key: &str, n: u64) -> Vec<u8> {
    format!("{key}={n}").into_bytes()
}

/// The data node whose HAProxy server has a client connection open now (`scur` = 1).
fn serving_host(c: &Cluster) -> Option<usize> {
    let lb = c.lb.as_ref()?;
    let stats = lb.command("show stat")?;
    let mut lines = stats.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let col = header.iter().position(|h| *h == "scur")?;
    let busy: Vec<usize> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.first() == Some(&"nodes"))
        .filter(|f| f.get(col).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) > 0)
        .filter_map(|f| match f.get(1) {
            Some(&"a") => Some(1),
            Some(&"b") => Some(2),
            _ => None,
        })
        .collect();
    (busy.len() == 1).then(|| busy[0])
}

/// What a client learned: the last acknowledged value of each key, and a later write whose
/// reply never came (it may or may not have landed).
#[derive(Default)]
struct Ledger {
    acked: HashMap<String, Vec<u8>>,
    unsure: HashMap<String, Vec<u8>>,
}

impl Ledger {
    fn check(&self, key: &str, got: Option<&[u8]>) -> Result<(), String> {
        let want = self.acked.get(key).map(Vec::as_slice);
        let maybe = self.unsure.get(key).map(Vec::as_slice);
        if got == want || (maybe.is_some() && got == maybe) {
            Ok(())
        } else {
            Err(format!(
                "{key}: got {:?}, acknowledged {:?}",
                got.map(String::from_utf8_lossy),
                want.map(String::from_utf8_lossy)
            ))
        }
    }

    fn verify_all(&self, r: &mut Resp) {
        let mut bad = Vec::new();
        for key in self.acked.keys() {
            let got = r.get(key).unwrap_or_else(|e| panic!("GET {key}: {e}"));
            if let Err(e) = self.check(key, got.bytes()) {
                bad.push(e);
            }
        }
        assert!(
            bad.is_empty(),
            "{} lost or stale: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }
}

/// Writes and reads `keys` sessions round-robin through HAProxy for `ops` operations,
/// reconnecting on error (bounded). Calls `at(i)` before operation `i`; returns the errors
/// seen, with the operation index.
fn traffic(
    c: &mut Cluster,
    ledger: &mut Ledger,
    ops: u64,
    keys: u64,
    mut at: impl FnMut(&mut Cluster, u64),
) -> Vec<(u64, String)> {
    let mut errors = Vec::new();
    let mut conn: Option<Resp> = None;
    for i in 0..ops {
        at(c, i);
        let key = format!("s{}", i % keys);
        let v = val(&key, i);
        let Some(r) = conn.as_mut() else {
            match c.client() {
                Ok(r) => conn = Some(r),
                Err(e) => {
                    errors.push((i, format!("connect: {e}")));
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            continue;
        };
        ledger.unsure.insert(key.clone(), v.clone());
        match r.set(&key, &v) {
            Ok(rep) if rep.is_ok() => {
                ledger.unsure.remove(&key);
                ledger.acked.insert(key.clone(), v);
            }
            Ok(rep) => {
                errors.push((i, format!("SET: {rep:?}")));
                continue;
            }
            Err(e) => {
                errors.push((i, format!("SET: {e}")));
                conn = None;
                continue;
            }
        }
        match r.get(&key) {
            Ok(rep) => {
                if let Err(e) = ledger.check(&key, rep.bytes()) {
                    errors.push((i, format!("read-back {e}")));
                }
            }
            Err(e) => {
                errors.push((i, format!("GET: {e}")));
                conn = None;
            }
        }
    }
    errors
}

#[test]
fn haproxy_marks_a_killed_node_down_and_routes_to_the_other() {
    let Some(mut c) = Cluster::start(Opts::default()) else {
        return;
    };
    let mut r = c.client().unwrap();
    assert_eq!(r.cmd(&[b"PING"]).unwrap(), Reply::Simple("PONG".into()));
    c.kill9(1);
    let lb = c.lb.as_ref().unwrap();
    assert!(
        lb.wait_status("a", "DOWN", DOWN_BOUND),
        "a still {:?}",
        lb.server_status("a")
    );
    assert_eq!(lb.server_status("b").as_deref(), Some("UP"));
    let mut r = c.client().unwrap();
    assert_eq!(r.cmd(&[b"PING"]).unwrap(), Reply::Simple("PONG".into()));
}

/// Scenarios 1 and 2: failover under load, then the killed node comes back.
#[test]
fn seed_scenario_kill9_under_load_then_rejoin() {
    let Some(mut c) = Cluster::start(Opts::default()) else {
        return;
    };
    let mut ledger = Ledger::default();
    // Warm-up: the client is on one node; nothing fails.
    let errors = traffic(&mut c, &mut ledger, 400, 50, |_, _| {});
    assert!(errors.is_empty(), "errors before any fault: {errors:?}");
    // Kill the node the client's connection is on, in the middle of the traffic.
    let mut victim = None;
    let mut killed_at = None;
    let errors = traffic(&mut c, &mut ledger, 1200, 50, |c, i| {
        if i == 200 {
            let h = serving_host(c).expect("client connection not on exactly one node");
            c.kill9(h);
            victim = Some(h);
            killed_at = Some(i);
        }
    });
    let (victim, killed_at) = (victim.unwrap(), killed_at.unwrap());
    let survivor = 3 - victim;
    // Errors only inside the failover window: none before the kill, none after the first
    // operation that succeeded again.
    assert!(errors.iter().all(|(i, _)| *i >= killed_at), "{errors:?}");
    if let Some(&(last, _)) = errors.last() {
        assert!(
            last < killed_at + 200,
            "errors long after the kill: {errors:?}"
        );
        let window: Vec<u64> = errors.iter().map(|(i, _)| *i).collect();
        let contiguous = window.windows(2).all(|w| w[1] == w[0] + 1);
        assert!(contiguous, "errors after recovery: {errors:?}");
    }
    let lb = c.lb.as_ref().unwrap();
    let victim_name = Cluster::server_name(victim);
    assert!(
        lb.wait_status(victim_name, "DOWN", DOWN_BOUND),
        "{:?}",
        lb.server_status(victim_name)
    );
    // Every acknowledged write is readable with its latest value.
    ledger.verify_all(&mut c.client().unwrap());
    // Writes while the victim is down, straight on the survivor.
    let mut s = c.direct(survivor).unwrap();
    for i in 0..100 {
        let key = format!("down{i}");
        assert!(s.set(&key, &val(&key, i)).unwrap().is_ok());
        ledger.acked.insert(key.clone(), val(&key, i));
    }
    // Scenario 2: the victim comes back, syncs, turns healthy, HAProxy uses it again.
    c.start_node(victim);
    c.wait_healthy(victim, HEAL);
    let lb = c.lb.as_ref().unwrap();
    assert!(
        lb.wait_status(victim_name, "UP", DOWN_BOUND),
        "{:?}",
        lb.server_status(victim_name)
    );
    ledger.verify_all(&mut c.direct(victim).unwrap());
    let identical = c.wait_identical(HEAL);
    assert!(identical.len() >= 150, "{}", identical.len());
    // Round robin: of a few new connections, some land on the victim again.
    let landed = (0..6).any(|_| {
        let mut r = c.client().unwrap();
        let _ = r.cmd(&[b"PING"]);
        let on = serving_host(&c);
        drop(r);
        std::thread::sleep(Duration::from_millis(50));
        on == Some(victim)
    });
    assert!(
        landed,
        "haproxy never routed a new client to the rejoined node"
    );
    // And traffic through HAProxy is error-free again.
    let errors = traffic(&mut c, &mut ledger, 200, 50, |_, _| {});
    assert!(errors.is_empty(), "{errors:?}");
}
