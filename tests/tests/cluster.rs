//! Cluster behaviour of real tandemd processes across network-namespace hosts (issue 4).
//!
//! Bounds are generous on purpose: these are pass/fail checks, latency is measured by the
//! benches. "Never" is checked over a bounded window of several detection periods.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use tandem_tests::{capture_ttls, in_netns, wait_for, Net};

const JOIN: Duration = Duration::from_secs(5);
/// Far above the fast profile's detection bound, to stay deterministic on a loaded machine.
const FAST_DETECT_BOUND: Duration = Duration::from_secs(2);
const LEFT_AT_ONCE: Duration = Duration::from_millis(500);

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tandem-{}-{name}", std::process::id()))
}

fn key_file(name: &str, line: &str) -> String {
    let p = tmp(name);
    std::fs::write(&p, format!("{line}\n")).unwrap();
    p.to_string_lossy().into_owned()
}

/// Asserts nodes `a` (host id `ida`) and `b` (host id `idb`) each see the other alive.
fn assert_pair_joins(net: &Net, a: usize, ida: u64, b: usize, idb: u64) {
    assert!(
        net.wait_member_state(a, idb, "alive", JOIN),
        "node {a} never saw {idb} alive: {:?}\n{}",
        net.status(a),
        net.log(a)
    );
    assert!(
        net.wait_member_state(b, ida, "alive", JOIN),
        "node {b} never saw {ida} alive: {:?}\n{}",
        net.status(b),
        net.log(b)
    );
}

/// Asserts node `n` receives datagrams it did not send. With multicast loop (`looped`) its
/// own frames come back too, at most as many as it sent, so it must receive more than that.
/// Transport-level only: says nothing about the frames being accepted.
fn assert_hears_peer(net: &Net, n: usize, looped: bool) {
    let heard = wait_for(JOIN, Duration::from_millis(20), || {
        let own = if looped {
            net.metric(n, "tandem_frames_sent_total")?
        } else {
            0
        };
        let got = net.metric(n, "tandem_recv_datagrams_total")?;
        (got > own + 2).then_some(())
    });
    assert!(
        heard.is_some(),
        "node {n} hears no peer datagrams\n{}",
        net.log(n)
    );
}

/// The leader both nodes agree on, if they agree and exactly one of them is the leader.
fn agreed_leader(net: &Net, a: usize, b: usize) -> Option<u64> {
    let (sa, sb) = (net.status(a)?, net.status(b)?);
    let leader = sa["leader"].as_u64()?;
    let leaders = [&sa, &sb].iter().filter(|s| s["role"] == "leader").count();
    (sb["leader"].as_u64() == Some(leader) && leaders == 1).then_some(leader)
}

#[test]
fn two_nodes_find_each_other_and_agree_on_one_leader() {
    let Some(mut net) = Net::new(2) else { return };
    let a = net.start(1, &["--insecure"]);
    let b = net.start(2, &["--insecure"]);
    assert_pair_joins(&net, a, 1, b, 2);
    let leader = wait_for(JOIN, Duration::from_millis(20), || {
        agreed_leader(&net, a, b)
    });
    assert!(
        matches!(leader, Some(1 | 2)),
        "{:?} {:?}",
        net.status(a),
        net.status(b)
    );
    let (code, body) = net.get(a, "/health").unwrap();
    assert_eq!(code, 200, "{body}");
}

/// Header `sender` of every tandem frame that reaches a listener on `ns`'s stack within
/// `window` (a plain socket joined to the default group on `addr`).
fn senders_heard(ns: &str, addr: std::net::Ipv4Addr, window: Duration) -> Vec<u16> {
    use socket2::{Domain, Protocol, Socket, Type};
    in_netns(ns, move || {
        let group = std::net::Ipv4Addr::new(239, 255, 72, 77);
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&std::net::SocketAddrV4::new(group, 7377).into())
            .unwrap();
        s.join_multicast_v4(&group, &addr).unwrap();
        let s = std::net::UdpSocket::from(s);
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let (mut senders, mut buf) = (Vec::new(), [0u8; 1500]);
        let start = std::time::Instant::now();
        // Bounded by `window`; every read waits at most 20 ms.
        while start.elapsed() < window {
            if let Ok(n) = s.recv(&mut buf) {
                if n >= 12 && buf[..4] == *b"TNDM" {
                    senders.push(u16::from_be_bytes([buf[10], buf[11]]));
                }
            }
        }
        senders
    })
}

