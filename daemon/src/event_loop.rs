//! The daemon: one mio `Poll` driving the cluster socket, the HTTP endpoint, the RESP session
//! API, signals and hooks.
//!
//! No fixed tick: every wait lasts until the earliest deadline anyone has
//! ([`Engine::poll_timeout`], HTTP connection deadlines, the hook deadline, RESP timers) or
//! until an event. One iteration: wait; if the cluster has a deadline due, first the
//! heartbeat path: drain the heartbeat socket (heartbeats do not wake the loop, see
//! [`ClusterSocket`]), fire the cluster's timeouts and send its frames (heartbeats, acks), with
//! no state-transfer chunk among them; then handle events (other datagrams in batches, HTTP,
//! RESP, signals), fire the other timeouts, turn cluster events into hooks, send what the
//! cluster queued, state-transfer chunks included (sendmmsg), check readiness.
//!
//! Bulk work never holds the loop for long: receiving (and so applying state-transfer chunks)
//! and serving state-transfer chunks each run in slices of at most [`SLICE`]; whatever is left
//! waits for the next turn, which comes at once (a zero poll timeout) after the heartbeat path
//! had its turn. `tandem_loop_slice_max_seconds` shows the longest slice.
//!
//! Signals: SIGTERM/SIGINT remove this node's VIPs, then send Leave and return (exit 0)
//! within the iteration; SIGHUP re-reads the key file; SIGCHLD reaps hooks.

use std::io;
use std::path::Path;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tandem_core::{Incarnation, Instant};
use tracing::{debug, error, info, warn};

use crate::config::{key_file_mode_warning, load_keys, Config};
use crate::engine::cluster::ReloadError;
use crate::engine::status::{StatusSnapshot, VipStatus};
use crate::engine::store;
use crate::engine::Engine;
use crate::io::clock::{unix_ms, Clock};
use crate::io::incarnation::StateFile;
use crate::io::net::{ClusterSocket, DeadlineTimer, NetError, RecvBatch, SendBatch};
use crate::ops::hooks::{HookEnv, Hooks};
use crate::ops::http::{HttpServer, Source};
use crate::ops::metrics::{self, DaemonMetrics};
use crate::ops::notify::Notifier;
use crate::resp::server::{RespServer, RespServerConfig};
use crate::resp::{self, commands};
use crate::vip::floating::{Floating, VipEvent};
use crate::vip::ifaddr::IfAddrError;

pub const TOKEN_CLUSTER: Token = Token(0);
pub(crate) const TOKEN_SIGNALS: Token = Token(1);
pub(crate) const TOKEN_TIMER: Token = Token(2);
/// The HTTP listener; its connections take the tokens after it.
pub(crate) const TOKEN_HTTP: Token = Token(16);
/// First token of the RESP server's range (listener + clients); everything at or above is RESP.
pub(crate) const TOKEN_RESP_BASE: Token = Token(1 << 16);

/// recvmmsg batches per wake-up before other sources get a turn.
const MAX_RECV_BATCHES_PER_WAKE: usize = 64;
/// sendmmsg batches per iteration (32 frames each).
const MAX_SEND_BATCHES_PER_ITER: usize = 64;
/// Longest a slice of bulk work (receiving datagrams, serving state-transfer chunks) runs
/// before it yields to the heartbeat path: a quarter of the `fast` profile's 2 ms interval, so
/// a transfer delays no heartbeat by more than that (plus one batch, about 100 µs).
pub(crate) const SLICE: Duration = Duration::from_micros(500);
/// State-transfer chunks per sendmmsg: the slice's time is checked between calls, and one
/// call of 32 chunks of 1 KiB took about 2 ms on the test VM (the kernel delivers to a
/// local peer in the sender's time), four times [`SLICE`].
const SYNC_CHUNKS_PER_SEND: usize = 8;

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
    /// The protocol: core node and session store, the loop's one seam to them.
    engine: Engine,
    http: HttpServer,
    hooks: Hooks,
    notifier: Notifier,
    recv: RecvBatch,
    send: SendBatch,
    metrics: DaemonMetrics,
    ready: bool,
    /// The socket may still hold datagrams (a wake-up stopped at its batch or time bound).
    recv_pending: bool,
    /// State-transfer chunks may be due that a slice's time bound held back.
    send_pending: bool,
    /// `--busy-poll`: until when the loop polls without sleeping (set after traffic).
    spin_until: Option<std::time::Instant>,
    /// The RESP session API (`None` on a witness, which holds no sessions).
    resp: Option<RespServer>,
    /// When the store's expiry sweep is next due.
    next_sweep: Option<Instant>,
    /// Floating VIPs (`None` when none is configured).
    floating: Option<Floating>,
    vip_events: Vec<VipEvent>,
}

