//! The cluster over IPv6 (issue 14): two namespace hosts on a link-scope IPv6 multicast group,
//! on unicast `[v6]:port` peers and on raw IPv6; RESP and HTTP on the hosts' IPv6 addresses
//! (fd00:7a6e::/64, on the veths only). The IPv6 VIPs are in tests/tests/vip.rs.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tandem_tests::resp_client::Resp;
use tandem_tests::{http_get, Net};

/// Far above the fast profile's detection, for a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(5);

/// `--resp`/`--http` on host `i`'s own IPv6 address.
fn v6(i: usize, port: u16) -> String {
    SocketAddr::new(Net::addr6(i).into(), port).to_string()
}

#[test]
fn multicast_over_ipv6_detects_kill9_and_sessions_replicate_over_ipv6() {
    let Some(mut net) = Net::new(3) else { return };
    // `tandemd check` takes the IPv6 forms and checks the addresses against the host's.
    let check = |http: &str| {
        let mut a = vec![
            "check",
            "--node-id",
            "1",
            "--interface",
            "eth0",
            "--insecure",
        ];
        a.extend([
            "--group",
            "[ff02::7a6e]:7377",
            "--resp",
            "[fd00:7a6e::1]:6380",
        ]);
        a.extend(["--http", http, "--vip", "fd00:7a6e::100/64@1"]);
        net.run(1, &a)
    };
    let (code, out, err) = check("[::1]:7380");
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, _, err) = check("[fd00:7a6e::9]:7380");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("fd00:7a6e::9 is not an address of this host"),
        "{err}"
    );
    let mut nodes = Vec::new();
    for i in 1..=2 {
        let (http, resp) = (v6(i, 7380), v6(i, 6380));
        let args = [
            "--insecure",
            "--profile",
            "fast",
            "--group",
            "[ff02::7a6e]:7377",
            "--http",
            &http,
            "--resp",
            &resp,
            "--protected-mode",
            "no",
        ];
        nodes.push(net.start(i, &args));
    }
    let (a, b) = (nodes[0], nodes[1]);
    assert!(
        net.wait_member_state(a, 2, "alive", BOUND) && net.wait_member_state(b, 1, "alive", BOUND),
        "the nodes never found each other over IPv6\n{}\n{}",
        net.log(a),
        net.log(b)
    );
    // HTTP on an IPv6 address, from another host.
    let (code, body) = http_get(net.ns(3), v6(1, 7380).parse().unwrap(), "/health").unwrap();
    assert_eq!(code, 200, "{body}");
    // A session written on node 1 over IPv6 RESP is on node 2 when acknowledged (sync).
    let mut c1 = Resp::connect(net.ns(3), v6(1, 6380).parse().unwrap(), BOUND).unwrap();
    assert!(c1.set("v6:s", b"over IPv6").unwrap().is_ok());
    drop(c1);
    let mut c2 = Resp::connect(net.ns(3), v6(2, 6380).parse().unwrap(), BOUND).unwrap();
    assert_eq!(c2.get("v6:s").unwrap().bytes(), Some(&b"over IPv6"[..]));
    drop(c2);
    net.kill9(a);
    assert!(
        net.wait_member_state(b, 1, "dead", BOUND),
        "kill -9 never detected over IPv6\n{}",
        net.log(b)
    );
    let s = net.status(b).unwrap();
    assert_eq!(s["leader"], 2, "{s}");
    let mut c2 = Resp::connect(net.ns(3), v6(2, 6380).parse().unwrap(), BOUND).unwrap();
    assert_eq!(c2.get("v6:s").unwrap().bytes(), Some(&b"over IPv6"[..]));
}

#[test]
fn unicast_to_ipv6_peers_and_raw_ipv6_form_clusters() {
    let Some(mut net) = Net::new(4) else { return };
    // Hosts 1 and 2: unicast to [fd00:7a6e::N]:7377.
    for (me, peer) in [(1, 2), (2, 1)] {
        let p = v6(peer, 7377);
        net.start(
            me,
            &[
                "--insecure",
                "--profile",
                "fast",
                "--transport",
                "unicast",
                "--peer",
                &p,
                "--cluster-id",
                "61",
            ],
        );
    }
    // Hosts 3 and 4: raw IPv6 (protocol 253) on their own link-scope group.
    for _ in 3..=4 {
        let host = net.nodes.len() + 1;
        net.start(
            host,
            &[
                "--insecure",
                "--profile",
                "fast",
                "--transport",
                "raw",
                "--group",
                "[ff02::7a6f]:7377",
                "--cluster-id",
                "62",
            ],
        );
    }
    for (node, peer) in [(0, 2), (1, 1), (2, 4), (3, 3)] {
        assert!(
            net.wait_member_state(node, peer, "alive", BOUND),
            "node {node} never saw {peer} alive\n{}",
            net.log(node)
        );
    }
    // Each pair only: the clusters do not mix (cluster id, and unicast goes to its peer).
    let members = |n: usize| net.status(n).unwrap()["members"].as_array().unwrap().len();
    assert_eq!((members(0), members(2)), (2, 2));
    // Raw detection works too.
    net.kill9(3);
    assert!(net.wait_member_state(2, 4, "dead", BOUND), "{}", net.log(2));
}