#[test]
fn no_multicast_loop_keeps_a_nodes_frames_off_its_own_host() {
    let Some(mut net) = Net::new(2) else { return };
    let a = net.start(1, &["--insecure", "--no-multicast-loop"]);
    let b = net.start(2, &["--insecure"]);
    // Across hosts nothing changes.
    assert_pair_joins(&net, a, 1, b, 2);
    // On host 1's own stack, a listener hears host 2's heartbeats (20 ms apart) but none of
    // host 1's; on host 2's, host 1's frames arrive as before.
    let on1 = senders_heard(net.ns(1), Net::addr(1), Duration::from_millis(300));
    assert!(
        on1.contains(&2) && !on1.contains(&1),
        "heard on host 1: {on1:?}"
    );
    let on2 = senders_heard(net.ns(2), Net::addr(2), Duration::from_millis(300));
    assert!(
        on2.contains(&1) && on2.contains(&2),
        "heard on host 2: {on2:?}"
    );
}

#[test]
fn kill9_is_detected_survivor_leads_and_hook_runs() {
    let Some(mut net) = Net::new(2) else { return };
    let hook_out = tmp("hook.log");
    let _ = std::fs::remove_file(&hook_out);
    let hook = format!(
        "echo \"$TANDEM_EVENT $TANDEM_NODE $TANDEM_ROLE $TANDEM_LEADER $TANDEM_VIEW\" >> {}",
        hook_out.display()
    );
    let args = [
        "--insecure",
        "--profile",
        "fast",
        "--on-change",
        hook.as_str(),
    ];
    let a = net.start(1, &args);
    let b = net.start(2, &args);
    assert_pair_joins(&net, a, 1, b, 2);
    let leader = wait_for(JOIN, Duration::from_millis(20), || {
        agreed_leader(&net, a, b)
    })
    .expect("no agreed leader");
    // Kill the leader, so the survivor has to take over.
    let (victim, victim_id, survivor, survivor_id) = if leader == 1 {
        (a, 1, b, 2)
    } else {
        (b, 2, a, 1)
    };
    net.kill9(victim);
    assert!(
        net.wait_member_state(survivor, victim_id, "dead", FAST_DETECT_BOUND),
        "survivor never marked {victim_id} dead: {:?}",
        net.status(survivor)
    );
    let s = wait_for(JOIN, Duration::from_millis(10), || {
        net.status(survivor).filter(|s| s["role"] == "leader")
    })
    .unwrap_or_else(|| panic!("survivor did not become leader: {:?}", net.status(survivor)));
    assert_eq!(s["leader"].as_u64(), Some(survivor_id));
    let view = s["view"].as_u64().unwrap_or(0);
    // The hook ran with the right variables (bounded wait for the shell to finish).
    // Hooks run one at a time, in event order: wait (bounded) for the exact lines, not just
    // for any earlier role change.
    let want_dead = format!("member_dead {victim_id} leader {survivor_id} ");
    let want_role = format!("role_changed {survivor_id} leader {survivor_id} {view}");
    let log = wait_for(JOIN, Duration::from_millis(20), || {
        std::fs::read_to_string(&hook_out)
            .ok()
            .filter(|l| l.contains(&want_dead) && l.lines().any(|x| x == want_role))
    });
    let last = std::fs::read_to_string(&hook_out).unwrap_or_default();
    let _ = std::fs::remove_file(&hook_out);
    assert!(
        log.is_some(),
        "hook lines missing; want {want_dead:?} and {want_role:?}; got:\n{last}"
    );
}

#[test]
fn sigterm_shows_left_at_once() {
    let Some(mut net) = Net::new(2) else { return };
    // wan profile: its detector would take seconds, so `left` can only come from the Leave.
    let a = net.start(1, &["--insecure", "--profile", "wan"]);
    let b = net.start(2, &["--insecure", "--profile", "wan"]);
    assert_pair_joins(&net, a, 1, b, 2);
    assert_eq!(net.sigterm(b).and_then(|s| s.code()), Some(0));
    assert!(
        net.wait_member_state(a, 2, "left", LEFT_AT_ONCE),
        "{:?}",
        net.status(a)
    );
}