/// A wake-up at least this late past its deadline means the loop was not running (the
/// machine was descheduled, or a turn took that long): see [`Engine::handle_stall`].
/// Ordinary wake-ups here are 50-200 µs late.
pub(crate) const STALL: Duration = Duration::from_millis(1);

/// Store entries the expiry sweep may free per loop turn (bounds a turn's work).
const SWEEP_BUDGET: usize = 1024;

impl Daemon {
    /// Opens every socket (so bad addresses and missing capabilities fail before any wait),
    /// then takes a fresh incarnation and creates the cluster.
    pub fn new(cfg: Config) -> Result<Daemon, DaemonError> {
        // Before the store grows: see `memory` (a huge-page fault stalls a turn for ms).
        crate::io::memory::keep_freed_memory();
        if let Err(e) = crate::io::memory::disable_transparent_huge_pages() {
            warn!(error = %e, "could not turn transparent huge pages off: long page faults may delay heartbeats");
        }
        let clock = Clock::new();
        // Before any descriptor is opened: the client cap must fit the limit.
        let fit =
            crate::io::descriptors::fit_clients(cfg.max_clients).map_err(DaemonError::Config)?;
        let poll = Poll::new().map_err(runtime("epoll"))?;
        let socket = ClusterSocket::open(&cfg.net_config()).map_err(|e| match e {
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
        let resp = if cfg.witness {
            None
        } else {
            let server = RespServerConfig {
                bind: cfg.resp,
                limits: resp::Limits::for_max_value(cfg.max_value_bytes),
                max_connections: fit.max_clients,
                max_client_memory: cfg.max_client_memory,
                client_timeout_ms: cfg.client_timeout.saturating_mul(1000),
                loopback_only: cfg.protected_mode && cfg.requirepass.is_none(),
                ..RespServerConfig::default()
            };
            let commands = commands::CommandConfig {
                requirepass: cfg.requirepass.clone().map(String::into_bytes),
                tcp_port: cfg.resp.port(),
                client_timeout: cfg.client_timeout,
                ..commands::CommandConfig::default()
            };
            if server.loopback_only && !cfg.resp.ip().is_loopback() {
                warn!(resp = %cfg.resp, "protected mode: no password, so RESP clients from other hosts are refused (--requirepass-file, or --protected-mode no)");
            }
            let mut r = RespServer::bind(server, commands, TOKEN_RESP_BASE, TOKEN_RESP_BASE.0 + 1)
                .map_err(|e| DaemonError::Runtime(format!("--resp {}: {e}", cfg.resp)))?;
            r.register(poll.registry())
                .map_err(runtime("register RESP listener"))?;
            Some(r)
        };
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
        let state = cfg
            .state_dir
            .as_deref()
            .map(|d| StateFile::new(d, cfg.cluster_id, cfg.node_id));
        let incarnation = crate::io::incarnation::fresh(state.as_ref()).map_err(|e| {
            DaemonError::Runtime(format!(
                "incarnation state {}: {e}",
                state
                    .as_ref()
                    .map_or(Path::new("-"), StateFile::path)
                    .display()
            ))
        })?;
        match &state {
            Some(s) => info!(file = %s.path().display(), incarnation = incarnation.0, "incarnation persisted"),
            None => warn!("no --state-dir: the incarnation is not persisted, so a wall clock stepped back across a restart would reuse AEAD nonces"),
        }
        // Own frames looped back by the kernel would cost a wake-up each; a filter that fails
        // to attach only costs that (the core drops them too).
        let salt = crate::engine::cluster::random_salt().map_err(|_| {
            DaemonError::Runtime("the kernel's random source failed: no salt for this run".into())
        })?;
        if let Err(e) = socket.drop_own_frames(cfg.node_id, incarnation, salt) {
            warn!(error = %e, "could not attach the own-frame socket filter");
        }
        let now = clock.now();
        let cluster_cfg = cfg.cluster_config(incarnation, salt);
        let timing = cluster_cfg.timing();
        let mut engine = Engine::new(
            cluster_cfg,
            store::Limits {
                max_sessions: cfg.max_sessions,
                max_bytes: usize::try_from(cfg.max_bytes).unwrap_or(usize::MAX),
                max_value_bytes: cfg.max_value_bytes,
                ..store::Limits::default()
            },
            cfg.replication,
            now,
        );
        // Sized for --max-sessions now: growing later rehashes every key in one insert.
        engine.presize_store();
        // A node taking its own VIP back waits two heartbeat intervals more than the holder
        // (see `vip`): the holder hears of its health at most one interval late.
        let gap = Duration::from_micros(2 * u64::from(timing.interval_us) + 1_000);
        let floating = Floating::open(&cfg.floating_config(), gap).map_err(|e| match e {
            IfAddrError::Config(m) => DaemonError::Config(m),
            IfAddrError::Io(m) => DaemonError::Runtime(m),
        })?;
        info!(
            node = cfg.node_id.0,
            cluster = cfg.cluster_id.0,
            incarnation = incarnation.0,
            transport = %cfg.transport.as_str(),
            group = %cfg.group,
            interface = %cfg.interface,
            profile = %cfg.profile.as_str(),
            interval_us = timing.interval_us,
            multiplier = timing.multiplier,
            http = %cfg.http,
            resp = %cfg.resp,
            replication = %cfg.replication.as_str(),
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
            engine,
            http,
            recv: RecvBatch::new(),
            send: SendBatch::new(),
            metrics: DaemonMetrics::default(),
            ready: false,
            recv_pending: false,
            spin_until: None,
            send_pending: false,
            resp,
            next_sweep: Some(now),
            floating,
            vip_events: Vec::new(),
        })
    }

    pub fn incarnation(&self) -> Incarnation {
        self.engine.status(self.clock.now()).incarnation
    }

    /// Runs until SIGTERM/SIGINT (then `Ok`) or a fatal error.
    pub fn run(&mut self) -> Result<(), DaemonError> {
        let mut events = Events::with_capacity(256);
        loop {
            if self.turn(&mut events)? {
                return self.shutdown();
            }
        }
    }

    /// One iteration of the loop (see the module docs): wait for an event or the next
    /// deadline, then handle what is due. True when a signal asks the daemon to stop (the
    /// caller then sends the Leave with [`Daemon::shutdown`]).
    fn turn(&mut self, events: &mut Events) -> Result<bool, DaemonError> {
        let now = self.clock.now();
        let deadline = self.next_deadline();
        // The timerfd wakes us at the deadline to the microsecond. Only if it could not
        // be armed does epoll's own timeout (whole milliseconds, rounded up by mio) wake
        // us: a second timer per wait costs CPU on every turn.
        let armed = match self.timer.arm(deadline, now) {
            Ok(()) => self.timer.armed(),
            Err(e) => {
                warn!(error = %e, "timerfd");
                None
            }
        };
        let timeout = if self.recv_pending || self.send_pending {
            Some(Duration::ZERO)
        } else {
            deadline.and_then(|d| match d.saturating_duration_since(now) {
                Duration::ZERO => Some(Duration::ZERO),
                _ if armed.is_some_and(|a| a > now && a <= d) => None,
                wait => Some(wait + Duration::from_millis(1)),
            })
        };
        // Right after traffic, a reply or the next request is likely within microseconds:
        // poll without sleeping for a while (--busy-poll) rather than pay the wake-up.
        let spun = match self.spin_until.take() {
            Some(until) if timeout != Some(Duration::ZERO) => self.spin(events, until),
            _ => false,
        };
        if !spun {
            if let Err(e) = self.poll.poll(events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    return Ok(false);
                }
                return Err(DaemonError::Runtime(format!("poll: {e}")));
            }
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
        let stalled = deadline.is_some_and(|d| now.saturating_duration_since(d) >= STALL);
        // The heartbeat path, before any bulk work of this turn.
        let mut read = false;
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            read = self.heartbeat_path(now, stalled);
        } else if stalled {
            self.metrics.loop_stalls += 1;
            self.engine.handle_stall(now);
        }
        // One receive slice per turn, whether the socket woke us or a slice left datagrams
        // (without the split socket, the heartbeat path may have read it already).
        let readable = events.iter().any(|e| e.token() == TOKEN_CLUSTER);
        if (self.recv_pending || readable) && !read {
            self.recv_datagrams(now);
        }
        for ev in events.iter() {
            match ev.token() {
                TOKEN_CLUSTER => {}
                TOKEN_SIGNALS => stop |= self.handle_signals(now),
                // Edge-triggered: nothing to read; the due work runs in `on_timeouts`.
                TOKEN_TIMER => {}
                t if self.http.owns(t) => {
                    let src = View {
                        engine: &self.engine,
                        resp: self.resp.as_ref(),
                        floating: self.floating.as_ref(),
                        metrics: &self.metrics,
                        now,
                    };
                    self.http.handle_event(self.poll.registry(), t, now, &src);
                }
                t if t.0 >= TOKEN_RESP_BASE.0 => {
                    if let Some(resp) = &mut self.resp {
                        let (store, mut sink) = self.engine.client(unix_ms());
                        resp.handle_event(self.poll.registry(), ev, store, &mut sink);
                    }
                }
                t => debug!(token = t.0, "event for unknown token"),
            }
        }
        self.on_timeouts(now);
        self.drain_cluster_events(now);
        self.pump_sessions(now);
        self.update_vips(now, stop);
        if stop {
            return Ok(true);
        }
        self.flush(now, true);
        self.copy_stats();
        if !self.ready && self.engine.joined(now) {
            self.ready = true;
            info!(node = self.cfg.node_id.0, "joined the cluster; ready");
            self.notifier.notify("READY=1");
        }
        let busy = busy_start.elapsed().as_micros() as u64;
        self.metrics.busy_us += busy;
        self.metrics.turn_max_us = self.metrics.turn_max_us.max(busy);
        // Traffic from clients or peers (not timers, signals or HTTP probes) opens the
        // busy-poll window.
        let traffic = events
            .iter()
            .any(|e| e.token() == TOKEN_CLUSTER || e.token() >= TOKEN_RESP_BASE);
        if traffic && self.cfg.busy_poll_us > 0 {
            self.spin_until = Some(
                std::time::Instant::now() + Duration::from_micros(u64::from(self.cfg.busy_poll_us)),
            );
        }
        Ok(false)
    }

