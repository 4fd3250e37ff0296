//! `tandemd status`: one node's `/status` for a person to read at a glance (as `crm_mon` or
//! `corosync-quorumtool` do): members, leader and view, role, health and why not, state
//! transfer progress, replication backlog. `--json` passes the document through.
//!
//! The client is a single bounded `GET` over a std `TcpStream` (timeouts on connect, read and
//! write, body capped), parsed with httparse.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::config::{read_file_config, DEFAULT_HTTP};

/// Longest the daemon gets to connect, and to answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read: a /status of a full member table is a few KiB.
const MAX_ANSWER: u64 = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The node's HTTP endpoint [default: `http` of --config, else of
    /// /etc/tandem/tandemd.toml if readable, else 127.0.0.1:7380].
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<SocketAddr>,
    /// Take the HTTP endpoint from this config file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the /status JSON document as the node sent it.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Refresh every --every seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 1, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub every: u64,
    /// With --watch: stop after this many views.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
}

/// Runs `tandemd status`, writing to stdout; the error line if the node could not be read.
pub fn run(args: &StatusArgs) -> Result<(), String> {
    let addr = endpoint(args, Path::new(PACKAGED_CONFIG))?;
    if !args.watch {
        let doc = fetch(addr)?;
        if args.json {
            println!("{doc}");
        } else {
            print!("{}", render(&parse(&doc)?));
        }
        return Ok(());
    }
    // Clear the screen only for a person watching; a pipe gets the views one after another.
    let clear = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut shown = 0u64;
    loop {
        let view = fetch(addr)
            .and_then(|d| parse(&d))
            .map(|v| render(&v))
            .unwrap_or_else(|e| format!("tandemd status: {e}\n"));
        if clear {
            print!("\x1b[H\x1b[2J");
        }
        print!("{view}");
        if !clear {
            println!();
        }
        let _ = std::io::stdout().flush();
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(args.every));
    }
}

/// The packaged config file: `tandemd status` on a host finds its node without flags.
pub(crate) const PACKAGED_CONFIG: &str = "/etc/tandem/tandemd.toml";

/// The address to ask: `--http`, else the named config file's (an error if it cannot be read),
/// else `fallback_config`'s if it can be read, else the daemon's default.
fn endpoint(args: &StatusArgs, fallback_config: &Path) -> Result<SocketAddr, String> {
    if let Some(a) = args.http {
        return Ok(a);
    }
    let from_file = match &args.config {
        Some(path) => read_file_config(path).map_err(|e| e.to_string())?.http,
        None => read_file_config(fallback_config).ok().and_then(|f| f.http),
    };
    let addr = from_file.unwrap_or_else(|| {
        // A literal constant, checked by `defaults_parse` in config.
        DEFAULT_HTTP
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7380)))
    });
    // A daemon listening on every address is reached through loopback of that family (`[::]`
    // may be IPv6 only, net.ipv6.bindv6only).
    Ok(match addr.ip() {
        std::net::IpAddr::V4(a) if a.is_unspecified() => {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        std::net::IpAddr::V6(a) if a.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    })
}

/// `GET /status` on `addr`: the body of a 200 answer.
pub(crate) fn fetch(addr: SocketAddr) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("{addr}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(fail)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    s.write_all(b"GET /status HTTP/1.0\r\nHost: tandemd\r\n\r\n")
        .map_err(fail)?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER + 1).read_to_end(&mut raw).map_err(fail)?;
    if raw.len() as u64 > MAX_ANSWER {
        return Err(format!("{addr}: answer larger than {MAX_ANSWER} bytes"));
    }
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let body_at = match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(format!("{addr}: not an HTTP answer")),
    };
    let body = String::from_utf8_lossy(raw.get(body_at..).unwrap_or_default()).into_owned();
    match resp.code {
        Some(200) => Ok(body),
        code => Err(format!(
            "{addr}: /status answered {}: {}",
            code.unwrap_or(0),
            body.trim()
        )),
    }
}