#[test]
fn restart_rejoins_with_a_new_incarnation() {
    let Some(mut net) = Net::new(2) else { return };
    let a = net.start(1, &["--insecure", "--profile", "fast"]);
    let b = net.start(2, &["--insecure", "--profile", "fast"]);
    assert_pair_joins(&net, a, 1, b, 2);
    let incarnation_of_2 = |net: &Net| -> Option<u64> {
        net.status(a)?["members"]
            .as_array()?
            .iter()
            .find(|m| m["node_id"] == 2)?["incarnation"]
            .as_u64()
    };
    let first = incarnation_of_2(&net).expect("incarnation of node 2");
    net.kill9(b);
    assert!(net.wait_member_state(a, 2, "dead", FAST_DETECT_BOUND));
    let b2 = net.start(2, &["--insecure", "--profile", "fast"]);
    assert!(
        net.wait_member_state(a, 2, "alive", JOIN),
        "{:?}",
        net.status(a)
    );
    let second = incarnation_of_2(&net).unwrap_or(0);
    assert!(second > first, "incarnation {second} not > {first}");
    assert_eq!(net.wait_up(b2)["incarnation"].as_u64(), Some(second));
}

#[test]
fn raw_transport_works() {
    let Some(mut net) = Net::new(2) else { return };
    let a = net.start(1, &["--insecure", "--transport", "raw"]);
    let b = net.start(2, &["--insecure", "--transport", "raw"]);
    // Off loopback the multicast loop is off and own frames are filtered in the kernel.
    assert_hears_peer(&net, a, false);
    assert_hears_peer(&net, b, false);
    assert_pair_joins(&net, a, 1, b, 2);
}

#[test]
fn unicast_transport_works() {
    let Some(mut net) = Net::new(2) else { return };
    let a = net.start(
        1,
        &[
            "--insecure",
            "--transport",
            "unicast",
            "--peer",
            "198.18.0.2:7377",
        ],
    );
    let b = net.start(
        2,
        &[
            "--insecure",
            "--transport",
            "unicast",
            "--peer",
            "198.18.0.1:7377",
        ],
    );
    assert_hears_peer(&net, a, false);
    assert_hears_peer(&net, b, false);
    assert_pair_joins(&net, a, 1, b, 2);
}

/// A state transfer is for its requester alone: on `--transport unicast` the serving node
/// sends its chunks to the node that asked, not to every peer (issue 12). Nodes 1 and 2 hold
/// sessions; node 3 joins empty and pulls them; neither 1 nor 2 ever receives a chunk.
#[test]
fn unicast_state_transfer_reaches_only_its_requester() {
    let Some(mut net) = Net::new(3) else { return };
    let peers = |me: usize| -> Vec<String> {
        (1..=3)
            .filter(|&h| h != me)
            .flat_map(|h| ["--peer".to_string(), format!("{}:7377", Net::addr(h))])
            .collect()
    };
    let start = |net: &mut Net, h: usize| {
        let mut args: Vec<String> = ["--insecure", "--transport", "unicast"]
            .map(String::from)
            .to_vec();
        args.extend(peers(h));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        net.start(h, &refs)
    };
    let a = start(&mut net, 1);
    let b = start(&mut net, 2);
    assert_pair_joins(&net, a, 1, b, 2);
    const SESSIONS: u64 = 2_000;
    let resp = std::net::SocketAddr::from(([127, 0, 0, 1], tandem_tests::RESP_PORT));
    let mut client = tandem_tests::resp_client::Resp::connect(net.ns(1), resp, JOIN).unwrap();
    let cmds: Vec<Vec<Vec<u8>>> = (0..SESSIONS)
        .map(|i| {
            vec![
                b"SET".to_vec(),
                format!("sess:{i}").into_bytes(),
                vec![b'v'; 200],
            ]
        })
        .collect();
    for batch in cmds.chunks(200) {
        for reply in client.pipeline(batch).unwrap() {
            assert!(reply.is_ok(), "{reply:?}");
        }
    }
    let chunks = |net: &Net, n: usize| net.metric(n, "tandem_sync_chunks_received_total");
    let (before_a, before_b) = (chunks(&net, a).unwrap(), chunks(&net, b).unwrap());
    let c = start(&mut net, 3);
    let synced = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let done =
            net.metric(c, "tandem_synced")? == 1 && net.metric(c, "tandem_sessions")? == SESSIONS;
        done.then_some(())
    });
    assert!(
        synced.is_some(),
        "node 3 never synced: {:?}\n{}",
        net.status(c),
        net.log(c)
    );
    // The server's datagrams for node 3 alone: at least one per chunk.
    let to_3: u64 = [a, b]
        .iter()
        .filter_map(|&n| net.metric(n, "tandem_datagrams_sent_total{to=\"node\",node=\"3\"}"))
        .sum();
    assert!(to_3 >= SESSIONS, "datagrams sent to node 3: {to_3}");
    assert!(
        chunks(&net, c).unwrap() >= SESSIONS,
        "node 3 received {:?} chunks",
        chunks(&net, c)
    );
    assert_eq!(
        chunks(&net, a).unwrap() - before_a,
        0,
        "node 1 received chunks"
    );
    assert_eq!(
        chunks(&net, b).unwrap() - before_b,
        0,
        "node 2 received chunks"
    );
}

