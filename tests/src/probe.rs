//! Background probes that watch a node while a test attacks it: a load balancer's
//! `GET /health` every few milliseconds, a session client's round trips, the daemon's RSS.
//! Each runs on its own thread (inside the node's namespace where it talks to it) until
//! stopped, bounded in count and time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::in_netns;
use crate::resp_client::Resp;

/// What a probe saw.
#[derive(Clone, Debug, Default)]
pub struct Probed {
    /// Probes made.
    pub count: u64,
    /// Probes that failed (no answer, wrong answer).
    pub failed: u64,
    /// Probes that answered but took at least the probe's bound.
    pub slow: u64,
    /// The longest answer.
    pub max: Duration,
    /// The first failure, for the test's message.
    pub first_failure: Option<String>,
    /// How long each answered probe took.
    pub took: Vec<Duration>,
}

impl Probed {
    fn record(&mut self, took: Duration, bound: Duration, result: Result<(), String>) {
        self.count += 1;
        self.max = self.max.max(took);
        if result.is_ok() {
            self.took.push(took);
        }
        match result {
            Ok(()) if took >= bound => self.slow += 1,
            Ok(()) => {}
            Err(e) => {
                self.failed += 1;
                self.first_failure.get_or_insert(e);
            }
        }
    }
}

impl Probed {
    /// The `q` quantile (0..=1) of the answered probes' times.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut t = self.took.clone();
        t.sort_unstable();
        let i = ((t.len() as f64 - 1.0) * q).round().max(0.0) as usize;
        t.get(i).copied().unwrap_or_default()
    }
}

/// A running probe; [`Probe::stop`] ends it and returns what it saw.
pub struct Probe {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Probed>,
}

/// Probes run at most this long, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(180);

impl Probe {
    /// `GET /health` on `addr` from inside `ns` every `every`; an answer other than 200, or
    /// none within 2 s, fails; one taking `bound` or more is slow.
    pub fn health(ns: &str, addr: SocketAddr, every: Duration, bound: Duration) -> Probe {
        Probe::run(ns, every, move |p| {
            let start = Instant::now();
            let r = health_once(addr);
            p.record(start.elapsed(), bound, r);
        })
    }

    /// A RESP client on `addr` inside `ns` that writes and reads back a key every `every`
    /// on one connection (reconnecting after a failure, which counts).
    pub fn resp(ns: &str, addr: SocketAddr, every: Duration, bound: Duration) -> Probe {
        let mut conn: Option<Resp> = None;
        let mut i = 0u64;
        let ns_owned = ns.to_string();
        Probe::run(ns, every, move |p| {
            i += 1;
            let start = Instant::now();
            let r = (|| {
                if conn.is_none() {
                    conn = Some(
                        Resp::connect(&ns_owned, addr, Duration::from_secs(2))
                            .map_err(|e| format!("connect: {e}"))?,
                    );
                }
                let c = conn.as_mut().ok_or("no connection")?;
                let v = format!("probe-{i}");
                let set = c
                    .set("probe:key", v.as_bytes())
                    .map_err(|e| format!("SET: {e}"))?;
                let got = c.get("probe:key").map_err(|e| format!("GET: {e}"))?;
                if !set.is_ok() || got.bytes() != Some(v.as_bytes()) {
                    return Err(format!("SET/GET: {set:?} {got:?}"));
                }
                Ok(())
            })();
            if r.is_err() {
                conn = None;
            }
            p.record(start.elapsed(), bound, r);
        })
    }

    fn run(ns: &str, every: Duration, mut once: impl FnMut(&mut Probed) + Send + 'static) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.to_string();
        let handle = std::thread::spawn(move || {
            in_netns(&ns, move || {
                let mut p = Probed::default();
                let start = Instant::now();
                while !flag.load(Ordering::Relaxed) && start.elapsed() < MAX_RUN {
                    let t = Instant::now();
                    once(&mut p);
                    if let Some(rest) = every.checked_sub(t.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                p
            })
        });
        Probe { stop, handle }
    }

    pub fn stop(self) -> Probed {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .unwrap_or_else(|_| panic!("probe thread panicked"))
    }
}

/// One `GET /health` (the caller is in the node's namespace).
fn health_once(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    // Bounded: the answer is a few hundred bytes.
    s.take(1 << 16)
        .read_to_end(&mut buf)
        .map_err(|e| format!("read: {e}"))?;
    if buf.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "answer: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(80)])
        ))
    }
}

/// Samples the RSS of `pid` every `every` until stopped; returns the largest seen.
pub struct RssWatch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

impl RssWatch {
    pub fn start(pid: i32, every: Duration) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0;
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) && start.elapsed() < MAX_RUN {
                max = max.max(crate::rss_bytes(pid).unwrap_or(0));
                std::thread::sleep(every);
            }
            max
        });
        RssWatch { stop, handle }
    }

    /// The largest RSS seen, in bytes.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}
