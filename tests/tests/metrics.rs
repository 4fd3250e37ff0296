//! Issue 11 item 5: `/metrics` of live nodes (two data nodes and a witness, after a
//! replicated write) passes `promtool check metrics`: Prometheus' own linter for names,
//! base units (seconds, bytes) and the `_total` suffix of counters.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use tandem_tests::ci;
use tandem_tests::scenario::{Cluster, Opts};

/// `promtool check metrics` on `text`: `None` when promtool is not installed, else its
/// findings (empty: clean).
fn promtool(text: &str) -> Option<String> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() || !findings.trim().is_empty(),
        "promtool failed without saying why"
    );
    Some(if out.status.success() {
        String::new()
    } else {
        findings
    })
}

#[test]
fn live_metrics_pass_promtool() {
    // A Prometheus linter clean on anything: else the test below could not fail.
    let Some(bad) = promtool("# TYPE x_microseconds counter\nx_microseconds 1\n") else {
        assert!(
            !ci(),
            "CI=true but promtool is missing (Debian package `prometheus`)"
        );
        println!("SKIP: promtool not installed (apt-get install prometheus)");
        return;
    };
    assert!(!bad.is_empty(), "promtool accepted a bad exposition");
    let Some(c) = Cluster::start(Opts {
        haproxy: false,
        ..Opts::default()
    }) else {
        return;
    };
    let mut a = c.direct(1).unwrap();
    assert!(a.set("promtool:key", b"value").unwrap().is_ok());
    for host in c.member_hosts() {
        let (code, body) = c.net.get(c.node(host), "/metrics").unwrap();
        assert_eq!(code, 200);
        let findings = promtool(&body).unwrap();
        assert!(
            findings.is_empty(),
            "host {host}: promtool check metrics:\n{findings}"
        );
        assert!(body.contains("tandem_loop_busy_seconds_total"), "{body}");
    }
}
