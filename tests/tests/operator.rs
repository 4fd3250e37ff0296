//! The operator's tools run as a person would run them (issue 16): `tandemd keygen`, `check`
//! (and `-t`), `status`, the log formats. Nodes run in network namespaces the tests create.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tandem_tests::logs::dead_lines;
use tandem_tests::{run_bounded, tandemd_bin, wait_for, Net, Value};

const JOIN: Duration = Duration::from_secs(5);

fn tandemd(args: &[&str]) -> (Option<i32>, String, String) {
    run_bounded(Command::new(tandemd_bin()).args(args))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-operator-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until both nodes list each other alive and are healthy.
fn wait_pair_healthy(net: &Net, a: usize, b: usize) {
    let ok = wait_for(JOIN, Duration::from_millis(20), || {
        let healthy = |n: usize| net.status(n).is_some_and(|s| s["healthy"] == true);
        (net.member_state(a, 2).as_deref() == Some("alive")
            && net.member_state(b, 1).as_deref() == Some("alive")
            && healthy(a)
            && healthy(b))
        .then_some(())
    });
    assert!(ok.is_some(), "{}\n{}", net.log(a), net.log(b));
}

#[test]
fn check_names_every_problem_and_exits_2() {
    let dir = scratch("check");
    let toml = dir.join("tandemd.toml");
    std::fs::write(
        &toml,
        "node_id = 1\nttl = 0\nvoters = [1, 1]\nmultiplier = 1\n",
    )
    .unwrap();
    let toml = toml.to_str().unwrap();
    let (code, out, err) = tandemd(&["check", "--config", toml, "--interface", "nope0"]);
    assert_eq!(code, Some(2), "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    for (line, want) in lines.iter().zip([
        "--interface nope0",
        "node 1 given twice",
        "--ttl 0",
        "--multiplier 1",
    ]) {
        assert!(
            line.starts_with("tandemd: config error: ") && line.contains(want),
            "{want}: {err}"
        );
    }
    assert!(!out.contains("configuration ok"));
    // The daemon itself refuses the same configuration with the same lines, before binding.
    let (code, _, daemon_err) = tandemd(&["--config", toml, "--interface", "nope0"]);
    assert_eq!((code, daemon_err.as_str()), (Some(2), err.as_str()));
    // `-t` is `check`; flags fix the file's problems.
    let good = [
        "-t",
        "--config",
        toml,
        "--ttl",
        "1",
        "--voters",
        "1,2,3",
        "--multiplier",
        "3",
    ];
    let (code, out, err) = tandemd(&good);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "configuration ok\n"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keygen_keys_run_a_cluster_and_a_staged_rotation_kills_no_member() {
    let Some(mut net) = Net::new(2) else { return };
    let dir = scratch("keygen");
    let key = dir.join("key");
    let key_s = key.to_str().unwrap();
    let (code, out, err) = tandemd(&["keygen", "--id", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("0600"), "{out}");
    std::fs::write(&key, &out).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = tandemd(&["check", "--node-id", "1", "--key-file", key_s]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("mode 0644"),
        "a readable key is flagged: {err}"
    );
    // lan: 200 ms detection, far above this loaded machine's pauses (a pause may make a
    // peer suspect, never dead).
    let a = net.start(1, &["--key-file", key_s, "--profile", "lan"]);
    let b = net.start(2, &["--key-file", key_s, "--profile", "lan"]);
    wait_pair_healthy(&net, a, b);
    // Each step rewrites the file, reloads node a, then node b three detection spans later:
    // had node a sent with a key node b cannot open yet, b would declare it dead.
    let gap = Duration::from_millis(600);
    let step = |n: u64, args: &[&str], said: &str| {
        let (code, out, err) = tandemd(args);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains(said), "{out}");
        for node in [a, b] {
            net.signal(node, libc::SIGHUP);
            let done = wait_for(JOIN, Duration::from_millis(10), || {
                (net.metric(node, "tandem_key_reloads_total")? == n).then_some(())
            });
            assert!(done.is_some(), "{}", net.log(node));
            std::thread::sleep(gap);
        }
    };
    step(
        1,
        &["keygen", "--rotate", key_s, "--stage"],
        "control key 1 and data key 1 send, control key 2 and data key 2 still accepted",
    );
    step(
        2,
        &["keygen", "--activate", key_s],
        "control key 2 and data key 2 send, control key 1 and data key 1 still accepted",
    );
    for (n, other) in [(a, 2), (b, 1)] {
        assert!(
            dead_lines(&net.log(n)).is_empty(),
            "a node was declared dead during the rotation\n{}",
            net.log(n)
        );
        assert_eq!(net.member_state(n, other).as_deref(), Some("alive"));
    }
    assert!(net.log(a).contains("active=2"), "{}", net.log(a));
    let text = std::fs::read_to_string(&key).unwrap();
    let ids: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    // Per role (control lines first): the new key sends, the old one is still accepted.
    assert_eq!(ids, ["2", "1", "2", "1"], "{text}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the rotated file is written mode 0600");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_shows_the_cluster_and_logs_are_named_fields() {
    let Some(mut net) = Net::new(2) else { return };
    let a = net.start(1, &["--insecure", "--profile", "fast"]);
    let b = net.start(
        2,
        &["--insecure", "--profile", "fast", "--log-format", "json"],
    );
    wait_pair_healthy(&net, a, b);
    // The default endpoint is the daemon's default --http.
    let (code, out, err) = net.run(1, &["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("node 1 (cluster 1), incarnation "), "{out}");
    assert!(out.contains("health:      ok"), "{out}");
    assert!(out.contains("sync:        synced"), "{out}");
    assert!(
        out.contains("replication: 1 live peer(s), backlog "),
        "{out}"
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.contains("LAST HEARD"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0][..2], ["1", "alive"], "{out}");
    assert_eq!(rows[1][..2], ["2", "alive"], "{out}");
    assert_eq!(rows[1].last(), Some(&"ago"), "{out}");
    // --json passes the document through.
    let (code, out, _) = net.run(2, &["status", "--json"]);
    assert_eq!(code, Some(0));
    let doc: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (doc["node_id"].as_u64(), doc["health"].as_str()),
        (Some(2), Some("ok"))
    );
    // --watch refreshes (bounded here by --count).
    let (code, out, _) = net.run(1, &["status", "--watch", "--count", "2"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.matches("LAST HEARD").count(), 2, "{out}");
    // Nobody there: exit 1 and why.
    let (code, _, err) = net.run(1, &["status", "--http", "127.0.0.1:9"]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("tandemd status: 127.0.0.1:9: "), "{err}");

    // Text logs: every event is one line of named fields, no Debug structures.
    let log = net.log(a);
    let events: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cluster change"))
        .collect();
    assert!(
        events
            .iter()
            .any(|l| l.contains("event=member_alive node=2 state=alive incarnation=")),
        "{log}"
    );
    assert!(
        events
            .iter()
            .any(|l| l.contains("event=role_changed role=")),
        "{log}"
    );
    for bad in ["ev=", "{", "Some(", "NodeId(", "\""] {
        assert!(
            !events.iter().any(|l| l.contains(bad)),
            "{bad} in an event line:\n{log}"
        );
    }
    // JSON logs: every line one object.
    let log = net.log(b);
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|o| o["event"] == "member_alive" && o["node"] == 1 && o["state"] == "alive"),
        "{log}"
    );
    assert!(lines
        .iter()
        .all(|o| o["level"].is_string() && o["timestamp"].is_string()));
}
