//! Protocol security against a careless operator and an attacker on the link (issue 17):
//! real `tandemd` processes on network-namespace hosts.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::hostile::{forge_keyless_heartbeats, GROUP};
use tandem_tests::{in_netns, wait_for, Net};

/// Node id the forged frames claim: no test starts it.
const FORGED: u16 = 0x7e0e;

/// A node without a key may only listen on loopback; a forged keyless heartbeat that arrives
/// on another interface of its host must not reach it, even when some other socket of the
/// host has joined the group there (`IP_MULTICAST_ALL` is on by default on Linux).
#[test]
fn keyless_node_on_lo_ignores_multicast_from_other_interfaces() {
    let Some(mut net) = Net::new(2) else { return };
    let a = net.start_on(1, "lo", &[], &[]);
    net.wait_up(a);
    // Another program on host 1 joins the group on eth0 and keeps it joined while the
    // forger sends; what it hears also proves the forged frames reached host 1.
    let ns1 = net.ns(1).to_string();
    let listener = std::thread::spawn(move || datagrams_heard_on(&ns1, Net::addr(1)));
    std::thread::sleep(Duration::from_millis(200));
    let sent = forge_keyless_heartbeats(net.ns(2), GROUP, 1, FORGED, 100, Duration::from_millis(5));
    let heard = listener.join().unwrap();
    assert!(sent > 50, "forger sent only {sent}");
    assert!(
        heard > 50,
        "the forged frames never reached host 1's eth0 ({heard} heard): the test proves nothing"
    );
    let members = net.status(a).unwrap()["members"].clone();
    let forged_seen = members
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["node_id"].as_u64() == Some(u64::from(FORGED)));
    assert!(
        !forged_seen,
        "a keyless node on lo took a forged member from eth0: {members}\n{}",
        net.log(a)
    );
}

/// Datagrams a plain socket joined to the default group on `addr` (sharing the port with the
/// daemon, as another program would) hears in 1.5 s inside `ns`.
fn datagrams_heard_on(ns: &str, addr: std::net::Ipv4Addr) -> usize {
    use socket2::{Domain, Protocol, Socket, Type};
    in_netns(ns, move || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&GROUP.into()).unwrap();
        s.join_multicast_v4(GROUP.ip(), &addr).unwrap();
        let s = std::net::UdpSocket::from(s);
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let (mut heard, mut buf) = (0, [0u8; 1500]);
        let start = std::time::Instant::now();
        // Bounded: 1.5 s, every read waits at most 20 ms.
        while start.elapsed() < Duration::from_millis(1500) {
            if s.recv(&mut buf).is_ok() {
                heard += 1;
            }
        }
        heard
    })
}

/// Without a key, every cluster address must be loopback unless `--insecure` says otherwise:
/// the interface, and for unicast the listen address and each peer.
#[test]
fn keyless_off_loopback_needs_insecure() {
    let Some(mut net) = Net::new(2) else { return };
    let unicast_on_lo = "--node-id 1 --interface lo --transport unicast";
    for line in [
        "--node-id 1 --interface eth0".to_string(),
        format!("{unicast_on_lo} --listen 0.0.0.0:7377 --peer 127.0.0.2:7377"),
        format!("{unicast_on_lo} --listen 127.0.0.1:7377 --peer 198.18.0.2:7377"),
    ] {
        let args: Vec<&str> = line.split_whitespace().collect();
        let (code, err) = net.run_to_exit(1, &args);
        assert_eq!(code, Some(2), "{args:?} started without a key: {err}");
        assert!(
            err.contains("is not loopback") && err.contains("--insecure"),
            "{err}"
        );
    }
    // With --insecure the unicast node starts and a node serves its status.
    let a = net.start_on(
        1,
        "lo",
        &[
            "--transport",
            "unicast",
            "--listen",
            "0.0.0.0:7377",
            "--peer",
            "198.18.0.2:7377",
            "--insecure",
        ],
        &[],
    );
    net.wait_up(a);
    let up = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        net.status(a).filter(|s| s["node_id"].as_u64() == Some(1))
    });
    assert!(up.is_some(), "{}", net.log(a));
}

/// libfaketime's preload library, if installed (Debian `libfaketime`; CI installs it).
fn faketime_lib() -> Option<String> {
    let found = std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            !tandem_tests::ci(),
            "libfaketime is not installed (apt-get install libfaketime)"
        );
        eprintln!("skipping: libfaketime is not installed");
    }
    found.map(|p| p.to_string_lossy().into_owned())
}

