//! Real clients against tandemd's RESP component: redis-cli, redis-benchmark and redis-py.
//! Each skips (with a message) when its client is missing, except under CI=true.

mod resp_support;

use std::process::{Command, Stdio};

use resp_support::*;
use tandemd::resp::commands;

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> (String, bool) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.success())
}

#[test]
fn redis_cli_works() {
    let Some(cli) = require_tool("redis-cli") else {
        return;
    };
    let ours = start_ours(commands::CommandConfig::default(), true);
    let port = ours.addr.port().to_string();
    let cli_args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "-h".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.clone(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let one = |extra: &[&str]| -> String {
        let args = cli_args(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, ok) = run(&cli, &refs, None);
        assert!(ok, "redis-cli {extra:?}: {out}");
        out
    };
    assert_eq!(one(&["PING"]), "PONG\n");
    assert_eq!(one(&["SET", "cli:k", "hello world", "EX", "100"]), "OK\n");
    assert_eq!(one(&["GET", "cli:k"]), "hello world\n");
    assert_eq!(one(&["TTL", "cli:k"]), "100\n");
    assert_eq!(one(&["HSET", "cli:h", "a", "1", "b", "2"]), "2\n");
    assert_eq!(one(&["HGETALL", "cli:h"]), "a\n1\nb\n2\n");
    assert_eq!(one(&["--no-raw", "HGET", "cli:h", "zz"]), "(nil)\n");
    assert!(one(&["FOO", "x"])
        .starts_with("ERR unknown command 'FOO', with args beginning with: 'x' \n"));
    // Commands on stdin, as a script would send them.
    let args = cli_args(&[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, ok) = run(
        &cli,
        &refs,
        Some("SET cli:s 1\nGET cli:s\nDEL cli:s\nEXISTS cli:s\n"),
    );
    assert!(ok, "{out}");
    assert_eq!(out, "OK\n1\n1\n0\n");
    // --scan drives SCAN with cursors until 0.
    for i in 0..50 {
        one(&["SET", &format!("cli:scan:{i}"), "v"]);
    }
    let mut keys: Vec<String> = one(&["--scan", "--pattern", "cli:scan:*"])
        .lines()
        .map(str::to_string)
        .collect();
    keys.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("cli:scan:{i}")).collect();
    want.sort();
    assert_eq!(keys, want);
    // INFO is what redis-cli and HAProxy parse.
    assert!(one(&["INFO", "replication"]).contains("role:master"));
    println!("redis-cli: 60 commands answered as expected");
}

#[test]
fn redis_benchmark_runs() {
    let Some(bench) = require_tool("redis-benchmark") else {
        return;
    };
    let ours = start_ours(commands::CommandConfig::default(), true);
    let port = ours.addr.port().to_string();
    let (out, ok) = run(
        &bench,
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "set,get",
            "-n",
            "2000",
            "-c",
            "4",
            "-P",
            "8",
            "-q",
        ],
        None,
    );
    assert!(ok, "redis-benchmark failed: {out}");
    // It reports both tests; its SET stored the key its GET reads.
    assert!(out.contains("SET:") && out.contains("GET:"), "{out}");
    let (reply, _) = exchange(ours.addr, &cmdw("GET key:__rand_int__"), usize::MAX);
    assert!(show(&reply).starts_with("$3\r\n"), "{}", show(&reply));
    println!("redis-benchmark against tandem:\n{}", out.trim());
}

/// A python3 that has the redis module (Debian's python3-redis is for /usr/bin/python3).
fn python_with_redis() -> Option<String> {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import redis"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py.to_string());
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("python3 with the redis module is required under CI=true (apt-get install python3-redis)");
    }
    eprintln!("SKIP: no python3 with the redis module (apt-get install -y python3-redis)");
    None
}

#[test]
fn redis_py_works() {
    let Some(py) = python_with_redis() else {
        return;
    };
    let ours = start_ours(
        commands::CommandConfig {
            requirepass: Some(b"pw".to_vec()),
            ..commands::CommandConfig::default()
        },
        true,
    );
    let script = format!(
        r#"
import redis
r = redis.Redis(host="127.0.0.1", port={port}, password="pw", client_name="py", socket_timeout=10)
assert r.ping()
assert r.client_getname() == "py"
assert r.set("py:s", "v1", ex=100)
assert r.get("py:s") == b"v1"
assert r.ttl("py:s") == 100
assert r.expire("py:s", 50)
assert 49 <= r.ttl("py:s") <= 50
assert r.persist("py:s") and r.ttl("py:s") == -1
assert r.set("py:s", "v2", nx=True) is None
assert r.set("py:s", "v2", xx=True, px=5000)
assert r.hset("py:h", mapping={{"creationTime": "1", "maxInactiveInterval": "1800", "attr": "x"}}) == 3
assert r.hgetall("py:h") == {{b"creationTime": b"1", b"maxInactiveInterval": b"1800", b"attr": b"x"}}
assert r.hdel("py:h", "attr") == 1
assert r.hget("py:h", "maxInactiveInterval") == b"1800"
assert r.mget("py:s", "py:none") == [b"v2", None]
assert r.exists("py:s", "py:h") == 2
assert sorted(r.scan_iter(match="py:*")) == [b"py:h", b"py:s"]
assert r.delete("py:s", "py:h") == 2
assert r.dbsize() == 0
p = r.pipeline(transaction=False)
for i in range(100):
    p.set(f"py:p:{{i}}", i)
    p.get(f"py:p:{{i}}")
res = p.execute()
assert res == [x for i in range(100) for x in (True, str(i).encode())]
try:
    r.hset("py:p:1", "f", "v")
    raise SystemExit("expected WRONGTYPE")
except redis.ResponseError as e:
    assert str(e).startswith("WRONGTYPE"), e
info = r.info()
assert info["role"] == "master", info
bad = redis.Redis(host="127.0.0.1", port={port}, password="wrong")
try:
    bad.ping()
    raise SystemExit("expected an auth error")
except (redis.AuthenticationError, redis.ResponseError) as e:
    assert "WRONGPASS" in str(e), e
print("redis-py ok")
"#,
        port = ours.addr.port()
    );
    let (out, ok) = run(&py, &["-c", &script], None);
    assert!(
        ok && out.contains("redis-py ok"),
        "redis-py script failed:\n{out}"
    );
    println!("{}", out.trim());
}
