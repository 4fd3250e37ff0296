//! A real HAProxy (Debian package) in a load-balancer namespace, in TCP mode in front of the
//! nodes' RESP ports, health-checking each node with `GET /health` on its HTTP port; or with
//! a configuration of the caller's ([`Haproxy::start_with`]).
//!
//! HAProxy runs in the foreground (`-db`) as a child process, killed in `Drop`. Its stats
//! socket is a path in the temp dir, reachable from the test process (network namespaces do
//! not separate the file system); [`Haproxy::server_status`] reads `show stat` from it.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

/// One backend server: a name (`a`, `b`), its RESP address and its HTTP port for checks.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: String,
    pub resp: SocketAddr,
    pub http_port: u16,
}

pub struct Haproxy {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    /// The address clients connect to (inside the LB namespace's network).
    pub addr: SocketAddr,
    pub ns: String,
}

/// The configuration for `listen` and `backends`: health checks every 100 ms, 2 failures
/// to mark a server down, 2 successes to mark it up, sessions on a server cut when it goes
/// down, and a failed connect redispatched to another server.
pub fn config(listen: SocketAddr, backends: &[Backend], sock: &str) -> String {
    let mut c = format!(
        "global\n\
         \x20   stats socket {sock} mode 600 level admin\n\
         \x20   maxconn 2000\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 300ms\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         \x20   timeout check 300ms\n\
         \x20   retries 3\n\
         \x20   option redispatch\n\
         frontend resp\n\
         \x20   bind {listen}\n\
         \x20   default_backend nodes\n\
         backend nodes\n\
         \x20   balance roundrobin\n\
         \x20   option httpchk GET /health\n\
         \x20   http-check expect status 200\n\
         \x20   default-server inter 100 fastinter 100 downinter 100 fall 2 rise 2 on-marked-down shutdown-sessions\n"
    );
    for b in backends {
        c.push_str(&format!(
            "    server {} {} check port {}\n",
            b.name, b.resp, b.http_port
        ));
    }
    c
}

impl Haproxy {
    /// Writes the TCP-mode [`config`], starts haproxy in `ns` listening on `listen`, and
    /// waits (bounded) until its stats socket answers. Panics if it does not start.
    pub fn start(ns: &str, listen: SocketAddr, backends: &[Backend]) -> Haproxy {
        Haproxy::start_with(ns, listen, |sock| config(listen, backends, sock))
    }

    /// [`Haproxy::start`] with the configuration `config(stats socket path)`.
    pub fn start_with(
        ns: &str,
        listen: SocketAddr,
        config: impl FnOnce(&str) -> String,
    ) -> Haproxy {
        let dir = std::env::temp_dir().join(format!("{ns}-haproxy"));
        let _ = std::fs::create_dir_all(&dir);
        let sock = dir.join("stats.sock");
        let cfg = dir.join("haproxy.cfg");
        let log = dir.join("haproxy.log");
        std::fs::write(&cfg, config(&sock.to_string_lossy()))
            .unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
        let err = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "haproxy", "-db", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn haproxy: {e}"));
        let mut h = Haproxy {
            child,
            dir,
            sock,
            log,
            addr: listen,
            ns: ns.to_string(),
        };
        let up = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            if let Ok(Some(st)) = h.child.try_wait() {
                panic!("haproxy exited: {st}\n{}", h.log());
            }
            h.stats().filter(|s| s.contains("svname")).map(|_| ())
        });
        assert!(up.is_some(), "haproxy stats never answered\n{}", h.log());
        h
    }

    /// haproxy's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs one command on the stats socket; its answer.
    pub fn command(&self, cmd: &str) -> Option<String> {
        let mut s = UnixStream::connect(&self.sock).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{cmd}\n").as_bytes()).ok()?;
        let mut out = String::new();
        // Bounded: the stats of a handful of servers are a few KiB.
        s.take(1 << 20).read_to_string(&mut out).ok()?;
        Some(out)
    }

    fn stats(&self) -> Option<String> {
        self.command("show stat")
    }

    /// The `status` column of server `name` (`UP`, `DOWN`, `UP 1/2`...); server names are
    /// unique across backends in these configurations.
    pub fn server_status(&self, name: &str) -> Option<String> {
        let stats = self.stats()?;
        let mut lines = stats.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let col = header.iter().position(|h| *h == "status")?;
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&name))
            .and_then(|f| f.get(col).map(|s| s.to_string()))
    }

    /// Waits at most `limit` until server `name`'s status is exactly `want`.
    pub fn wait_status(&self, name: &str, want: &str, limit: Duration) -> bool {
        wait_for(limit, Duration::from_millis(20), || {
            (self.server_status(name).as_deref() == Some(want)).then_some(())
        })
        .is_some()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- haproxy log ---\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