/// A wall clock stepped back across a restart (snapshot restore, NTP step at boot) must not
/// bring back an incarnation already used: the incarnation is part of every AEAD nonce.
#[test]
fn clock_stepped_back_across_a_restart_never_reuses_an_incarnation() {
    let Some(lib) = faketime_lib() else { return };
    let Some(mut net) = Net::new(1) else { return };
    let dir = std::env::temp_dir().join(format!("tandem-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.to_string_lossy().into_owned();
    let incarnation = |net: &Net, n: usize| net.wait_up(n)["incarnation"].as_u64().unwrap();
    let an_hour_ago = [
        ("LD_PRELOAD", lib.as_str()),
        ("FAKETIME", "-3600"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];

    let a = net.start(1, &["--insecure", "--state-dir", &state]);
    let first = incarnation(&net, a);
    assert!(
        net.sigterm(a).is_some_and(|s| s.success()),
        "{}",
        net.log(a)
    );

    let b = net.start_env(1, &["--insecure", "--state-dir", &state], &an_hour_ago);
    let second = incarnation(&net, b);
    assert!(
        net.sigterm(b).is_some_and(|s| s.success()),
        "{}",
        net.log(b)
    );
    assert!(
        second > first,
        "restart under a clock an hour behind reused incarnation space: {second} <= {first}"
    );

    // Without the state file the same restart goes back an hour: the check above is real.
    let c = net.start_env(1, &["--insecure"], &an_hour_ago);
    let unpersisted = incarnation(&net, c);
    assert!(
        unpersisted + 3000 < first,
        "faketime had no effect: {unpersisted} vs {first}"
    );
    assert!(
        net.log(c).contains("incarnation is not persisted"),
        "{}",
        net.log(c)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two processes with one `--node-id` and one incarnation (a cloned VM, a copied config
/// started in the same second: here libfaketime starts both clocks at one instant) seal
/// frames with the same (sender, incarnation, seq). Under version 1 they shared one key and
/// nonce, so the XOR of two such ciphertexts was the XOR of their plaintexts (and GCM's
/// authentication key leaked). Under version 2 each run has its own salt and run key: a
/// sniffer on a third host sees the twins' frames for the same seqs with different salts and
/// unrelated keystreams.
#[test]
fn twins_with_one_node_id_never_share_a_keystream() {
    use tandem_core::crypto::{open, Aes128Gcm, Keyring};
    use tandem_core::frame::HEADER_LEN;
    use tandem_core::{ClusterId, KeyId};

    let Some(lib) = faketime_lib() else { return };
    let Some(mut net) = Net::new(3) else { return };
    let key_file = net.key_file("key");
    let key = key_bytes(&key_file);
    let same_instant = [
        ("LD_PRELOAD", lib.as_str()),
        ("FAKETIME", "@2030-01-01 00:00:00"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let args = ["--key-file", key_file.as_str()];
    let a = net.start_as(1, 5, &args, &same_instant);
    let b = net.start_as(2, 5, &args, &same_instant);
    let (ia, ib) = (
        net.wait_up(a)["incarnation"].clone(),
        net.wait_up(b)["incarnation"].clone(),
    );
    assert_eq!(
        ia, ib,
        "the twins did not share an incarnation: the test proves nothing"
    );

    let frames = heartbeats_heard_on(net.ns(3), Net::addr(3));
    // Heartbeats of node 5 by seq; a seq sent by both twins appears twice.
    let mut by_seq: std::collections::HashMap<[u8; 6], Vec<Vec<u8>>> = Default::default();
    for f in frames
        .into_iter()
        .filter(|f| f.len() == 80 && f[5] == 0x01 && f[10..12] == [0, 5])
    {
        by_seq
            .entry(f[26..32].try_into().unwrap())
            .or_default()
            .push(f);
    }
    let mut keyring: Keyring<Aes128Gcm> = Keyring::new(KeyId(1), key);
    let mut pairs = 0;
    for frames in by_seq.values().filter(|v| v.len() >= 2) {
        let (x, y) = (&frames[0], &frames[1]);
        assert_ne!(x[20..26], y[20..26], "twins drew one salt");
        let (mut px, mut py) = (x.clone(), y.clone());
        assert!(open(&mut px, ClusterId(1), &mut keyring).is_ok());
        assert!(open(&mut py, ClusterId(1), &mut keyring).is_ok());
        let body = HEADER_LEN..x.len() - 16;
        let xor = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(p, q)| p ^ q).collect::<Vec<u8>>();
        assert_ne!(
            xor(&x[body.clone()], &y[body.clone()]),
            xor(&px[body.clone()], &py[body]),
            "two runs sealed one seq under one keystream"
        );
        pairs += 1;
    }
    assert!(
        pairs >= 10,
        "only {pairs} seqs heard from both twins: the test proves nothing"
    );
}

/// Two live processes with one `--node-id` (a copied config) find each other within a few
/// detection spans: each logs it, counts the twin's frames, shows it in /status, and its
/// /health answers 503 with the reason, so a load balancer stops sending to both. Version 1
/// dropped the twin's frames as the node's own echo (same incarnation) or took them for a
/// stale restart, and both stayed healthy.
#[test]
fn twins_with_one_node_id_are_reported_and_unhealthy() {
    let Some(mut net) = Net::new(2) else { return };
    let key_file = net.key_file("key");
    let args = ["--key-file", key_file.as_str()];
    let a = net.start_as(1, 5, &args, &[]);
    let b = net.start_as(2, 5, &args, &[]);
    for n in [a, b] {
        net.wait_up(n);
    }
    for twin in [a, b] {
        let health = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            net.get(twin, "/health")
                .filter(|(code, body)| *code == 503 && body.contains("duplicate node id"))
        });
        assert!(
            health.is_some(),
            "twin {twin} never reported the duplicate id\n{}",
            net.log(twin)
        );
        let status = net.status(twin).unwrap();
        assert_eq!(status["duplicate_node_id"], true, "{status}");
        assert!(
            net.metric(twin, "tandem_duplicate_node_id_frames_total")
                .unwrap_or(0)
                > 0
        );
        assert!(
            net.log(twin).contains("claim one node id"),
            "{}",
            net.log(twin)
        );
    }
}

/// Keys and roles: a witness holds the control key only (`tandemd keygen --witness` of the
/// data nodes' file). In a real cluster of two data nodes and the witness it votes: when a
/// data node dies, the other keeps its quorum with the witness and goes on acknowledging
/// writes. It hears every session frame and opens none (counted as `no_data_key` drops, not
/// as forgeries), and the session frames on the wire do not open under its key. Given a data
/// key (the data nodes' file, or a one-key `id:hex` file) it refuses to start.
#[test]
fn a_witness_holds_the_control_key_only() {
    use tandem_core::crypto::{open, Aes128Gcm, Keyring, Keys};
    use tandem_core::{ClusterId, KeyId};
    use tandem_tests::resp_client::Resp;

    let Some(mut net) = Net::new(3) else { return };
    let one_key = net.key_file("one-key");
    let dir = std::path::Path::new(&one_key)
        .parent()
        .unwrap()
        .to_path_buf();
    let write_key_file = |name: &str, text: &str| -> String {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .unwrap();
        path.to_string_lossy().into_owned()
    };
    let (code, text, err) = net.run(1, &["keygen"]);
    assert_eq!(code, Some(0), "{err}");
    let data_file = write_key_file("data.key", &text);
    let (code, text, err) = net.run(1, &["keygen", "--witness", &data_file]);
    assert_eq!(code, Some(0), "{err}");
    let witness_file = write_key_file("witness.key", &text);
    let (code, _, err) = net.run(1, &["keygen", "--witness", &one_key]);
    assert_ne!(
        code,
        Some(0),
        "a witness file made of a one-key file: {err}"
    );

    let voters = "1,2,3";
    for refused in [&data_file, &one_key] {
        let args = [
            "--node-id",
            "3",
            "--interface",
            "eth0",
            "--witness",
            "--voters",
            voters,
            "--key-file",
            refused,
        ];
        let (code, err) = net.run_to_exit(3, &args);
        assert_eq!(code, Some(2), "a witness started with a data key: {err}");
        assert!(
            err.contains("must never hold the data key") && err.contains("keygen --witness"),
            "{err}"
        );
    }
    let (code, err) = net.run_to_exit(
        1,
        &[
            "--node-id",
            "1",
            "--interface",
            "eth0",
            "--key-file",
            &witness_file,
        ],
    );
    assert_eq!(
        code,
        Some(2),
        "a data node started without a data key: {err}"
    );

    let a = net.start(1, &["--key-file", &data_file, "--voters", voters]);
    let b = net.start(2, &["--key-file", &data_file, "--voters", voters]);
    let w = net.start(
        3,
        &["--key-file", &witness_file, "--witness", "--voters", voters],
    );
    for (n, peers) in [(a, [2, 3]), (b, [1, 3]), (w, [1, 2])] {
        for p in peers {
            assert!(
                net.wait_member_state(n, p, "alive", Duration::from_secs(10)),
                "node {n} never saw {p}\n{}",
                net.log(n)
            );
        }
    }

    // Session writes while a sniffer on the witness's host records the group's datagrams.
    let ns3 = net.ns(3).to_string();
    let sniffer = std::thread::spawn(move || heartbeats_heard_on(&ns3, Net::addr(3)));
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], tandem_tests::RESP_PORT));
    let mut client = Resp::connect(net.ns(1), local, Duration::from_secs(5)).unwrap();
    for i in 0..50 {
        let reply = client
            .set(&format!("session:{i}"), b"secret-value-of-alice")
            .unwrap();
        assert!(reply.is_ok(), "{reply:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let heard = sniffer.join().unwrap();
    let no_data_key = "tandem_frames_dropped_total{reason=\"no_data_key\"}";
    assert!(
        net.metric(w, no_data_key).unwrap_or(0) >= 50,
        "the witness did not count the session frames it cannot open\n{}",
        net.log(w)
    );
    assert_eq!(
        net.metric(w, "tandem_frames_dropped_total{reason=\"auth\"}"),
        Some(0)
    );

    // The session frames on the wire: the data key opens them, the witness's keys do not.
    let key_of = |path: &str, role: &str| -> Option<(u8, [u8; 16])> {
        let text = std::fs::read_to_string(path).unwrap();
        let line = text.lines().find(|l| l.split(':').nth(1) == Some(role))?;
        let mut f = line.split(':');
        let id = f.next()?.parse().ok()?;
        let hex = f.nth(1)?.trim();
        let mut key = [0u8; 16];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some((id, key))
    };
    let (cid, control) = key_of(&witness_file, "control").unwrap();
    assert_eq!(key_of(&witness_file, "data"), None);
    let (did, data) = key_of(&data_file, "data").unwrap();
    let mut witness_keys: Keys<Aes128Gcm> = Keys {
        control: Keyring::new(KeyId(cid), control),
        data: Keyring::empty(),
    };
    let mut control_as_data: Keyring<Aes128Gcm> = Keyring::new(KeyId(did), control);
    let mut data_keys: Keyring<Aes128Gcm> = Keyring::new(KeyId(did), data);
    let mut updates = 0;
    for datagram in &heard {
        // A datagram packs frames: header (32, body length at 8..10) | body | tag (16).
        let mut rest = &datagram[..];
        while rest.len() >= 48 {
            let len = 48 + usize::from(u16::from_be_bytes([rest[8], rest[9]]));
            let Some(frame) = rest.get(..len) else { break };
            rest = &rest[len..];
            if frame[5] != 0x02 {
                continue;
            }
            updates += 1;
            let mut copy = frame.to_vec();
            assert!(open(&mut copy, ClusterId(1), &mut witness_keys).is_err());
            assert_eq!(copy, frame, "the witness's keys decrypted a session frame");
            assert!(open(&mut frame.to_vec(), ClusterId(1), &mut control_as_data).is_err());
            let mut plain = frame.to_vec();
            assert!(open(&mut plain, ClusterId(1), &mut data_keys).is_ok());
            assert!(plain
                .windows(b"secret-value-of-alice".len())
                .any(|w| w == b"secret-value-of-alice"));
        }
    }
    assert!(
        updates >= 10,
        "only {updates} session updates heard: the test proves nothing"
    );

    // The witness's vote counts: with B dead, A keeps quorum and acknowledges writes.
    net.kill9(b);
    assert!(
        net.wait_member_state(a, 2, "dead", Duration::from_secs(5)),
        "{}",
        net.log(a)
    );
    let status = net.status(a).unwrap();
    assert_eq!(status["isolated"], false, "{status}");
    let reply = client.set("session:after", b"bob").unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(net.member_state(w, 1).as_deref(), Some("alive"));
}

/// The key of a `1:<hex>` key file.
fn key_bytes(path: &str) -> [u8; 16] {
    let text = std::fs::read_to_string(path).unwrap();
    let hex = text.trim().split_once(':').unwrap().1;
    let mut key = [0u8; 16];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    key
}

/// Datagrams of the default group heard on `addr` inside `ns` for 1.5 s (at most 20,000).
fn heartbeats_heard_on(ns: &str, addr: std::net::Ipv4Addr) -> Vec<Vec<u8>> {
    use socket2::{Domain, Protocol, Socket, Type};
    in_netns(ns, move || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&GROUP.into()).unwrap();
        s.join_multicast_v4(GROUP.ip(), &addr).unwrap();
        let s = std::net::UdpSocket::from(s);
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let (mut heard, mut buf) = (Vec::new(), [0u8; 1500]);
        let start = std::time::Instant::now();
        // Bounded: 1.5 s, every read waits at most 20 ms.
        while start.elapsed() < Duration::from_millis(1500) && heard.len() < 20_000 {
            if let Ok(n) = s.recv(&mut buf) {
                heard.push(buf[..n].to_vec());
            }
        }
        heard
    })
}

/// An interrupted write leaves 16 bytes of text (`1:00010203040506`), which used to be read as
/// a raw key on SIGHUP and cut the node off its cluster. Now the reload is refused, the old
/// keys stay, and the pair never notices.
#[test]
fn truncated_key_file_on_sighup_keeps_the_old_keys() {
    let Some(mut net) = Net::new(2) else { return };
    let key = net.key_file("cluster");
    let a = net.start(1, &["--key-file", &key]);
    let b = net.start(2, &["--key-file", &key]);
    for (n, peer) in [(a, 2), (b, 1)] {
        assert!(
            net.wait_member_state(n, peer, "alive", Duration::from_secs(5)),
            "{}",
            net.log(n)
        );
    }
    // Node 1's key file is replaced (by rename, as an operator should) with a cut-short one.
    let cut = format!("{key}.new");
    std::fs::write(&cut, "1:00010203040506").unwrap();
    std::fs::rename(&cut, &key).unwrap();
    net.signal(a, libc::SIGHUP);
    let refused = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        net.log(a).contains("key file not reloaded").then_some(())
    });
    assert!(refused.is_some(), "{}", net.log(a));
    // Five detection spans of the lan profile (200 ms): a node cut off would be dead by now.
    std::thread::sleep(Duration::from_millis(1000));
    for (n, peer) in [(a, 2), (b, 1)] {
        assert_eq!(
            net.member_state(n, peer).as_deref(),
            Some("alive"),
            "{}",
            net.log(n)
        );
        assert!(!net.log(n).contains("member_dead"), "{}", net.log(n));
    }
}