#[test]
fn wrong_key_never_joins_and_auth_drops_are_counted() {
    let Some(mut net) = Net::new(3) else { return };
    let good = key_file("good.key", "1:00112233445566778899aabbccddeeff");
    let bad = key_file("bad.key", "1:ffeeddccbbaa99887766554433221100");
    let a = net.start(1, &["--key-file", &good]);
    let b = net.start(2, &["--key-file", &bad]);
    let c = net.start(3, &["--key-file", &good]);
    // Positive control: same key joins.
    assert_pair_joins(&net, a, 1, c, 3);
    let drops = wait_for(JOIN, Duration::from_millis(20), || {
        net.metric(a, "tandem_frames_dropped_total{reason=\"auth\"}")
            .filter(|&n| n > 0)
    });
    assert!(drops.is_some(), "no auth drops counted on node 1");
    // Never: over a window of many heartbeat periods, 2 never shows up anywhere.
    let joined = wait_for(Duration::from_secs(1), Duration::from_millis(20), || {
        let seen = net.member_state(a, 2).is_some()
            || net.member_state(c, 2).is_some()
            || net.member_state(b, 1).is_some();
        seen.then_some(())
    });
    let _ = std::fs::remove_file(tmp("good.key"));
    let _ = std::fs::remove_file(tmp("bad.key"));
    assert!(
        joined.is_none(),
        "wrong-key node joined: {:?}",
        net.status(a)
    );
}

#[test]
fn another_cluster_id_on_the_same_group_is_ignored() {
    let Some(mut net) = Net::new(3) else { return };
    let a = net.start(1, &["--insecure", "--cluster-id", "1"]);
    let b = net.start(2, &["--insecure", "--cluster-id", "1"]);
    let c = net.start(3, &["--insecure", "--cluster-id", "2"]);
    assert_pair_joins(&net, a, 1, b, 2);
    let drops = wait_for(JOIN, Duration::from_millis(20), || {
        net.metric(a, "tandem_frames_dropped_total{reason=\"other_cluster\"}")
            .filter(|&n| n > 0)
    });
    assert!(drops.is_some(), "no other_cluster drops counted on node 1");
    let mixed = wait_for(Duration::from_secs(1), Duration::from_millis(20), || {
        (net.member_state(a, 3).is_some() || net.member_state(c, 1).is_some()).then_some(())
    });
    assert!(
        mixed.is_none(),
        "clusters mixed: {:?} {:?}",
        net.status(a),
        net.status(c)
    );
}

#[test]
fn frames_carry_ttl_1_and_stay_on_the_link() {
    let Some(mut net) = Net::new(2) else { return };
    let _a = net.start(1, &["--insecure", "--profile", "fast"]);
    let _b = net.start(2, &["--insecure", "--profile", "fast"]);
    // Host 2 sees node 1's frames arrive with TTL 1: no router will forward them.
    let seen = capture_ttls(net.ns(2), libc_udp(), Duration::from_secs(2), 20);
    let from_group: Vec<_> = seen.iter().filter(|(_, dst)| dst.is_multicast()).collect();
    assert!(!from_group.is_empty(), "no multicast frames seen: {seen:?}");
    assert!(
        from_group.iter().all(|(ttl, _)| *ttl == 1),
        "{from_group:?}"
    );
}

fn libc_udp() -> i32 {
    17
}

#[test]
fn readme_demo_shows_both_nodes() {
    let Some(net) = Net::new(1) else { return };
    // The README's one command, run inside a namespace so its fixed ports cannot clash.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", net.ns(1), "timeout", "30"])
        .arg(&script)
        .arg("--check")
        .env("TANDEMD", tandem_tests::tandemd_bin())
        .output()
        .expect("demo.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses: Vec<tandem_tests::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(statuses.len(), 2, "{text}");
    for (s, other) in statuses.iter().zip([2, 1]) {
        // The demo waits for both to be healthy, not just for node 2 to be listed.
        assert_eq!(s["healthy"], true, "{s}");
        let members = s["members"].as_array().cloned().unwrap_or_default();
        assert!(
            members
                .iter()
                .any(|m| m["node_id"] == other && m["state"] == "alive"),
            "node {} does not list node {other} alive: {s}",
            s["node_id"]
        );
    }
}