    /// Polls without sleeping until an event arrives or `until` passes (a deadline due in
    /// the meantime arrives as the timer's event); returns whether events arrived.
    fn spin(&mut self, events: &mut Events, until: std::time::Instant) -> bool {
        let start = std::time::Instant::now();
        let mut got = false;
        // Bounded: `until` is at most MAX_BUSY_POLL_US after the last traffic.
        while std::time::Instant::now() < until {
            if self.poll.poll(events, Some(Duration::ZERO)).is_ok() && !events.is_empty() {
                got = true;
                break;
            }
            std::hint::spin_loop();
        }
        self.metrics.spin_us += start.elapsed().as_micros() as u64;
        self.metrics.spin_hits += u64::from(got);
        got
    }

    /// Reads the heartbeats, fires the cluster's due timeouts and sends what they queued
    /// (heartbeats, acks: no state-transfer chunk), so that no bulk work of this turn delays
    /// them. `stalled`: this wake-up came [`STALL`] late. Returns whether it read a slice of
    /// the main socket.
    fn heartbeat_path(&mut self, now: Instant, stalled: bool) -> bool {
        // Heartbeats do not wake the loop (split socket): take them before the cluster's
        // deadlines are checked, so the detector has every heartbeat that arrived by then.
        // Only then: a turn woken by a client or a replication frame skips the system call,
        // and the loop wakes at least once per own heartbeat interval (a cluster deadline).
        // Without the split socket heartbeats arrive among the other datagrams: one slice
        // of those is read first instead.
        let split = self.socket.split();
        if split {
            self.drain(now, true);
        } else {
            self.recv_datagrams(now);
        }
        // Heartbeats queued while we were not running were read above; a peer frozen
        // with us (same machine) sends its overdue one moments after resuming.
        if stalled {
            self.metrics.loop_stalls += 1;
            self.engine.handle_stall(now);
        }
        self.engine.handle_timeout(now, unix_ms());
        self.flush(now, false);
        !split
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.engine.poll_timeout(),
            self.http.poll_timeout(),
            self.hooks.poll_timeout(),
            self.next_sweep,
            self.resp_timeout(),
            self.floating.as_ref().and_then(Floating::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The RESP component's next timer (unix ms) on the loop's clock.
    fn resp_timeout(&self) -> Option<Instant> {
        let due = self.resp.as_ref()?.poll_timeout_ms()?;
        let now = self.clock.now();
        Some(now + Duration::from_millis(due.saturating_sub(unix_ms())))
    }

    fn on_timeouts(&mut self, now: Instant) {
        self.engine.handle_timeout(now, unix_ms());
        if self.http.poll_timeout().is_some_and(|t| t <= now) {
            self.http.handle_timeout(self.poll.registry(), now);
        }
        if self.hooks.poll_timeout().is_some_and(|t| t <= now) {
            self.hooks.handle_timeout(now);
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            let now_ms = unix_ms();
            self.next_sweep = self
                .engine
                .sweep(now_ms, SWEEP_BUDGET)
                .map(|due| now + Duration::from_millis(due.saturating_sub(now_ms)));
        }
        // Clients last: paused listeners, idle checks, connections past their read budget.
        if let Some(resp) = &mut self.resp {
            let now_ms = unix_ms();
            if resp.poll_timeout_ms().is_some_and(|t| t <= now_ms) {
                let (store, mut sink) = self.engine.client(now_ms);
                resp.handle_timer(self.poll.registry(), store, &mut sink);
            }
        }
    }

    /// Keeps each VIP on the node the membership view names (see `vip`); `stopping`
    /// (SIGTERM) releases them all before the Leave goes out.
    fn update_vips(&mut self, now: Instant, stopping: bool) {
        let Some(f) = &mut self.floating else {
            return;
        };
        self.vip_events.clear();
        if stopping {
            f.release_all(now, &mut self.vip_events);
        } else {
            let ms = self.engine.membership();
            let healthy = !ms.isolated() && !ms.joining() && self.engine.synced();
            f.update(now, healthy, ms.members(), &mut self.vip_events);
            if f.poll_timeout().is_some_and(|t| t <= now) {
                f.handle_timeout(now);
            }
        }
        if self.vip_events.is_empty() {
            return;
        }
        let s = self.engine.status(now);
        for ev in &self.vip_events {
            self.hooks
                .fire(HookEnv::vip(ev, s.node_id, s.role, s.leader, s.view), now);
        }
    }

    /// Session work after every turn: held replies whose writes every live peer holds go
    /// out (the engine's `handle_timeout` already moved the core's events and local writes).
    fn pump_sessions(&mut self, now: Instant) {
        let now_ms = unix_ms();
        if let Some(resp) = &mut self.resp {
            // Bounded by the completions the store had when the drain began.
            while let Some((id, result)) = self.engine.poll_completion() {
                let (store, mut sink) = self.engine.client(now_ms);
                resp.complete(self.poll.registry(), id, result, store, &mut sink);
            }
        }
        // Writes of this turn's commands, and of pipelined commands a completion ran.
        self.engine.handle_writes(now);
        // A write into an empty sweep schedule may need a sweep (new expiry).
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + Duration::from_millis(100));
        }
    }

