//! Checks of the harness itself and of tandemd's process behaviour (start, HTTP, signals,
//! exit codes) in network namespaces. These do not depend on the cluster core.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use tandem_tests::{in_netns, namespaces_with_prefix, tandemd_bin, wait_for, Net};

#[test]
fn namespaces_are_created_linked_and_removed() {
    let Some(net) = Net::new(2) else { return };
    let prefix = net.prefix.clone();
    assert_eq!(namespaces_with_prefix(&format!("{prefix}-")).len(), 3);
    // Host 2 listens on its veth address, host 1 connects through the bridge.
    let listener = in_netns(net.ns(2), || TcpListener::bind("198.18.0.2:9911").unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.write_all(b"hi").unwrap();
        peer
    });
    let got = in_netns(net.ns(1), || {
        let addr: SocketAddr = "198.18.0.2:9911".parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        let mut b = String::new();
        s.read_to_string(&mut b).unwrap();
        b
    });
    assert_eq!(got, "hi");
    assert_eq!(server.join().unwrap().ip().to_string(), "198.18.0.1");
    // Link down: host 1 can no longer reach host 2.
    net.link(1, false);
    let reach = in_netns(net.ns(1), || {
        let addr: SocketAddr = "198.18.0.2:9911".parse().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
    });
    assert!(!reach);
    net.link(1, true);
    drop(net);
    assert!(namespaces_with_prefix(&format!("{prefix}-")).is_empty());
}

#[test]
fn node_serves_http_and_exits_0_on_sigterm() {
    let Some(mut net) = Net::new(1) else { return };
    let a = net.start(1, &["--insecure", "--profile", "fast"]);
    let s = net.wait_up(a);
    assert_eq!(s["node_id"], 1, "{s}");
    assert!(s["incarnation"].as_u64().unwrap_or(0) > 1_600_000_000);
    assert!(s["members"].is_array());
    let (code, _) = net.get(a, "/health").unwrap();
    assert!(code == 200 || code == 503);
    let (code, _) = net.get(a, "/nope").unwrap();
    assert_eq!(code, 404);
    let sent = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        net.metric(a, "tandem_frames_sent_total").filter(|&n| n > 0)
    });
    assert!(sent.is_some(), "no frames sent\n{}", net.log(a));
    let st = net
        .sigterm(a)
        .expect("tandemd did not exit within 5 s of SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", net.log(a));
    assert!(net.log(a).contains("left the cluster"));
}

#[test]
fn kill9_stops_the_process() {
    let Some(mut net) = Net::new(1) else { return };
    let a = net.start(1, &["--insecure"]);
    net.wait_up(a);
    assert!(net.running(a));
    net.kill9(a);
    assert!(!net.running(a));
    assert!(net.get(a, "/status").is_none());
}

#[test]
fn config_errors_exit_2_one_line_each() {
    let Some(net) = Net::new(1) else { return };
    // (flags, problems, a word of the first)
    let cases: &[(&[&str], usize, &str)] = &[
        (&["--interface", "eth0"], 2, "--node-id"),
        (&["--node-id", "1", "--interface", "eth0"], 1, "--key-file"),
        (&["--node-id", "1", "--interface", "nope9"], 1, "nope9"),
        (&["--node-id", "1", "--ttl", "0"], 1, "--ttl"),
        (
            &["--node-id", "1", "--key-file", "/nonexistent/key"],
            1,
            "/nonexistent/key",
        ),
    ];
    for (args, problems, needle) in cases {
        let (code, err) = net.run_to_exit(1, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        let lines: Vec<&str> = err.trim().lines().collect();
        assert_eq!(lines.len(), *problems, "{args:?}: {err}");
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("tandemd: config error: ")),
            "{args:?}: {err}"
        );
        assert!(lines[0].contains(needle), "{args:?}: {err}");
    }
    let (code, _) = net.run_to_exit(1, &["--no-such-flag"]);
    assert_eq!(code, Some(2));
    let cfg = std::env::temp_dir().join(format!("tandem-cfg-{}.toml", std::process::id()));
    std::fs::write(&cfg, "node_id = 1\nnode_idd = 2\n").unwrap();
    let (code, err) = net.run_to_exit(1, &["--config", cfg.to_str().unwrap()]);
    let _ = std::fs::remove_file(&cfg);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("node_idd"), "{err}");
}

#[test]
fn raw_transport_without_cap_net_raw_exits_2() {
    let Some(net) = Net::new(1) else { return };
    // As user nobody: no capabilities at all.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            net.ns(1),
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(tandemd_bin())
        .args([
            "--node-id",
            "1",
            "--transport",
            "raw",
            "--http",
            "127.0.0.1:0",
        ])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("CAP_NET_RAW"), "{err}");
}

#[test]
fn systemd_ready_then_stopping() {
    use std::os::unix::net::UnixDatagram;
    let Some(mut net) = Net::new(1) else { return };
    let path = std::env::temp_dir().join(format!("tandem-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // A path socket: reachable from the node's namespace (network namespaces do not
    // separate the file system).
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let a = net.start_env(
        1,
        &["--insecure", "--profile", "fast"],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no READY=1 within 10 s");
    assert_eq!(&buf[..n], b"READY=1", "{}", net.log(a));
    assert_eq!(net.sigterm(a).and_then(|s| s.code()), Some(0));
    let n = sock.recv(&mut buf).expect("no STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn sighup_reloads_the_key_file_and_keeps_old_keys_on_error() {
    let Some(mut net) = Net::new(1) else { return };
    let key = std::env::temp_dir().join(format!("tandem-hup-{}.key", std::process::id()));
    std::fs::write(&key, "1:00112233445566778899aabbccddeeff\n").unwrap();
    let a = net.start(1, &["--key-file", key.to_str().unwrap()]);
    net.wait_up(a);
    // Rotation: new key first, old one still accepted.
    std::fs::write(
        &key,
        "2:ffeeddccbbaa99887766554433221100\n1:00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    net.signal(a, libc::SIGHUP);
    let reloaded = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        net.metric(a, "tandem_key_reloads_total")
            .filter(|&n| n == 1)
    });
    assert!(reloaded.is_some(), "{}", net.log(a));
    assert!(net.log(a).contains("active=2"), "{}", net.log(a));
    // A broken file is refused and logged; the daemon keeps running with the old keys.
    std::fs::write(&key, "garbage\n").unwrap();
    net.signal(a, libc::SIGHUP);
    let logged = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        net.log(a).contains("not reloaded").then_some(())
    });
    let _ = std::fs::remove_file(&key);
    assert!(logged.is_some(), "{}", net.log(a));
    assert!(net.running(a));
    assert_eq!(net.metric(a, "tandem_key_reloads_total"), Some(1));
}