fn parse(doc: &str) -> Result<Value, String> {
    serde_json::from_str(doc).map_err(|e| format!("/status is not JSON: {e}"))
}

/// The human view of a `/status` document. Fields a daemon does not send show as `?`.
pub(crate) fn render(s: &Value) -> String {
    let mut o = String::new();
    let num = |v: &Value| v.as_u64().map_or("?".to_string(), |n| n.to_string());
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let leader = match &s["leader"] {
        Value::Null => "none".to_string(),
        v => format!("node {}", num(v)),
    };
    let _ = writeln!(
        o,
        "node {} (cluster {}), incarnation {}: {}",
        num(&s["node_id"]),
        num(&s["cluster_id"]),
        num(&s["incarnation"]),
        text(&s["role"])
    );
    let _ = writeln!(o, "leader:      {leader}, view {}", num(&s["view"]));
    let health = match (&s["healthy"], &s["health"]) {
        (Value::Bool(true), _) => "ok".to_string(),
        (Value::Bool(false), Value::String(why)) => format!("NOT HEALTHY: {why}"),
        (Value::Bool(false), _) => "NOT HEALTHY".to_string(),
        _ => "?".to_string(),
    };
    let _ = writeln!(o, "health:      {health}");
    let sync = &s["sync"];
    let sessions = num(&sync["sessions"]);
    let sync_line = match sync["state"].as_str() {
        Some("synced") => format!("synced, {sessions} sessions held"),
        Some("pulling") => format!(
            "pulling the full state from node {}: {sessions} sessions so far",
            num(&sync["from"])
        ),
        Some("waiting") => format!("waiting for a peer to sync from ({sessions} sessions held)"),
        _ => match s["synced"].as_bool() {
            Some(true) => "synced".to_string(),
            Some(false) => "not synced".to_string(),
            None => "?".to_string(),
        },
    };
    let _ = writeln!(o, "sync:        {sync_line}");
    let r = &s["replication"];
    if r.is_object() {
        let _ = writeln!(
            o,
            "replication: {} live peer(s), backlog {} chunk(s) (written {}, acknowledged by all {}), {} write(s) waiting, outbox {}",
            num(&r["peers"]),
            num(&r["backlog"]),
            num(&r["written"]),
            num(&r["committed"]),
            num(&r["writes_held"]),
            num(&r["outbox"]),
        );
    }
    if s["isolated"].as_bool() == Some(true) {
        let _ = writeln!(o, "quorum:      ISOLATED (sees no majority of the voters)");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:>6}  {:<8}  {:>11}  LAST HEARD",
        "ID", "STATE", "INCARNATION"
    );
    let me = s["node_id"].as_u64();
    for m in s["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let heard = if m["node_id"].as_u64() == me {
            "(this node)".to_string()
        } else {
            match m["ms_since_heard"].as_u64() {
                Some(ms) => format!("{} ago", human_ms(ms)),
                None => "?".to_string(),
            }
        };
        let _ = writeln!(
            o,
            "{:>6}  {:<8}  {:>11}  {heard}",
            num(&m["node_id"]),
            text(&m["state"]),
            num(&m["incarnation"])
        );
    }
    o
}