    /// One slice of the main socket: still more waiting after the bound means another slice
    /// next turn, after the heartbeat path and the other sources had theirs.
    fn recv_datagrams(&mut self, now: Instant) {
        let slice = std::time::Instant::now();
        self.recv_pending = self.drain(now, false);
        self.end_slice(slice);
    }

    /// Receives batches from the main socket or the heartbeat socket into the cluster, at most
    /// [`MAX_RECV_BATCHES_PER_WAKE`] and, from the main socket (state-transfer chunks are
    /// applied here), for at most [`SLICE`]; returns true if a bound stopped it (more may
    /// wait).
    fn drain(&mut self, now: Instant, heartbeats: bool) -> bool {
        let now_ms = unix_ms();
        let start = std::time::Instant::now();
        for _ in 0..MAX_RECV_BATCHES_PER_WAKE {
            if !heartbeats && start.elapsed() >= SLICE {
                return true;
            }
            let got = if heartbeats {
                self.socket
                    .recv_heartbeats(&mut self.recv, &self.clock, now)
            } else {
                self.socket.recv_batch(&mut self.recv, &self.clock, now)
            };
            let n = match got {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, heartbeats, "cluster socket receive failed");
                    return false;
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
                let sender = self.engine.handle_datagram(d.arrival, now_ms, d.data);
                if let Some(node) = sender {
                    self.socket.learn(node, || d.source());
                }
            }
            if n < crate::io::net::BATCH {
                return false;
            }
        }
        true
    }

    /// Returns true when the daemon must stop.
    fn handle_signals(&mut self, now: Instant) -> bool {
        let mut stop = false;
        // Copied out (no allocation) so the handlers may borrow `self`; four kinds of signal
        // are registered and the pending set holds each at most once.
        let mut pending = [0i32; 8];
        let mut n = 0;
        for (slot, sig) in pending.iter_mut().zip(self.signals.pending()) {
            *slot = sig;
            n += 1;
        }
        for &sig in pending.iter().take(n) {
            match sig {
                SIGTERM | SIGINT => {
                    info!(signal = sig, "leaving the cluster");
                    self.engine.leave(now);
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
        if let Some(w) = key_file_mode_warning(path) {
            warn!("SIGHUP: {w}");
        }
        match load_keys(path) {
            Ok(keys) => match self.engine.reload_keys(&keys) {
                Ok(()) => {
                    self.metrics.key_reloads += 1;
                    info!(
                        active = keys.active().id.0,
                        data = keys.data.first().map(|k| k.id.0),
                        keys = keys.control.len() + keys.data.len(),
                        "SIGHUP: key file reloaded"
                    );
                }
                Err(ReloadError::NotAuthenticated) => error!(
                    "SIGHUP: keys not taken: the cluster started unauthenticated; restart to use keys"
                ),
                Err(ReloadError::Role(e)) => {
                    error!("SIGHUP: key file not reloaded, old keys stay: {e}")
                }
            },
            Err(e) => error!("SIGHUP: key file not reloaded, old keys stay: {e}"),
        }
    }

    fn drain_cluster_events(&mut self, now: Instant) {
        // Bounded by the cluster's event queue capacity.
        while let Some(ev) = self.engine.poll_event() {
            let s = self.engine.status(now);
            crate::ops::logging::cluster_event(&ev);
            self.hooks
                .fire(HookEnv::new(&ev, s.node_id, s.role, s.leader, s.view), now);
        }
    }

    /// Sends everything the cluster has queued, in sendmmsg batches; with `sync`, state
    /// transfer chunks too, for at most [`SLICE`] (then `send_pending` asks for another turn).
    fn flush(&mut self, now: Instant, sync: bool) {
        let slice = std::time::Instant::now();
        if sync {
            self.send_pending = false;
        }
        for _ in 0..MAX_SEND_BATCHES_PER_ITER {
            let now_ms = unix_ms();
            let serve = sync && slice.elapsed() < SLICE;
            self.send_pending |= sync && !serve;
            let mut chunks = 0;
            while let Some(slot) = self.send.slot() {
                let sync_now = serve && chunks < SYNC_CHUNKS_PER_SEND;
                let Some(d) = self.engine.poll_transmit(now, now_ms, slot, sync_now) else {
                    break;
                };
                chunks += usize::from(d.chunk);
                self.send.commit_to(d.len, d.to);
            }
            if self.send.is_empty() {
                break;
            }
            let want = self.socket.datagrams(&self.send) as u64;
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
        if sync {
            self.end_slice(slice);
        }
    }

    /// Records the length of a slice of bulk work that began at `start`.
    fn end_slice(&mut self, start: std::time::Instant) {
        let us = start.elapsed().as_micros() as u64;
        self.metrics.slice_max_us = self.metrics.slice_max_us.max(us);
    }

    fn copy_stats(&mut self) {
        self.metrics.sent_to.clone_from(self.send.sent_to());
        let h = self.hooks.stats();
        self.metrics.hooks_started = h.started;
        self.metrics.hooks_failed = h.failed;
        self.metrics.hooks_dropped = h.dropped;
        let s = self.http.stats();
        self.metrics.http_requests = s.requests;
        self.metrics.http_rejected = s.rejected;
        self.metrics.http_accept_errors = s.accept_errors;
    }

    fn shutdown(&mut self) -> Result<(), DaemonError> {
        self.notifier.notify("STOPPING=1");
        let now = self.clock.now();
        // Sends the Leave frame queued by `leave`.
        self.flush(now, false);
        info!(node = self.cfg.node_id.0, "left the cluster; bye");
        Ok(())
    }
}

/// What the HTTP endpoint reads, borrowed for one event.
struct View<'a> {
    engine: &'a Engine,
    resp: Option<&'a RespServer>,
    floating: Option<&'a Floating>,
    metrics: &'a DaemonMetrics,
    now: Instant,
}

impl Source for View<'_> {
    fn status(&self) -> StatusSnapshot {
        let mut s = self.engine.status(self.now);
        if let Some(f) = self.floating {
            s.vips = f
                .owners()
                .map(|(v, owner, held)| VipStatus {
                    address: v.cidr(),
                    prefer: v.prefer,
                    owner,
                    held,
                })
                .collect();
        }
        s
    }

    fn metrics(&self) -> String {
        let mut out = metrics::render_engine(self.engine, self.metrics, &self.status(), self.resp);
        if let Some(f) = self.floating {
            f.render_metrics(&mut out);
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream, UdpSocket};
    use std::sync::Mutex;

    use clap::Parser;
    use tandem_core::membership::MemberState;
    use tandem_core::NodeId;

    use super::*;
    use crate::config::Cli;
    use crate::io::descriptors::HTTP_CONNS;

    /// One daemon at a time in this process: signals reach every registered handler, and a
    /// test raises SIGTERM.
    static ONE_DAEMON: Mutex<()> = Mutex::new(());

    /// The simulator's key ([`crate::testing::engine`]'s), as a raw 16-byte key file.
    const KEY: [u8; 16] = [7; 16];

    /// Node 1 of cluster 3 on loopback (`fast` profile, unicast to `peer`, [`KEY`]), HTTP
    /// and RESP on ephemeral ports (of two loopback addresses: the two may not be the same).
    fn daemon(peer: &UdpSocket, extra: &[&str]) -> Daemon {
        let port = peer.local_addr().unwrap().port();
        let key_file = std::env::temp_dir().join(format!("tandemd-loop-{port}.key"));
        std::fs::write(&key_file, KEY).unwrap();
        std::fs::set_permissions(
            &key_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let key_file = key_file.to_str().unwrap().to_string();
        let peer = peer.local_addr().unwrap().to_string();
        let mut args = vec![
            "tandemd",
            "--node-id",
            "1",
            "--cluster-id",
            "3",
            "--key-file",
            &key_file,
            "--transport",
            "unicast",
            "--peer",
            &peer,
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--resp",
            "127.0.0.2:0",
            "--profile",
            "fast",
        ];
        args.extend_from_slice(extra);
        let cfg = Config::load(Cli::try_parse_from(args).unwrap()).unwrap();
        std::fs::remove_file(&key_file).unwrap();
        Daemon::new(cfg).unwrap()
    }

    fn peer_socket() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    /// Node 2 of the same cluster (the simulator's node: cluster 3, key [`KEY`]), driven by
    /// the test over `peer_socket`.
    fn peer_engine() -> Engine {
        crate::testing::engine(2, 5, Instant::ZERO)
    }

    /// The peer's clock: microseconds since `start`.
    fn since(start: std::time::Instant) -> Instant {
        Instant::from_micros(start.elapsed().as_micros() as u64)
    }

    /// Hands the peer every datagram the daemon sent it; returns how many.
    fn receive(peer: &mut Engine, sock: &UdpSocket, now: Instant) -> usize {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        // Bounded by what the socket holds (non-blocking).
        while let Ok((len, _)) = sock.recv_from(&mut buf) {
            peer.handle_datagram(now, unix_ms(), &mut buf[..len]);
            n += 1;
        }
        peer.handle_timeout(now, unix_ms());
        n
    }

    /// Sends what the peer has to the daemon at `to`.
    fn transmit(peer: &mut Engine, sock: &UdpSocket, to: SocketAddr, now: Instant) {
        let mut out = [0u8; 2048];
        for _ in 0..1000 {
            let Some(d) = peer.poll_transmit(now, unix_ms(), &mut out, true) else {
                return;
            };
            sock.send_to(&out[..d.len], to).unwrap();
        }
    }

    fn state(e: &Engine, node: u16) -> Option<MemberState> {
        e.membership().member(NodeId(node)).map(|m| m.state)
    }

    /// Turns the loop until `done` (at most `limit`); whether it got there.
    fn turn_until(
        d: &mut Daemon,
        limit: Duration,
        mut done: impl FnMut(&mut Daemon) -> bool,
    ) -> bool {
        let mut events = Events::with_capacity(256);
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            assert!(!d.turn(&mut events).unwrap(), "no signal was sent");
            if done(d) {
                return true;
            }
        }
        false
    }

    /// Reads what `c` (non-blocking) has; true once the server closed it.
    fn read_some(c: &mut TcpStream, into: &mut Vec<u8>) -> bool {
        let mut buf = [0u8; 512];
        loop {
            match c.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => into.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    fn client(addr: SocketAddr) -> TcpStream {
        let c = TcpStream::connect(addr).unwrap();
        c.set_nonblocking(true).unwrap();
        c
    }

    /// A peer's datagrams go through the loop into the engine (the daemon hears node 2),
    /// the engine's datagrams go out to it (node 2 hears the daemon), and a client's write
    /// goes out as a replicated session: the peer's store holds it and the held reply comes
    /// back once the peer acknowledged.
    #[test]
    fn datagrams_in_reach_the_engine_and_its_datagrams_and_writes_go_out() {
        let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
        let sock = peer_socket();
        let mut d = daemon(&sock, &[]);
        let to = d.socket.local_addr().unwrap();
        let mut peer = peer_engine();
        let start = std::time::Instant::now();
        let both_alive = turn_until(&mut d, Duration::from_secs(5), |d| {
            let now = since(start);
            receive(&mut peer, &sock, now);
            transmit(&mut peer, &sock, to, now);
            state(&d.engine, 2) == Some(MemberState::Alive)
                && state(&peer, 1) == Some(MemberState::Alive)
        });
        assert!(
            both_alive,
            "daemon sees {:?}, peer sees {:?}",
            state(&d.engine, 2),
            state(&peer, 1)
        );
        assert!(d.metrics.recv_datagrams > 0 && d.metrics.send_datagrams > 0);

        let resp = d.resp.as_ref().unwrap().local_addr().unwrap();
        let mut c = client(resp);
        c.write_all(b"*3\r\n$3\r\nSET\r\n$4\r\nsess\r\n$5\r\nvalue\r\n")
            .unwrap();
        let mut reply = Vec::new();
        let replied = turn_until(&mut d, Duration::from_secs(5), |_| {
            let now = since(start);
            receive(&mut peer, &sock, now);
            transmit(&mut peer, &sock, to, now);
            read_some(&mut c, &mut reply);
            !reply.is_empty()
        });
        assert!(replied, "no reply to SET");
        assert_eq!(reply, b"+OK\r\n");
        let held = peer.store().record(b"sess", unix_ms()).unwrap();
        assert!(held.value.ends_with(b"value"), "{:?}", held.value);
    }

    /// With nothing arriving, only deadlines wake the loop: it heartbeats at the profile's
    /// interval. Once the peer counts it (challenge answered), SIGTERM ends the turn asking to
    /// stop, and shutdown sends the Leave: the peer marks the daemon left.
    #[test]
    fn deadlines_wake_the_loop_to_heartbeat_and_sigterm_sends_the_leave() {
        let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
        let sock = peer_socket();
        let mut d = daemon(&sock, &[]);
        let mut peer = peer_engine();
        let start = std::time::Instant::now();
        let mut heard = 0;
        turn_until(&mut d, Duration::from_millis(200), |_| {
            heard += receive(&mut peer, &sock, since(start));
            false
        });
        // `fast` heartbeats every 2 ms: about 100 in 200 ms; a quarter of that with margin
        // for a loaded machine.
        assert!(heard >= 25, "{heard} heartbeats in 200 ms");
        assert_eq!(d.metrics.recv_datagrams, 0, "the peer sent nothing");
        assert!(d.metrics.loop_timeouts > 0);
        // The peer counts the daemon's run once it answered the peer's challenge.
        let to = d.socket.local_addr().unwrap();
        let alive = turn_until(&mut d, Duration::from_secs(5), |_| {
            let now = since(start);
            receive(&mut peer, &sock, now);
            transmit(&mut peer, &sock, to, now);
            state(&peer, 1) == Some(MemberState::Alive)
        });
        assert!(alive, "peer sees {:?}", state(&peer, 1));

        signal_hook::low_level::raise(SIGTERM).unwrap();
        let mut events = Events::with_capacity(256);
        let stop = (0..1000).any(|_| d.turn(&mut events).unwrap());
        assert!(stop, "SIGTERM did not stop the loop");
        d.shutdown().unwrap();
        let left = (0..100).any(|_| {
            receive(&mut peer, &sock, since(start));
            std::thread::sleep(Duration::from_millis(10));
            state(&peer, 1) == Some(MemberState::Left)
        });
        assert!(left, "peer sees {:?}", state(&peer, 1));
    }

    /// Both servers' connection tables, through the loop: RESP past `--max-clients` gets
    /// Redis's error and is closed, a closed client frees its place for a new one; HTTP past
    /// its connection cap is closed and counted, and still answers once one closes.
    #[test]
    fn the_servers_refuse_past_their_connection_caps_and_a_close_frees_a_place() {
        let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
        let sock = peer_socket();
        let mut d = daemon(&sock, &["--max-clients", "2"]);
        let resp = d.resp.as_ref().unwrap().local_addr().unwrap();
        let mut clients: Vec<TcpStream> = (0..3).map(|_| client(resp)).collect();
        let mut third = Vec::new();
        let refused = turn_until(&mut d, Duration::from_secs(5), |_| {
            read_some(&mut clients[2], &mut third)
        });
        assert!(refused, "the third client was not closed");
        assert_eq!(third, b"-ERR max number of clients reached\r\n");
        assert_eq!(d.resp.as_ref().unwrap().connections(), 2);
        drop(clients.remove(0));
        assert!(turn_until(&mut d, Duration::from_secs(5), |d| d
            .resp
            .as_ref()
            .unwrap()
            .connections()
            == 1));
        let mut again = client(resp);
        again.write_all(b"PING\r\n").unwrap();
        let mut pong = Vec::new();
        assert!(turn_until(&mut d, Duration::from_secs(5), |_| {
            read_some(&mut again, &mut pong);
            pong.len() >= 7
        }));
        assert_eq!(pong, b"+PONG\r\n");

        let http = d.http.local_addr().unwrap();
        let mut open: Vec<TcpStream> = (0..HTTP_CONNS).map(|_| client(http)).collect();
        let mut over = client(http);
        let mut nothing = Vec::new();
        assert!(turn_until(&mut d, Duration::from_secs(5), |_| read_some(
            &mut over,
            &mut nothing
        )));
        assert!(nothing.is_empty());
        assert_eq!(d.http.stats().rejected, 1);
        drop(open.pop());
        assert!(turn_until(&mut d, Duration::from_secs(5), |d| d
            .http
            .connections()
            == HTTP_CONNS - 1));
        let mut probe = client(http);
        probe.write_all(b"GET /status HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        assert!(turn_until(&mut d, Duration::from_secs(5), |_| read_some(
            &mut probe,
            &mut answer
        )));
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("\"node_id\":1"), "{answer}");
    }
}
