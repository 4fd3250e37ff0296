//! The seed scenario at the web level (issue 13): `examples/flask-sessions/app.py` runs on
//! two namespace hosts, each next to its own tandemd, behind HAProxy in HTTP mode (round
//! robin, no sticky sessions) on a third host. A user logs in and keeps saving attributes
//! through HAProxy; mid-stream, host A's app and tandemd are killed with SIGKILL. The user's
//! next requests are answered by B, still logged in, and the session holds every attribute
//! whose request was answered, before the kill and after. The test prints the user-visible
//! gap (from the kill to the end of the first successful request that started after it) for
//! docs/RELIABILITY.md. `TANDEM_EXAMPLE_PROFILE=fast` runs the nodes with that profile
//! (default: the daemon's, `lan`).
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_tests::haproxy::Haproxy;
use tandem_tests::libs::{examples_dir, Runtime, Spawned};
use tandem_tests::scenario::{Cluster, Opts};
use tandem_tests::{http_exchange, in_netns, wait_for, Net, Value};

const APP_PORT: u16 = 8000;
const LB_PORT: u16 = 8080;
/// Attributes saved before the kill.
const BEFORE_KILL: usize = 40;
/// How long the user keeps going after the kill.
const AFTER_KILL: Duration = Duration::from_secs(3);
/// The pause between two of the user's requests.
const THINK: Duration = Duration::from_millis(5);
/// Bound on the whole stream, whatever happens.
const STREAM_LIMIT: Duration = Duration::from_secs(60);

/// One request of the stream: when it started and ended, its status (0: no answer) and body.
struct Exchange {
    start: Instant,
    end: Instant,
    status: u16,
    body: Option<Value>,
    attr: Option<(String, String)>,
}

fn request(lb: SocketAddr, method: &str, path: &str, cookie: &str) -> (u16, String, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: example\r\nCookie: {cookie}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    http_exchange(lb, &req, Duration::from_secs(10)).unwrap_or((0, String::new(), String::new()))
}

/// The example's own `haproxy.cfg` (the one README runs), with this test's addresses on its
/// `bind` and `server` lines and a stats socket for [`Haproxy`].
fn lb_config(listen: SocketAddr, servers: &[(&str, SocketAddr)], sock: &str) -> String {
    let path = examples_dir().join("flask-sessions/haproxy.cfg");
    let shipped = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut out = String::new();
    let mut ours = servers.iter();
    for line in shipped.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"bind") => out.push_str(&format!("    bind {listen}\n")),
            Some(&"server") => {
                let (name, addr) = ours.next().expect("more servers in haproxy.cfg than apps");
                let rest = words.get(3..).unwrap_or_default().join(" ");
                out.push_str(&format!("    server {name} {addr} {rest}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
                if line == "global" {
                    out.push_str(&format!("    stats socket {sock} mode 600 level admin\n"));
                }
            }
        }
    }
    assert!(
        ours.next().is_none(),
        "fewer servers in haproxy.cfg than apps"
    );
    out
}

fn session_cookie(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie").then_some(value)
        })
        .map(|v| v.trim().split(';').next().unwrap_or("").to_string())
}