fn human_ms(ms: u64) -> String {
    match ms {
        0..=9_999 => format!("{ms} ms"),
        10_000..=7_199_999 => format!("{} s", ms / 1000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "node_id": 1, "cluster_id": 7, "incarnation": 1700000000u64, "state": "alive",
            "leader": 2, "view": 3, "role": "follower", "synced": false, "isolated": false,
            "healthy": false, "health": "not synced: session state transfer in progress",
            "sync": {"state": "pulling", "from": 2, "sessions": 1234},
            "replication": {"peers": 1, "written": 10, "committed": 8, "backlog": 2,
                            "writes_held": 1, "outbox": 0},
            "members": [
                {"node_id": 1, "state": "alive", "incarnation": 1700000000u64, "ms_since_heard": 0},
                {"node_id": 2, "state": "suspect", "incarnation": 5, "ms_since_heard": 40}
            ]
        })
    }

    #[test]
    fn the_view_names_everything_an_operator_asks() {
        let v = render(&doc());
        for want in [
            "node 1 (cluster 7), incarnation 1700000000: follower",
            "leader:      node 2, view 3",
            "NOT HEALTHY: not synced",
            "pulling the full state from node 2: 1234 sessions so far",
            "backlog 2 chunk(s)",
            "1 write(s) waiting",
        ] {
            assert!(v.contains(want), "{want}\n{v}");
        }
        let rows: Vec<&str> = v
            .lines()
            .skip_while(|l| !l.contains("LAST HEARD"))
            .collect();
        assert_eq!(rows.len(), 3, "{v}");
        assert!(rows[1].contains("(this node)"), "{v}");
        let cols: Vec<&str> = rows[2].split_whitespace().collect();
        assert_eq!(cols, ["2", "suspect", "5", "40", "ms", "ago"], "{v}");
    }

    #[test]
    fn missing_fields_show_as_unknown_not_a_panic() {
        let v = render(&json!({"members": [{"node_id": 3}]}));
        assert!(v.contains("node ? (cluster ?)"), "{v}");
        assert!(v.contains("leader:      none"), "{v}");
        let _ = render(&json!([1, 2]));
        let _ = render(&Value::Null);
    }

    #[test]
    fn a_healthy_leader() {
        let mut d = doc();
        d["healthy"] = json!(true);
        d["role"] = json!("leader");
        d["sync"] = json!({"state": "synced", "sessions": 5});
        let v = render(&d);
        assert!(v.contains("health:      ok"), "{v}");
        assert!(v.contains("synced, 5 sessions held"), "{v}");
    }

    #[test]
    fn the_endpoint_comes_from_the_flag_the_file_or_the_default() {
        let dir = std::env::temp_dir().join(format!("tandem-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let named = dir.join("named.toml");
        let packaged = dir.join("packaged.toml");
        std::fs::write(&named, "http = \"0.0.0.0:7390\"\n").unwrap();
        std::fs::write(&packaged, "http = \"127.0.0.2:7391\"\n").unwrap();
        let args = |http: Option<&str>, config: Option<&Path>| StatusArgs {
            http: http.map(|h| h.parse().unwrap()),
            config: config.map(Path::to_path_buf),
            json: false,
            watch: false,
            every: 1,
            count: None,
        };
        let at = |a: &StatusArgs, fallback: &Path| endpoint(a, fallback).map(|e| e.to_string());
        assert_eq!(
            at(&args(Some("127.0.0.3:1"), Some(&named)), &packaged).unwrap(),
            "127.0.0.3:1"
        );
        // Every address is reached through loopback.
        assert_eq!(
            at(&args(None, Some(&named)), &packaged).unwrap(),
            "127.0.0.1:7390"
        );
        assert_eq!(at(&args(None, None), &packaged).unwrap(), "127.0.0.2:7391");
        assert_eq!(
            at(&args(None, None), &dir.join("absent")).unwrap(),
            DEFAULT_HTTP
        );
        assert!(at(&args(None, Some(&dir.join("absent"))), &packaged).is_err());
        // IPv6: every address is reached through ::1.
        let v6 = dir.join("v6.toml");
        std::fs::write(&v6, "http = \"[::]:7392\"\n").unwrap();
        assert_eq!(at(&args(None, Some(&v6)), &packaged).unwrap(), "[::1]:7392");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fetch_reads_a_bounded_answer_and_refuses_errors() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"node_id\":4}",
                "HTTP/1.0 503 Service Unavailable\r\n\r\nnope\n",
                "garbage",
            ] {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = c.read(&mut buf).unwrap();
                assert!(buf.starts_with(b"GET /status HTTP/1.0\r\n"));
                c.write_all(answer.as_bytes()).unwrap();
            }
        });
        assert_eq!(fetch(addr).unwrap(), "{\"node_id\":4}");
        assert!(fetch(addr).unwrap_err().contains("503"));
        assert!(fetch(addr).unwrap_err().contains("not an HTTP answer"));
        server.join().unwrap();
    }
}
