//! The session libraries people use, unchanged, against a two-node pair (issue 13).
//!
//! Each test starts data nodes A (host 1) and B (host 2) and runs one library's flow script
//! (`tests/libs/`) on host 3: two copies of one web app, the first storing its sessions
//! through node A and the second through node B. The user logs in through A, reads and
//! updates the session through B, a short session expires, and the user logs out through B
//! (the rate limiter: four hits spread over A and B against a limit of three). The script
//! fails on any answer it does not expect, and a command tandem refuses is such an answer:
//! each library raises it into the request, which fails (HTTP 500, an error reaching the
//! Express error handler after the answer went out, or a php-redis warning in the server
//! log: the scripts check all three). `tests/libs/refusals.sh` proves it per command: with any
//! one of a flow's commands disabled in a redis-server, that flow fails.
//!
//! Every client runs with its defaults: node-redis 6, ioredis 6 and redis-py 8 open each
//! connection with `HELLO 3` and speak RESP3; php-redis speaks RESP2.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::libs::{libs_dir, run_in, Runtime};
use tandem_tests::scenario::{Cluster, Opts};

/// One flow: at most this long (each sleeps 3.2 s for its 2 s session to expire).
const FLOW_LIMIT: Duration = Duration::from_secs(90);

/// Runs `script args` (relative to `tests/libs/`) with `runtime` on the client host of a
/// fresh pair, and fails unless it exits 0 having printed `PASS`.
fn flow(runtime: Runtime, script: &str, args: &[&str]) {
    let Some(program) = runtime.require() else {
        return;
    };
    let Some(c) = Cluster::start(Opts {
        witness: false,
        haproxy: false,
        emulated: None,
        extra: Vec::new(),
    }) else {
        return;
    };
    let mut argv = vec![libs_dir().join(script).to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let env = [
        ("TANDEM_A", Cluster::resp_addr(1).to_string()),
        ("TANDEM_B", Cluster::resp_addr(2).to_string()),
    ];
    let (code, out, err) = run_in(c.net.ns(c.lb_host), &program, &argv, &env, FLOW_LIMIT);
    assert!(
        code == Some(0) && out.lines().any(|l| l.starts_with("PASS")),
        "{script} {args:?} exited {code:?}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
}

#[test]
fn express_session_on_connect_redis_over_node_redis() {
    flow(Runtime::Node, "node/flow.js", &["node-redis"]);
}

#[test]
fn express_session_on_connect_redis_over_ioredis() {
    flow(Runtime::Node, "node/flow.js", &["ioredis"]);
}

#[test]
fn flask_session_on_redis_py() {
    flow(Runtime::Python, "python/flask_flow.py", &[]);
}

#[test]
fn django_sessions_on_django_redis() {
    flow(Runtime::Python, "python/django_flow.py", &[]);
}

#[test]
fn php_redis_session_handler_with_locking() {
    flow(Runtime::Php, "php/flow.php", &[]);
}

/// Flask-Limiter (latest) with its default fixed-window strategy counts with limits'
/// `incr_expire.lua` (EVALSHA, SCRIPT LOAD on NOSCRIPT), a script tandem runs natively.
#[test]
fn flask_limiter_counts_across_both_nodes() {
    flow(Runtime::Python, "python/limiter_flow.py", &[]);
}

/// express-rate-limit with rate-limit-redis over node-redis: SCRIPT LOAD of its two scripts
/// at start, then EVALSHA per hit, both scripts tandem runs natively.
#[test]
fn express_rate_limit_on_rate_limit_redis_counts_across_both_nodes() {
    flow(Runtime::Node, "node/flow.js", &["rate-limit"]);
}