#[test]
fn users_stay_logged_in_when_a_host_dies_mid_stream() {
    let Some(python) = Runtime::Python.require() else {
        return;
    };
    let extra = match std::env::var("TANDEM_EXAMPLE_PROFILE") {
        Ok(p) => vec!["--profile".to_string(), p],
        Err(_) => Vec::new(),
    };
    let Some(mut c) = Cluster::start(Opts {
        witness: false,
        haproxy: false,
        emulated: None,
        extra,
    }) else {
        return;
    };
    let app = examples_dir().join("flask-sessions/app.py");
    let mut apps: Vec<Spawned> = [1, 2]
        .iter()
        .map(|&h| {
            let args = [
                app.to_string_lossy().into_owned(),
                "--listen".into(),
                format!("{}:{APP_PORT}", Net::addr(h)),
                "--resp".into(),
                Cluster::resp_addr(h).to_string(),
                "--name".into(),
                Cluster::server_name(h).to_uppercase(),
                "--secret".into(),
                "example-secret".into(),
            ];
            let log = std::env::temp_dir().join(format!("{}-app{h}.log", c.net.prefix));
            Spawned::start(c.net.ns(h), &python, &args, log)
        })
        .collect();
    let lb_ns = c.net.ns(c.lb_host).to_string();
    let lb_addr = SocketAddr::from((Net::addr(c.lb_host), LB_PORT));
    let servers = [1, 2].map(|h| {
        (
            Cluster::server_name(h),
            SocketAddr::from((Net::addr(h), APP_PORT)),
        )
    });
    let lb = Haproxy::start_with(&lb_ns, lb_addr, |sock| lb_config(lb_addr, &servers, sock));
    for (name, _) in servers {
        assert!(
            lb.wait_status(name, "UP", Duration::from_secs(30)),
            "haproxy never marked app {name} UP: {:?}\n{}",
            lb.server_status(name),
            apps.iter().map(Spawned::log).collect::<Vec<_>>().join("\n")
        );
    }

    // The user: logs in, then saves attribute after attribute until AFTER_KILL past the kill.
    let saved = Arc::new(AtomicUsize::new(0));
    let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let user = {
        let (saved, killed_at, done, ns) = (
            saved.clone(),
            killed_at.clone(),
            done.clone(),
            lb_ns.clone(),
        );
        std::thread::spawn(move || {
            in_netns(&ns, move || {
                let (status, head, body) = request(lb_addr, "POST", "/login?user=alice", "");
                let cookie = session_cookie(&head);
                let mut stream = Vec::new();
                let begun = Instant::now();
                for i in 0.. {
                    let after_kill = killed_at.lock().unwrap().map(|k| k.elapsed());
                    if after_kill.is_some_and(|d| d >= AFTER_KILL)
                        || begun.elapsed() >= STREAM_LIMIT
                        || cookie.is_none()
                    {
                        break;
                    }
                    let (name, value) = (format!("a{i}"), format!("v{i}"));
                    let start = Instant::now();
                    let (status, _, text) = request(
                        lb_addr,
                        "POST",
                        &format!("/attr?name={name}&value={value}"),
                        cookie.as_deref().unwrap_or(""),
                    );
                    let end = Instant::now();
                    if status == 200 {
                        saved.fetch_add(1, Ordering::Relaxed);
                    }
                    stream.push(Exchange {
                        start,
                        end,
                        status,
                        body: serde_json::from_str(&text).ok(),
                        attr: Some((name, value)),
                    });
                    std::thread::sleep(THINK);
                }
                done.store(true, Ordering::Relaxed);
                (status, body, cookie, stream)
            })
        })
    };

    // Mid-stream: kill host A's app and tandemd.
    let reached = wait_for(Duration::from_secs(30), Duration::from_millis(1), || {
        (saved.load(Ordering::Relaxed) >= BEFORE_KILL || done.load(Ordering::Relaxed)).then_some(())
    });
    assert!(
        reached.is_some(),
        "the user never saved {BEFORE_KILL} attributes"
    );
    let kill = Instant::now();
    apps[0].kill9();
    c.kill9(1);
    *killed_at.lock().unwrap() = Some(kill);
    let (login_status, login_body, cookie, stream) = user.join().unwrap();
    assert_eq!(login_status, 200, "login: {login_body}");
    let cookie = cookie.expect("login set no session cookie");

    // Every answered request answered as alice: the user was never logged out.
    let mut acked = BTreeMap::new();
    for x in &stream {
        if x.status != 200 {
            continue;
        }
        let body = x.body.as_ref().expect("a 200 without JSON");
        assert_eq!(body["user"], "alice", "logged out: {body}");
        let (name, value) = x.attr.clone().unwrap();
        acked.insert(name, value);
    }
    let before: Vec<&Exchange> = stream.iter().filter(|x| x.start < kill).collect();
    let after: Vec<&Exchange> = stream.iter().filter(|x| x.start >= kill).collect();
    let first_ok = after
        .iter()
        .find(|x| x.status == 200)
        .unwrap_or_else(|| panic!("no request succeeded after the kill"));
    let on_b = after
        .iter()
        .filter(|x| x.status == 200)
        .all(|x| x.body.as_ref().unwrap()["served_by"] == "B");
    assert!(on_b, "a request after the kill was answered by A");
    let failed: Vec<u16> = stream
        .iter()
        .filter(|x| x.status != 200)
        .map(|x| x.status)
        .collect();
    let worst = after
        .iter()
        .map(|x| x.end - x.start)
        .max()
        .unwrap_or_default();
    println!(
        "web failover: gap {:.1} ms (kill to the end of the first successful request after it); \
         {} requests before the kill, {} after ({} failed: {failed:?}); slowest request after \
         the kill {:.1} ms",
        (first_ok.end - kill).as_secs_f64() * 1e3,
        before.len(),
        after.len(),
        failed.len(),
        worst.as_secs_f64() * 1e3,
    );

    // The session, read back through HAProxy (now only B): alice with every saved attribute.
    let (status, _, text) = in_netns(&lb_ns, move || request(lb_addr, "GET", "/me", &cookie));
    assert_eq!(status, 200, "{text}");
    let me: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(me["user"], "alice", "{me}");
    assert_eq!(me["served_by"], "B", "{me}");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|(k, v)| me["attrs"][k.as_str()].as_str() != Some(v.as_str()))
        .map(|(k, _)| k)
        .collect();
    assert!(
        acked.len() > BEFORE_KILL && missing.is_empty(),
        "{} attributes answered, {} missing from the session: {missing:?}",
        acked.len(),
        missing.len()
    );
    drop(lb);
}