/// Guessing the RESP password. One connection pipelining wrong AUTHs used to get 200,000 of
/// them checked in 0.14 s; now each failure pauses its connection (100 ms, doubling) and the
/// sixth closes it. Twenty connections flooding at once get at most four answers each in
/// 2 s (at 100, 300, 700 and 1500 ms) and six in all, while the right password on a new
/// connection is answered at once and nothing stored is lost.
#[test]
fn auth_flood_is_throttled_and_cut_off_after_a_few_guesses() {
    use std::time::Instant;
    use tandem_tests::resp_client::{Reply, Resp};
    let Some(mut net) = Net::new(1) else { return };
    let a = net.start(1, &["--insecure", "--requirepass", "s3cret"]);
    net.wait_up(a);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], tandem_tests::RESP_PORT));
    let t = Duration::from_secs(5);
    let mut user = Resp::connect(net.ns(1), addr, t).unwrap();
    assert!(user.cmd(&[b"AUTH", b"s3cret"]).unwrap().is_ok());
    assert!(user.set("session:1", b"alice").unwrap().is_ok());

    let mut flood = Vec::new();
    for i in 0..1000 {
        let guess = format!("guess{i}");
        tandem_tests::resp_client::encode(&mut flood, &[b"AUTH", guess.as_bytes()]);
    }
    let mut guessers: Vec<Resp> = (0..20)
        .map(|_| Resp::connect(net.ns(1), addr, t).unwrap())
        .collect();
    let start = Instant::now();
    // Each guesser pipelines 1,000 guesses; a reader per connection notes when each answer
    // came, until the server closes it (bounded: one answer per guess, each read by the 5 s
    // socket timeout).
    let readers: Vec<_> = guessers
        .drain(..)
        .map(|mut g| {
            // The server may close while this is still being written.
            let _ = g.send_raw(&flood);
            std::thread::spawn(move || {
                let mut times = Vec::new();
                while times.len() < 1000 {
                    match g.read() {
                        Ok(Reply::Error(e)) if e.starts_with("WRONGPASS") => {
                            times.push(start.elapsed())
                        }
                        Ok(other) => panic!("unexpected reply {other:?}"),
                        Err(_) => break,
                    }
                }
                times
            })
        })
        .collect();
    // The right password on a new connection while the guessers wait: answered at once.
    let mut late = Resp::connect(net.ns(1), addr, t).unwrap();
    let asked = Instant::now();
    assert!(late.cmd(&[b"AUTH", b"s3cret"]).unwrap().is_ok());
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(90),
        "the right password waited {took:?}, as long as a wrong one"
    );
    assert_eq!(late.get("session:1").unwrap().bytes(), Some(&b"alice"[..]));

    let times: Vec<Vec<Duration>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let in_2s = |v: &Vec<Duration>| v.iter().filter(|t| **t < Duration::from_secs(2)).count();
    let answered: usize = times.iter().map(in_2s).sum();
    for v in &times {
        assert_eq!(v.len(), 6, "answers before the connection closed: {v:?}");
        assert!(in_2s(v) <= 4, "{} answers in 2 s: {v:?}", in_2s(v));
        // 6.3 s of pauses, less the server timer's whole-millisecond rounding per pause.
        assert!(v[5] >= Duration::from_millis(6250), "{v:?}");
    }
    assert!(
        (20..=80).contains(&answered),
        "{answered} of 20,000 guesses answered in 2 s"
    );
    assert_eq!(user.get("session:1").unwrap().bytes(), Some(&b"alice"[..]));
}

