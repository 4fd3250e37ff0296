//! The daemon: one mio `Poll` driving the cluster socket, the HTTP endpoint, the RESP session
//! API, signals and hooks.
//!
//! No fixed tick: every wait lasts until the earliest deadline anyone has
//! ([`Cluster::poll_timeout`], HTTP connection deadlines, the hook deadline, RESP timers) or
//! until an event. One iteration: wait, handle events (datagrams in batches, HTTP, RESP,
//! signals), fire due timeouts, turn cluster events into hooks, send what the cluster queued
//! (sendmmsg), check readiness.
//!
//! Signals: SIGTERM/SIGINT send Leave and return (exit 0) within the iteration; SIGHUP
//! re-reads the key file; SIGCHLD reaps hooks.

use std::io;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tandem_core::{Incarnation, Instant};
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterConfig};
use crate::config::{load_keys, Config};
use crate::hooks::{HookEnv, Hooks};
use crate::http::{HttpServer, Source};
use crate::metrics::{self, DaemonMetrics};
use crate::net::{ClusterSocket, DeadlineTimer, NetConfig, NetError, RecvBatch, SendBatch};
use crate::notify::Notifier;
use crate::status::StatusSnapshot;

pub const TOKEN_CLUSTER: Token = Token(0);
pub const TOKEN_SIGNALS: Token = Token(1);
pub const TOKEN_TIMER: Token = Token(2);
/// The HTTP listener; its connections take the tokens after it.
pub const TOKEN_HTTP: Token = Token(16);
/// First token of the RESP server's range (listener + clients); everything at or above is RESP.
pub const TOKEN_RESP_BASE: Token = Token(1 << 16);

/// recvmmsg batches per wake-up before other sources get a turn.
const MAX_RECV_BATCHES_PER_WAKE: usize = 64;
/// sendmmsg batches per iteration (32 frames each).
const MAX_SEND_BATCHES_PER_ITER: usize = 64;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug)]
pub enum DaemonError {
    /// A configuration problem found when acting on it (exit code 2), e.g. no CAP_NET_RAW.
    Config(String),
    /// Anything else (exit code 1).
    Runtime(String),
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Config(s) | DaemonError::Runtime(s) => f.write_str(s),
        }
    }
}

fn runtime(what: &str) -> impl FnOnce(io::Error) -> DaemonError + '_ {
    move |e| DaemonError::Runtime(format!("{what}: {e}"))
}

pub struct Daemon {
    cfg: Config,
    clock: Clock,
    poll: Poll,
    signals: Signals,
    timer: DeadlineTimer,
    socket: ClusterSocket,
    cluster: Cluster,
    http: HttpServer,
    hooks: Hooks,
    notifier: Notifier,
    recv: RecvBatch,
    send: SendBatch,
    metrics: DaemonMetrics,
    ready: bool,
    /// The socket may still hold datagrams (a wake-up stopped at its batch bound).
    recv_pending: bool,
    // LEAD: the RESP server (`resp_server`) lives here, registered at TOKEN_RESP_BASE.
}