/// Redis's protected mode: a RESP port on a non-loopback address without a password serves
/// loopback clients only; others get the DENIED explanation and are closed, unless
/// `--protected-mode no`; with a password, other hosts get the usual NOAUTH.
#[test]
fn protected_mode_refuses_other_hosts_without_a_password() {
    use tandem_tests::resp_client::{Reply, Resp};
    let Some(mut net) = Net::new(2) else { return };
    let port = tandem_tests::RESP_PORT;
    let open = format!("0.0.0.0:{port}");
    let on_host = std::net::SocketAddr::from((Net::addr(1), port));
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let t = Duration::from_secs(5);
    let ping = |ns: &str, addr| Resp::connect(ns, addr, t).and_then(|mut c| c.cmd(&[b"PING"]));

    let a = net.start(1, &["--insecure", "--resp", &open]);
    net.wait_up(a);
    match ping(net.ns(2), on_host) {
        Ok(Reply::Error(e)) => assert!(e.starts_with("DENIED"), "{e}"),
        other => panic!("a client of another host was served: {other:?}"),
    }
    assert_eq!(
        ping(net.ns(1), local).unwrap(),
        Reply::Simple("PONG".into())
    );
    assert!(net.log(a).contains("protected mode"), "{}", net.log(a));
    assert_eq!(
        net.metric(
            a,
            "tandem_resp_clients_closed_total{reason=\"protected_mode\"}"
        ),
        Some(1)
    );
    assert!(net.sigterm(a).is_some());

    let b = net.start(
        1,
        &["--insecure", "--resp", &open, "--protected-mode", "no"],
    );
    net.wait_up(b);
    assert_eq!(
        ping(net.ns(2), on_host).unwrap(),
        Reply::Simple("PONG".into())
    );
    assert!(net.sigterm(b).is_some());

    let c = net.start(
        1,
        &["--insecure", "--resp", &open, "--requirepass", "s3cret"],
    );
    net.wait_up(c);
    match ping(net.ns(2), on_host) {
        Ok(Reply::Error(e)) => assert!(e.starts_with("NOAUTH"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// Freshness on first contact (issue 17): node 1 (A, the leader) and node 2 (B) run; an
/// attacker on host 3 records A's frames for 2 s while `during` runs on the pair, then
/// `after` runs (unrecorded) and both die. Returns the net, the key file and A's frames.
fn record_then_kill_both(
    during: impl FnOnce(&Net),
    after: impl FnOnce(&Net),
) -> Option<(Net, String, Vec<Vec<u8>>)> {
    let mut net = Net::new(3)?;
    let key = net.key_file("key");
    let a = net.start(1, &["--key-file", &key, "--priority", "200"]);
    let b = net.start(2, &["--key-file", &key]);
    for (n, peer) in [(a, 2), (b, 1)] {
        assert!(
            net.wait_member_state(n, peer, "alive", Duration::from_secs(10)),
            "the pair never met\n{}",
            net.log(n)
        );
    }
    let ns = net.ns(3).to_string();
    let recorder = std::thread::spawn(move || {
        tandem_tests::hostile::capture(&ns, GROUP, Net::addr(3), Duration::from_secs(2), 5_000)
    });
    std::thread::sleep(Duration::from_millis(300));
    during(&net);
    let frames: Vec<Vec<u8>> = recorder
        .join()
        .unwrap()
        .into_iter()
        .filter(|f| tandem_tests::hostile::sender(f) == Some(1))
        .collect();
    assert!(frames.len() > 10, "recorded {} frames of A", frames.len());
    after(&net);
    net.kill9(a);
    net.kill9(b);
    Some((net, key, frames))
}

/// Replays the 2 s recording `frames` from host 3 at the pace it was recorded, in the
/// background.
fn replay_from_host_3(net: &Net, frames: Vec<Vec<u8>>) -> std::thread::JoinHandle<u64> {
    let ns = net.ns(3).to_string();
    let pace = Duration::from_secs(2) / frames.len().max(1) as u32;
    std::thread::spawn(move || {
        tandem_tests::hostile::replay(&ns, GROUP, Net::addr(3), frames, pace)
    })
}

/// A user logs in on A (the SET replicates to B) and out (DEL); an attacker recorded the
/// login. Both nodes go down; B starts first and the attacker replays A's recording to it,
/// then A starts and pulls the state from B. The logged-out session must not come back on
/// either node: before freshness, B took the recording for a live A (its run's first frames
/// set the replay window), applied the login and handed it to A in the state transfer.
#[test]
fn a_replayed_login_never_comes_back_after_logout() {
    use tandem_tests::resp_client::Resp;
    let resp = std::net::SocketAddr::from(([127, 0, 0, 1], tandem_tests::RESP_PORT));
    let t = Duration::from_secs(5);
    let login = |net: &Net| {
        let mut a = Resp::connect(net.ns(1), resp, t).unwrap();
        assert!(a.set("login", b"alice").unwrap().is_ok());
        let mut b = Resp::connect(net.ns(2), resp, t).unwrap();
        assert_eq!(b.get("login").unwrap().bytes(), Some(&b"alice"[..]));
    };
    let logout = |net: &Net| {
        let mut a = Resp::connect(net.ns(1), resp, t).unwrap();
        assert_eq!(a.cmd(&[b"DEL", b"login"]).unwrap().int(), Some(1));
        let mut b = Resp::connect(net.ns(2), resp, t).unwrap();
        assert_eq!(b.get("login").unwrap().bytes(), None);
    };
    let Some((mut net, key, frames)) = record_then_kill_both(login, logout) else {
        return;
    };
    let b = net.start(2, &["--key-file", &key]);
    net.wait_up(b);
    let sent = replay_from_host_3(&net, frames).join().unwrap();
    assert!(sent > 10, "replayed {sent} datagrams");
    let a = net.start(1, &["--key-file", &key]);
    for (n, peer) in [(a, 2), (b, 1)] {
        assert!(
            net.wait_member_state(n, peer, "alive", Duration::from_secs(10)),
            "the pair never met again\n{}",
            net.log(n)
        );
    }
    let synced = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        net.get(a, "/health").filter(|(code, _)| *code == 200)
    });
    assert!(synced.is_some(), "A never synced\n{}", net.log(a));
    for (host, name) in [(1, "A"), (2, "B")] {
        let mut c = Resp::connect(net.ns(host), resp, t).unwrap();
        let got = c.get("login").unwrap();
        assert_eq!(
            got.bytes(),
            None,
            "the logged-out session is back on {name}"
        );
    }
}

/// A (the leader) and B die; B starts again while an attacker replays A's recorded
/// heartbeats to it. B never shows A alive or leader, and its writes are answered: before
/// freshness it took A for alive and leading, and every synchronous write waited for A.
#[test]
fn replayed_heartbeats_of_a_dead_leader_never_revive_it() {
    use tandem_tests::resp_client::Resp;
    let Some((mut net, key, frames)) = record_then_kill_both(|_| {}, |_| {}) else {
        return;
    };
    let b = net.start(2, &["--key-file", &key]);
    net.wait_up(b);
    let replayer = replay_from_host_3(&net, frames);
    let resp = std::net::SocketAddr::from(([127, 0, 0, 1], tandem_tests::RESP_PORT));
    let mut client = Resp::connect(net.ns(2), resp, Duration::from_secs(2)).unwrap();
    let start = std::time::Instant::now();
    let mut i = 0;
    // Bounded: 1.8 s of the 2 s replay, one write and one /status per turn.
    while start.elapsed() < Duration::from_millis(1800) {
        let status = net.status(b).unwrap();
        assert_ne!(
            status["leader"].as_u64(),
            Some(1),
            "A shown as leader: {status}"
        );
        let a = net.member_state(b, 1);
        assert!(
            a.is_none() || a.as_deref() == Some("dead"),
            "A shown {a:?}: {status}"
        );
        let reply = client.set(&format!("w:{i}"), b"v");
        assert!(
            reply.as_ref().is_ok_and(|r| r.is_ok()),
            "write {i} not answered within 2 s: {reply:?}"
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(replayer.join().unwrap() > 10);
    assert!(
        net.metric(b, "tandem_frames_dropped_total{reason=\"unverified\"}")
            .unwrap_or(0)
            > 0,
        "the replayed frames were not seen"
    );
}

/// Replay-table churn (issue 17): node ids come and go on host 2, 17 of them one after the
/// other (more than the 16 senders a node tracks), every other one killed, the rest leaving.
/// A real new node still joins node 1 afterwards (before, the 17th id filled the table for
/// good: `TooManySenders`), and a recording of an evicted id's run is refused.
#[test]
fn churn_through_17_ids_still_lets_a_new_node_join() {
    let Some(mut net) = Net::new(3) else { return };
    let key = net.key_file("key");
    let args = ["--key-file", key.as_str(), "--profile", "fast"];
    let observer = net.start(1, &args);
    net.wait_up(observer);
    let mut recorded = Vec::new();
    for id in 2..=18usize {
        let n = net.start_as(2, id, &args, &[]);
        assert!(
            net.wait_member_state(observer, id as u64, "alive", Duration::from_secs(10)),
            "id {id} never joined\n{}",
            net.log(observer)
        );
        if id == 5 {
            let ns = net.ns(3).to_string();
            recorded = tandem_tests::hostile::capture(
                &ns,
                GROUP,
                Net::addr(3),
                Duration::from_millis(500),
                2_000,
            )
            .into_iter()
            .filter(|f| tandem_tests::hostile::sender(f) == Some(5))
            .collect();
        }
        if id % 2 == 0 {
            net.kill9(n);
        } else {
            net.sigterm(n);
        }
        let gone = wait_for(Duration::from_secs(5), Duration::from_millis(5), || {
            matches!(
                net.member_state(observer, id as u64).as_deref(),
                Some("dead" | "left") | None
            )
            .then_some(())
        });
        assert!(gone.is_some(), "id {id} never went");
    }
    assert!(
        recorded.len() > 10,
        "recorded {} frames of id 5",
        recorded.len()
    );
    let newcomer = net.start_as(2, 19, &args, &[]);
    assert!(
        net.wait_member_state(observer, 19, "alive", Duration::from_secs(10)),
        "a new node could not join after the churn\n{}",
        net.log(observer)
    );
    assert!(net.wait_member_state(newcomer, 1, "alive", Duration::from_secs(10)));
    let refused = |net: &Net| {
        ["stale", "unverified", "replay"]
            .iter()
            .map(|r| {
                net.metric(
                    observer,
                    &format!("tandem_frames_dropped_total{{reason=\"{r}\"}}"),
                )
                .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let before = refused(&net);
    let ns = net.ns(3).to_string();
    let n = recorded.len() as u64;
    let pace = Duration::from_millis(500) / n.max(1) as u32;
    let sent = tandem_tests::hostile::replay(&ns, GROUP, Net::addr(3), recorded, pace);
    assert_eq!(sent, n);
    std::thread::sleep(Duration::from_millis(200));
    let state = net.member_state(observer, 5);
    assert_ne!(
        state.as_deref(),
        Some("alive"),
        "the evicted id 5 came back"
    );
    assert!(
        refused(&net) >= before + n * 9 / 10,
        "replayed {n} frames of id 5, refused {}",
        refused(&net) - before
    );
}