impl Daemon {
    /// Opens every socket (so bad addresses and missing capabilities fail before any wait),
    /// then takes a fresh incarnation and creates the cluster.
    pub fn new(cfg: Config) -> Result<Daemon, DaemonError> {
        let clock = Clock::new();
        let poll = Poll::new().map_err(runtime("epoll"))?;
        let socket = ClusterSocket::open(&NetConfig::from_config(&cfg)).map_err(|e| match e {
            NetError::NeedCapNetRaw => DaemonError::Config(e.to_string()),
            NetError::Io(..) => DaemonError::Runtime(format!("cluster socket: {e}")),
        })?;
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&socket)),
                TOKEN_CLUSTER,
                Interest::READABLE,
            )
            .map_err(runtime("register cluster socket"))?;
        let http = HttpServer::bind(cfg.http, poll.registry(), TOKEN_HTTP)
            .map_err(|e| DaemonError::Runtime(format!("--http {}: {e}", cfg.http)))?;
        // LEAD: bind the RESP server here: resp_server::RespServer::bind(cfg.resp, ...,
        // poll.registry(), TOKEN_RESP_BASE), with cfg.max_sessions/max_bytes/max_value_bytes/
        // requirepass/replication.
        let mut signals =
            Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD]).map_err(runtime("signals"))?;
        poll.registry()
            .register(&mut signals, TOKEN_SIGNALS, Interest::READABLE)
            .map_err(runtime("register signals"))?;
        let timer = DeadlineTimer::new().map_err(runtime("timerfd"))?;
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&timer)),
                TOKEN_TIMER,
                Interest::READABLE,
            )
            .map_err(runtime("register timerfd"))?;
        let incarnation = crate::incarnation::fresh();
        let now = clock.now();
        let cluster = Cluster::new(ClusterConfig::from_config(&cfg, incarnation), now);
        info!(
            node = cfg.node_id.0,
            cluster = cfg.cluster_id.0,
            incarnation = incarnation.0,
            transport = ?cfg.transport,
            group = %cfg.group,
            interface = %cfg.interface,
            profile = cfg.profile.as_str(),
            http = %cfg.http,
            "tandemd started"
        );
        Ok(Daemon {
            hooks: Hooks::new(cfg.on_change.clone()),
            notifier: Notifier::from_env(),
            cfg,
            clock,
            poll,
            signals,
            timer,
            socket,
            cluster,
            http,
            recv: RecvBatch::new(),
            send: SendBatch::new(),
            metrics: DaemonMetrics::default(),
            ready: false,
            recv_pending: false,
        })
    }

    pub fn incarnation(&self) -> Incarnation {
        self.cluster.status(self.clock.now()).incarnation
    }

    /// Runs until SIGTERM/SIGINT (then `Ok`) or a fatal error.
    pub fn run(&mut self) -> Result<(), DaemonError> {
        let mut events = Events::with_capacity(256);
        loop {
            let now = self.clock.now();
            let deadline = self.next_deadline();
            // The timerfd wakes us at the deadline to the microsecond; epoll's timeout (whole
            // milliseconds, rounded up by mio) only backs it up.
            if let Err(e) = self.timer.arm(deadline, now) {
                warn!(error = %e, "timerfd");
            }
            let timeout = if self.recv_pending {
                Some(Duration::ZERO)
            } else {
                deadline.map(|d| match d.saturating_duration_since(now) {
                    Duration::ZERO => Duration::ZERO,
                    wait => wait + Duration::from_millis(1),
                })
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(DaemonError::Runtime(format!("poll: {e}")));
            }
            let now = self.clock.now();
            let busy_start = std::time::Instant::now();
            self.metrics.loop_iterations += 1;
            let timer_fired = events.iter().any(|e| e.token() == TOKEN_TIMER);
            if events.is_empty() || timer_fired {
                self.metrics.loop_timeouts += 1;
                if let Some(d) = deadline {
                    let late = now.saturating_duration_since(d).as_micros() as u64;
                    self.metrics.timer_late_max_us = self.metrics.timer_late_max_us.max(late);
                    self.metrics.timer_late_us += late;
                }
            }
            let mut stop = false;
            if self.recv_pending {
                self.recv_datagrams(now);
            }
            for ev in events.iter() {
                match ev.token() {
                    TOKEN_CLUSTER => self.recv_datagrams(now),
                    TOKEN_SIGNALS => stop |= self.handle_signals(now),
                    TOKEN_TIMER => self.timer.clear(),
                    t if self.http.owns(t) => {
                        let src = View {
                            cluster: &self.cluster,
                            metrics: &self.metrics,
                            now,
                        };
                        self.http.handle_event(self.poll.registry(), t, now, &src);
                    }
                    t if t.0 >= TOKEN_RESP_BASE.0 => {
                        // LEAD: self.resp.handle_event(self.poll.registry(), t, now, ...)
                    }
                    t => debug!(token = t.0, "event for unknown token"),
                }
            }
            self.on_timeouts(now);
            self.drain_cluster_events(now);
            if stop {
                return self.shutdown();
            }
            self.flush(now);
            self.copy_stats();
            if !self.ready && self.cluster.joined(now) {
                self.ready = true;
                info!(node = self.cfg.node_id.0, "joined the cluster; ready");
                self.notifier.notify("READY=1");
            }
            self.metrics.busy_us += busy_start.elapsed().as_micros() as u64;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.cluster.poll_timeout(),
            self.http.poll_timeout(),
            self.hooks.poll_timeout(),
            // LEAD: self.resp.poll_timeout() (session expiry, replication acks).
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timeouts(&mut self, now: Instant) {
        if self.cluster.poll_timeout().is_some_and(|t| t <= now) {
            self.cluster.handle_timeout(now);
        }
        if self.http.poll_timeout().is_some_and(|t| t <= now) {
            self.http.handle_timeout(self.poll.registry(), now);
        }
        if self.hooks.poll_timeout().is_some_and(|t| t <= now) {
            self.hooks.handle_timeout(now);
        }
    }

    fn recv_datagrams(&mut self, now: Instant) {
        self.recv_pending = false;
        for _ in 0..MAX_RECV_BATCHES_PER_WAKE {
            let n = match self.socket.recv_batch(&mut self.recv, &self.clock, now) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "cluster socket receive failed");
                    return;
                }
            };
            self.metrics.recv_batches += 1;
            self.metrics.recv_datagrams += n as u64;
            self.metrics.recv_batch_max = self.metrics.recv_batch_max.max(n as u64);
            for i in 0..n {
                let Some(d) = self.recv.datagram(i) else {
                    continue;
                };
                if d.truncated {
                    self.metrics.recv_truncated += 1;
                    continue;
                }
                self.cluster.handle_datagram(d.arrival, d.data);
            }
            if n < crate::net::BATCH {
                return;
            }
        }
        // Still more waiting: come back after the other sources had their turn.
        self.recv_pending = true;
    }

    /// Returns true when the daemon must stop.
    fn handle_signals(&mut self, now: Instant) -> bool {
        let mut stop = false;
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGTERM | SIGINT => {
                    info!(signal = sig, "leaving the cluster");
                    self.cluster.leave(now);
                    stop = true;
                }
                SIGHUP => self.reload_keys(),
                SIGCHLD => self.hooks.reap(now),
                _ => {}
            }
        }
        stop
    }

    fn reload_keys(&mut self) {
        let Some(path) = &self.cfg.key_file else {
            warn!("SIGHUP: no --key-file to reload");
            return;
        };
        match load_keys(path) {
            Ok(keys) => match self.cluster.reload_keys(&keys) {
                Ok(()) => {
                    self.metrics.key_reloads += 1;
                    info!(
                        active = keys.active().id.0,
                        keys = keys.keys.len(),
                        "SIGHUP: key file reloaded"
                    );
                }
                Err(e) => error!(?e, "SIGHUP: keys not taken"),
            },
            Err(e) => error!("SIGHUP: key file not reloaded, old keys stay: {e}"),
        }
    }

    fn drain_cluster_events(&mut self, now: Instant) {
        // Bounded by the cluster's event queue capacity.
        while let Some(ev) = self.cluster.poll_event() {
            let s = self.cluster.status(now);
            info!(
                event = ev.name(),
                ?ev,
                role = s.role.as_str(),
                "cluster change"
            );
            self.hooks
                .fire(HookEnv::new(&ev, s.node_id, s.role, s.leader, s.view), now);
        }
    }

    /// Sends everything the cluster has queued, in sendmmsg batches.
    fn flush(&mut self, now: Instant) {
        for _ in 0..MAX_SEND_BATCHES_PER_ITER {
            while let Some(slot) = self.send.slot() {
                match self.cluster.poll_transmit(now, slot) {
                    Some(len) => self.send.commit(len),
                    None => break,
                }
            }
            if self.send.is_empty() {
                return;
            }
            let want = (self.send.len() * self.socket.fanout()) as u64;
            self.metrics.send_batches += 1;
            match self.socket.send_batch(&mut self.send) {
                Ok(n) => {
                    self.metrics.send_datagrams += n as u64;
                    self.metrics.send_dropped += want.saturating_sub(n as u64);
                }
                Err(e) => {
                    self.metrics.send_dropped += want;
                    warn!(error = %e, "cluster socket send failed");
                }
            }
        }
    }

    fn copy_stats(&mut self) {
        let h = self.hooks.stats();
        self.metrics.hooks_started = h.started;
        self.metrics.hooks_failed = h.failed;
        self.metrics.hooks_dropped = h.dropped;
        let s = self.http.stats();
        self.metrics.http_requests = s.requests;
        self.metrics.http_rejected = s.rejected;
    }

    fn shutdown(&mut self) -> Result<(), DaemonError> {
        self.notifier.notify("STOPPING=1");
        let now = self.clock.now();
        // Sends the Leave frame queued by `leave`.
        self.flush(now);
        info!(node = self.cfg.node_id.0, "left the cluster; bye");
        Ok(())
    }
}

/// What the HTTP endpoint reads, borrowed for one event.
struct View<'a> {
    cluster: &'a Cluster,
    metrics: &'a DaemonMetrics,
    now: Instant,
}

impl Source for View<'_> {
    fn status(&self) -> StatusSnapshot {
        self.cluster.status(self.now)
    }

    fn metrics(&self) -> String {
        metrics::render(self.cluster.metrics(), self.metrics, &self.status())
    }
}
