//! The RESP listener and its connections, as a component of the daemon's mio event loop.
//!
//! The loop owns the [`mio::Poll`], the [`Store`] and replication; this component owns the
//! listening socket and the client connections, and talks to the loop through [`WriteSink`]:
//! the clock, whether the node is isolated, and where replication records go. In synchronous
//! mode [`WriteSink::submit`] returns a [`ReplyTicket`]: the client's reply is held until the loop
//! calls [`RespServer::complete`] with that id, so a reply never says "saved" before the peers
//! hold the write. The connection meanwhile goes on executing its pipelined commands (so a
//! pipeline of N writes costs one replication round trip, not N); their replies queue behind
//! the held one and are released strictly in command order. At most
//! [`RespServerConfig::max_held_per_connection`] writes of one connection are in flight, and
//! beyond the first, at most [`RespServerConfig::max_held_bytes_per_connection`] of their records
//! (which wait in the replication outbox while the ring is full): the connection's own
//! completions resume it, so no connection waits on another's.
//!
//! Bounds per connection: input holds at most one request ([`resp::Limits::max_request`]) plus
//! one read (an oversized request is skipped as it arrives and answered with one error, see
//! [`resp`]); output (sent or queued behind held writes) past
//! [`RespServerConfig::output_soft_limit`] stops command execution until the client reads
//! (backpressure: a client that does not read its replies stops being read from, and its TCP
//! window closes), and a connection whose output stays past it for
//! [`RespServerConfig::output_soft_ms`] without the client taking a byte is closed (Redis's
//! `client-output-buffer-limit` soft limit); a single reply is bounded by the command layer's
//! `max_reply_bytes` (a larger one closes the connection). With
//! [`RespServerConfig::client_timeout_ms`], a connection that completes no request and takes no
//! reply byte for that long is closed (Redis's `timeout`; a slowloris sending a byte a second
//! never completes a request).
//!
//! Password guessing: a failed AUTH (or HELLO AUTH) pauses its connection for
//! [`auth_delay_ms`] (100 ms, doubling with each failure on the connection): its WRONGPASS
//! reply and everything after it wait, and nothing more is read from it meanwhile (its
//! pipelined guesses stay in the kernel's buffer). The pause is a deadline on the server's
//! timer, so the loop and every other connection run on; a right password is never delayed.
//! The sixth failure is answered after its pause and closes the connection
//! ([`commands::MAX_AUTH_FAILURES`]), so one connection tries six passwords in 6.3 s.
//!
//! Bounds over all connections: at most [`RespServerConfig::max_connections`]; more get Redis's
//! "max number of clients" error and are closed. The input and output buffers of all of
//! them together are held under [`RespServerConfig::max_client_memory`] (Redis's
//! `maxmemory-clients`): past it, the connections holding the most are closed first. An
//! `accept` that fails (out of descriptors) pauses the listener briefly instead of spinning
//! ([`AcceptPause`]). The periodic checks run from [`RespServer::handle_timer`], at most
//! once a second per connection set, never per event.
//!
//! Panics: never on client input.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use tracing::{debug, warn};

use crate::engine::store::Store;
use crate::engine::writes::{ReplyTicket, WriteFailure, WriteSink};
use crate::io::connections::{ConnTable, Connection, Wake};
use crate::io::net::is_loopback;
use crate::resp::commands::{self, Client, Env, Outcome, ISOLATED_ERROR};
use crate::resp::{self, Parsed, Parser};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Idle buffers larger than this are shrunk back.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Bytes one connection may read per turn of the loop; the rest waits for the next turn
/// (its readiness is remembered, see [`RespServer::poll_timeout_ms`]), so a few clients
/// sending large requests cannot make one turn long for everyone else.
const READ_BUDGET: usize = 2 * READ_CHUNK;
/// Period of the idle and output checks while connections are open.
const CHECK_MS: u64 = 1000;
/// Pause after a connection's first failed AUTH; each further failure doubles it.
const AUTH_DELAY_MS: u64 = 100;
/// Longest pause after a failed AUTH.
const MAX_AUTH_DELAY_MS: u64 = 5000;

/// How long a connection waits after its `failures`-th failed AUTH (1-based): 100 ms, 200,
/// 400, ... up to 5 s.
pub(crate) fn auth_delay_ms(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(16);
    (AUTH_DELAY_MS << doublings).min(MAX_AUTH_DELAY_MS)
}

/// Listener settings.
#[derive(Clone, Debug)]
pub struct RespServerConfig {
    /// `--resp`; loopback by default.
    pub bind: SocketAddr,
    pub max_connections: usize,
    pub limits: resp::Limits,
    /// Pending output above which a connection's commands wait for the client to read.
    pub output_soft_limit: usize,
    /// Writes of one connection whose replies may wait for replication at once; more
    /// pipelined commands wait until the oldest completes.
    pub max_held_per_connection: usize,
    /// Key and value bytes of one connection's writes in flight past which its further
    /// commands wait (one write is always allowed).
    pub max_held_bytes_per_connection: usize,
    /// A connection whose output stays past `output_soft_limit` this long without the client
    /// taking a byte is closed.
    pub output_soft_ms: u64,
    /// `--client-timeout` in milliseconds; 0 = never.
    pub client_timeout_ms: u64,
    /// `--max-client-memory`: input and output buffer bytes of all connections together.
    pub max_client_memory: usize,
    /// Redis's protected mode: clients that are not on loopback get [`DENIED`] and are closed
    /// (set when `--protected-mode` is on and there is no password).
    pub loopback_only: bool,
}

/// Redis's reply to a client refused by protected mode, word for word (so that a user's search
/// for it finds the explanation), with tandem's flags.
pub const DENIED: &[u8] = b"-DENIED Redis is running in protected mode because protected mode \
is enabled and no password is set for the default user. In this mode connections are only \
accepted from the loopback interface. If you want to connect from external computers to Redis \
you may adopt one of the following solutions: 1) Set up an authentication password for the \
default user (tandemd --requirepass-file PATH). 2) Restart tandemd with '--protected-mode no', \
but MAKE SURE the RESP port is not reachable from untrusted networks if you do so. NOTE: You \
only need to do one of the above things in order for the server to start accepting connections \
from the outside.\r\n";

impl Default for RespServerConfig {
    fn default() -> RespServerConfig {
        RespServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 6379)),
            max_connections: 1024,
            limits: resp::Limits::default(),
            output_soft_limit: 1 << 20,
            max_held_per_connection: 256,
            max_held_bytes_per_connection: 256 * 1024,
            output_soft_ms: 5000,
            client_timeout_ms: 0,
            max_client_memory: 64 << 20,
            loopback_only: false,
        }
    }
}

/// Why the server closed a connection (or refused one): counted in `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Over [`RespServerConfig::max_connections`]: refused with Redis's error.
    MaxClients,
    /// Among the largest when all buffers passed [`RespServerConfig::max_client_memory`].
    ClientMemory,
    /// Output past the soft limit for [`RespServerConfig::output_soft_ms`].
    OutputBuffer,
    /// Idle past [`RespServerConfig::client_timeout_ms`].
    Timeout,
    /// Not on loopback while [`RespServerConfig::loopback_only`]: refused with [`DENIED`].
    ProtectedMode,
}

impl CloseReason {
    pub(crate) const ALL: [CloseReason; 5] = [
        CloseReason::MaxClients,
        CloseReason::ClientMemory,
        CloseReason::OutputBuffer,
        CloseReason::Timeout,
        CloseReason::ProtectedMode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::MaxClients => "max_clients",
            CloseReason::ClientMemory => "client_memory",
            CloseReason::OutputBuffer => "output_buffer",
            CloseReason::Timeout => "timeout",
            CloseReason::ProtectedMode => "protected_mode",
        }
    }
}

/// What the server counts (`/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RespStats {
    /// Connections closed or refused, by [`CloseReason`] (in `CloseReason::ALL` order).
    pub closed: [u64; CloseReason::ALL.len()],
    /// Failed `accept` calls (out of descriptors or memory).
    pub accept_errors: u64,
    /// Requests skipped and refused as over `--max-value-bytes`.
    pub oversized: u64,
}

impl RespStats {
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed.get(reason as usize).copied().unwrap_or(0)
    }

    fn count(&mut self, reason: CloseReason) {
        if let Some(c) = self.closed.get_mut(reason as usize) {
            *c += 1;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    No,
    /// Send what is in the output buffer, then close (QUIT, protocol error, client EOF).
    AfterFlush,
    Now,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    parser: Parser,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of `output` already written.
    written: usize,
    client: Client,
    /// Replies waiting for held writes, oldest first; each entry is a held reply and the
    /// ready replies of the commands after it.
    queue: VecDeque<Queued>,
    /// Bytes in `queue`.
    queued_bytes: usize,
    /// Record bytes (keys and values) of the writes in `queue`.
    held_bytes: usize,
    closing: Closing,
    read_closed: bool,
    /// The socket may hold unread bytes: set by a readiness event and by a read that filled
    /// the buffer; cleared by a short read. Readiness is edge-triggered and a TCP read
    /// returns everything queued (up to the buffer), so a short read drained the socket and
    /// later bytes bring a new event: this saves a read that would only say WouldBlock, on
    /// every request and every completion.
    unread: bool,
    /// A readiness event reported the peer's close: read until end of file.
    hangup: bool,
    /// True if the last registration asked for WRITABLE too.
    wants_write: bool,
    /// Marked by a completion whose drive is deferred to the end of the batch.
    dirty: bool,
    /// Buffer bytes charged to the server's client memory (see [`Conn::memory`]).
    charged: usize,
    /// When the connection last completed a request or the client took reply bytes (unix
    /// ms): the client timeout counts from here.
    active_ms: u64,
    /// Since when the output has been past the soft limit without the client taking a byte.
    output_full_since: Option<u64>,
    /// Listed in [`RespServer::runnable`]: stopped at its read budget with more to read.
    runnable: bool,
    /// After a failed AUTH: until then (unix ms) nothing is read, executed or sent.
    paused_until: Option<u64>,
}

/// A held reply and what follows it in command order.
#[derive(Debug)]
struct Queued {
    id: ReplyTicket,
    /// Key and value bytes of its records.
    cost: usize,
    /// Set once the write completed.
    result: Option<Result<(), WriteFailure>>,
    reply: Vec<u8>,
    /// Replies of later commands that did not wait themselves.
    after: Vec<u8>,
}

impl Connection for Conn {
    fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// Whether to take a client from `peer`: not off loopback in protected mode, not past
/// [`RespServerConfig::max_connections`] (`full`). A refusal gets Redis's error line first.
fn admit(
    config: &RespServerConfig,
    stats: &mut RespStats,
    stream: &mut TcpStream,
    peer: SocketAddr,
    full: bool,
) -> bool {
    if config.loopback_only && !is_loopback(peer.ip()) {
        // Best effort, as Redis: the socket buffer is empty, so this fits.
        let _ = stream.write(DENIED);
        stats.count(CloseReason::ProtectedMode);
        return false;
    }
    if full {
        // Best effort, as Redis: the socket buffer is empty, so this fits.
        let _ = stream.write(b"-ERR max number of clients reached\r\n");
        stats.count(CloseReason::MaxClients);
        return false;
    }
    let _ = stream.set_nodelay(true);
    true
}

impl Conn {
    /// A new client connection at `now` (unix ms), numbered from `next_id`.
    fn new(stream: TcpStream, config: &RespServerConfig, next_id: &mut u64, now: u64) -> Conn {
        let id = *next_id;
        *next_id += 1;
        Conn {
            stream,
            parser: Parser::new(config.limits),
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            client: Client::new(id),
            queue: VecDeque::new(),
            queued_bytes: 0,
            held_bytes: 0,
            closing: Closing::No,
            read_closed: false,
            unread: true,
            hangup: false,
            wants_write: false,
            dirty: false,
            charged: 0,
            active_ms: now,
            output_full_since: None,
            runnable: false,
            paused_until: None,
        }
    }

    /// Bytes this connection's buffers hold (allocated, not just used: that is what the
    /// process's memory pays).
    fn memory(&self) -> usize {
        self.input.capacity() + self.output.capacity() + self.queued_bytes
    }

    fn pending_output(&self) -> usize {
        self.output.len() - self.written
    }

    /// Output not yet sent, counting replies queued behind held writes.
    fn buffered_output(&self) -> usize {
        self.pending_output() + self.queued_bytes
    }

    /// Moves the replies at the queue's front whose writes completed into `output`.
    fn release(&mut self) {
        while self.queue.front().is_some_and(|q| q.result.is_some()) {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= q.reply.len() + q.after.len();
            self.held_bytes -= q.cost;
            match q.result {
                Some(Err(WriteFailure::Isolated)) => resp::error(&mut self.output, ISOLATED_ERROR),
                _ => self.output.extend_from_slice(&q.reply),
            }
            self.output.extend_from_slice(&q.after);
        }
    }

    /// Queues the reply bytes `output[start..]` behind the held writes, if there are any.
    fn queue_tail(&mut self, start: usize) {
        if let Some(back) = self.queue.back_mut() {
            let tail = self.output.get(start..).unwrap_or(&[]);
            back.after.extend_from_slice(tail);
            self.queued_bytes += tail.len();
            self.output.truncate(start);
        }
    }
}

/// The RESP listener and its connections.
#[derive(Debug)]
pub(crate) struct RespServer {
    config: RespServerConfig,
    commands: commands::CommandConfig,
    conns: ConnTable<Conn>,
    held: HashMap<ReplyTicket, usize>,
    /// Connections completed during a batch, driven at its end.
    deferred: Vec<usize>,
    next_client_id: u64,
    scratch: Vec<u8>,
    /// Sum of the connections' [`Conn::charged`].
    client_memory: usize,
    /// When the idle and output checks next run (unix ms).
    next_check: Option<u64>,
    /// Connections that stopped at [`READ_BUDGET`] with more to read: driven again at the
    /// next turn (edge-triggered readiness would not report them again).
    runnable: Vec<usize>,
    /// Connections paused after a failed AUTH, by the end of their pause (unix ms, slot):
    /// driven again then. An entry of a closed connection drives its slot once for nothing.
    paused: BinaryHeap<Reverse<(u64, usize)>>,
    stats: RespStats,
}

impl RespServer {
    /// Binds the listener. Connection tokens are `conn_base .. conn_base + max_connections`;
    /// the listener's is `listener_token` (outside that range).
    pub fn bind(
        config: RespServerConfig,
        commands: commands::CommandConfig,
        listener_token: Token,
        conn_base: usize,
    ) -> io::Result<RespServer> {
        let conns = ConnTable::bind(
            "resp",
            config.bind,
            listener_token,
            conn_base,
            config.max_connections,
        )?;
        Ok(RespServer {
            conns,
            held: HashMap::new(),
            deferred: Vec::new(),
            next_client_id: 1,
            scratch: vec![0; READ_CHUNK],
            client_memory: 0,
            next_check: None,
            runnable: Vec::new(),
            paused: BinaryHeap::new(),
            stats: RespStats::default(),
            config,
            commands,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.conns.local_addr()
    }

    /// Registers the listener (connections register themselves as they are accepted).
    pub(crate) fn register(&mut self, registry: &Registry) -> io::Result<()> {
        self.conns.register(registry)
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Bytes held in connection buffers (input, unsent output, held replies).
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.conns
            .iter()
            .map(|(_, c)| c.input.len() + c.buffered_output())
            .sum()
    }

    /// Bytes allocated to connection buffers, as charged against
    /// [`RespServerConfig::max_client_memory`].
    pub fn client_memory(&self) -> usize {
        self.client_memory
    }

    /// The connection cap in force.
    pub fn max_connections(&self) -> usize {
        self.conns.max()
    }

    pub fn stats(&self) -> RespStats {
        RespStats {
            accept_errors: self.conns.accept_errors(),
            ..self.stats
        }
    }

    /// When [`handle_timer`](Self::handle_timer) is next due (unix ms): a paused listener's
    /// retry, the end of a connection's pause after a failed AUTH, the periodic idle and
    /// output checks.
    pub(crate) fn poll_timeout_ms(&self) -> Option<u64> {
        let runnable = (!self.runnable.is_empty()).then_some(0);
        let paused = self.paused.peek().map(|Reverse((t, _))| *t);
        [self.conns.retry_at(), self.next_check, runnable, paused]
            .into_iter()
            .flatten()
            .min()
    }

    /// Retries a paused listener and runs the periodic checks, when due: closes connections
    /// idle past the client timeout and ones whose output stayed full too long.
    pub(crate) fn handle_timer(
        &mut self,
        registry: &Registry,
        store: &mut Store,
        sink: &mut dyn WriteSink,
    ) {
        let now = sink.now_ms();
        self.drive_deferred(registry, store, sink);
        // Bounded: each listed once; driving lists a connection again into a new list.
        for slot in std::mem::take(&mut self.runnable) {
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.runnable = false;
                self.drive(registry, slot, store, sink);
            }
        }
        // Bounded: each entry is popped once; a connection paused again pushes a later one.
        while let Some(&Reverse((t, slot))) = self.paused.peek() {
            if t > now {
                break;
            }
            self.paused.pop();
            self.drive(registry, slot, store, sink);
        }
        self.accept(registry, now, Wake::Retry);
        if self.next_check.is_some_and(|t| t <= now) {
            self.check_connections(registry, now);
        }
    }

    fn check_connections(&mut self, registry: &Registry, now: u64) {
        let timeout = self.config.client_timeout_ms;
        let soft_ms = self.config.output_soft_ms;
        let expired = self.conns.expired(|conn| {
            // A connection waiting for its writes to replicate is not idle.
            let idle = timeout > 0
                && conn.queue.is_empty()
                && now.saturating_sub(conn.active_ms) >= timeout;
            let stuck = conn
                .output_full_since
                .is_some_and(|t| now.saturating_sub(t) >= soft_ms);
            if idle {
                Some(CloseReason::Timeout)
            } else if stuck {
                Some(CloseReason::OutputBuffer)
            } else {
                None
            }
        });
        for (slot, reason) in expired {
            debug!(slot, reason = reason.as_str(), "closing client");
            self.stats.count(reason);
            self.close(registry, slot);
        }
        self.next_check = (self.connections() > 0).then_some(now.saturating_add(CHECK_MS));
    }

    /// Handles a readiness event for a token this component [`owns`](Self::owns).
    pub fn handle_event(
        &mut self,
        registry: &Registry,
        event: &Event,
        store: &mut Store,
        sink: &mut dyn WriteSink,
    ) {
        let hangup = event.is_read_closed() || event.is_error();
        self.handle_ready(registry, event.token(), hangup, store, sink);
    }

    /// Handles readiness of `token` (whatever kind: the connection retries everything).
    /// `hangup`: the event said the peer closed (or an error): the connection then reads
    /// until end of file rather than stopping at a short read.
    pub(crate) fn handle_ready(
        &mut self,
        registry: &Registry,
        token: Token,
        hangup: bool,
        store: &mut Store,
        sink: &mut dyn WriteSink,
    ) {
        // Completions deferred by a batch the loop did not finish (defensive: it always does).
        self.drive_deferred(registry, store, sink);
        if self.conns.is_listener(token) {
            let now = sink.now_ms();
            self.accept(registry, now, Wake::Ready);
            return;
        }
        if let Some(slot) = self.conns.slot(token) {
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.unread = true;
                conn.hangup |= hangup;
            }
            self.drive(registry, slot, store, sink);
        }
    }

    /// Completes a held write: its reply (or an error), and the replies queued behind it, are
    /// sent once every earlier held write of the connection completed too, and the
    /// connection goes on with its pipelined commands. Unknown ids (connection gone) are
    /// ignored. Within a batch ([`WriteSink::completions_left`]) the connections are driven
    /// once, at the batch's last call.
    pub fn complete(
        &mut self,
        registry: &Registry,
        id: ReplyTicket,
        result: Result<(), WriteFailure>,
        store: &mut Store,
        sink: &mut dyn WriteSink,
    ) {
        if let Some(slot) = self.held.remove(&id) {
            if let Some(conn) = self.conns.get_mut(slot) {
                if let Some(q) = conn.queue.iter_mut().find(|q| q.id == id) {
                    q.result = Some(result);
                    conn.release();
                    if !conn.dirty {
                        conn.dirty = true;
                        self.deferred.push(slot);
                    }
                }
            }
        }
        if sink.completions_left() == 0 {
            self.drive_deferred(registry, store, sink);
        }
    }

    fn drive_deferred(&mut self, registry: &Registry, store: &mut Store, sink: &mut dyn WriteSink) {
        // Bounded: each slot is listed once (the dirty flag) and driving never defers.
        while let Some(slot) = self.deferred.pop() {
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.dirty = false;
                self.drive(registry, slot, store, sink);
            }
        }
    }

    /// Accepts clients (see [`ConnTable::handle_listener`]); the periodic checks start once
    /// there are connections to check.
    fn accept(&mut self, registry: &Registry, now: u64, wake: Wake) {
        self.conns.handle_listener(
            registry,
            now,
            wake,
            |stream, peer, full| admit(&self.config, &mut self.stats, stream, peer, full),
            |stream| Conn::new(stream, &self.config, &mut self.next_client_id, now),
        );
        if self.next_check.is_none() && !self.conns.is_empty() {
            self.next_check = Some(now.saturating_add(CHECK_MS));
        }
    }

    /// Reads, executes and writes for one connection until it can make no more progress.
    /// [`drive_conn`](Self::drive_conn), then charges what its buffers hold to the client
    /// memory and, past the budget, closes the connections holding the most.
    fn drive(
        &mut self,
        registry: &Registry,
        slot: usize,
        store: &mut Store,
        sink: &mut dyn WriteSink,
    ) {
        self.drive_conn(registry, slot, store, sink);
        if let Some(conn) = self.conns.get_mut(slot) {
            let now = conn.memory();
            self.client_memory = self.client_memory - conn.charged + now;
            conn.charged = now;
        }
        if self.client_memory > self.config.max_client_memory {
            self.evict(registry);
        }
    }

    /// Closes the connections holding the most buffer memory until all of them together are
    /// back under the budget. Runs only past the budget; one scan per connection closed.
    fn evict(&mut self, registry: &Registry) {
        while self.client_memory > self.config.max_client_memory {
            let largest = self.conns.iter().map(|(slot, c)| (c.charged, slot)).max();
            let Some((charged, slot)) = largest else {
                return;
            };
            if charged == 0 {
                return;
            }
            self.stats.count(CloseReason::ClientMemory);
            if self.stats.closed(CloseReason::ClientMemory) % 1000 == 1 {
                warn!(
                    client_memory = self.client_memory,
                    max_client_memory = self.config.max_client_memory,
                    closed = self.stats.closed(CloseReason::ClientMemory),
                    "client buffers over --max-client-memory: closing the largest"
                );
            }
            self.close(registry, slot);
        }
    }

    /// Reads, executes and writes for one connection until it can make no more progress.
    fn drive_conn(
        &mut self,
        registry: &Registry,
        slot: usize,
        store: &mut Store,
        sink: &mut dyn WriteSink,
    ) {
        let connected = self.connections();
        let now = sink.now_ms();
        let token = self.conns.token(slot);
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let input_cap = self
            .config
            .limits
            .max_request
            .max(self.config.limits.max_inline + 2)
            .saturating_add(READ_CHUNK);
        if let Some(until) = conn.paused_until {
            if now < until {
                return;
            }
            conn.paused_until = None;
            // The failed AUTH's reply goes out before anything after it runs.
            if flush(conn).is_err() {
                conn.closing = Closing::Now;
            }
        }
        let mut budget = READ_BUDGET;
        loop {
            let executed = execute_buffered(
                conn,
                &self.commands,
                store,
                sink,
                connected,
                &self.config,
                &mut self.held,
                slot,
                &mut self.stats.oversized,
            );
            if let Some(until) = conn.paused_until {
                // A failed AUTH: its reply and the rest wait for the timer.
                self.paused.push(Reverse((until, slot)));
                return;
            }
            let wrote = match flush(conn) {
                Ok(wrote) => wrote,
                Err(_) => {
                    conn.closing = Closing::Now;
                    false
                }
            };
            if wrote {
                conn.active_ms = now;
                conn.output_full_since = None;
            }
            if conn.closing == Closing::Now
                || (conn.closing == Closing::AfterFlush
                    && conn.pending_output() == 0
                    && conn.queue.is_empty())
            {
                break;
            }
            let may_read = conn.unread
                && !conn.read_closed
                && conn.closing == Closing::No
                && conn.queue.len() < self.config.max_held_per_connection
                && conn.buffered_output() <= self.config.output_soft_limit
                && conn.input.len() < input_cap
                && budget > 0;
            let mut read = false;
            if may_read {
                let room = (input_cap - conn.input.len()).min(self.scratch.len());
                let buf = self.scratch.get_mut(..room).unwrap_or(&mut []);
                match conn.stream.read(buf) {
                    Ok(0) => {
                        conn.read_closed = true;
                        read = true;
                    }
                    Ok(n) => {
                        // Past KEEP_CAPACITY, straight to the cap: one allocation per
                        // large request, of one size, which the allocator reuses as is (a
                        // doubling series leaves freed blocks of every size between live
                        // ones, which the process keeps: tens of MB under a flood of
                        // parked requests). The budget charges the capacity.
                        let need = conn.input.len() + n;
                        if need > conn.input.capacity() {
                            let want = if need > KEEP_CAPACITY {
                                input_cap.max(need)
                            } else {
                                KEEP_CAPACITY
                            };
                            conn.input.reserve_exact(want - conn.input.len());
                        }
                        conn.input.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                        conn.unread = n == room || conn.hangup;
                        budget = budget.saturating_sub(n);
                        read = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => conn.unread = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => read = true,
                    Err(_) => {
                        conn.closing = Closing::Now;
                        break;
                    }
                }
            }
            // Stop when a whole round moved nothing: every source is drained or blocked, and
            // the next readiness event (or a completion) resumes.
            if !(executed || wrote || read) {
                break;
            }
        }
        // A client that closed its side is done once its complete commands are answered.
        if conn.read_closed && conn.closing == Closing::No {
            conn.closing = Closing::AfterFlush;
        }
        let done = conn.closing == Closing::Now
            || (conn.closing == Closing::AfterFlush
                && conn.pending_output() == 0
                && conn.queue.is_empty());
        if done {
            self.close(registry, slot);
            return;
        }
        if budget == 0 && conn.unread && !conn.read_closed && !conn.runnable {
            conn.runnable = true;
            self.runnable.push(slot);
        }
        if conn.buffered_output() <= self.config.output_soft_limit {
            conn.output_full_since = None;
        } else if conn.output_full_since.is_none() {
            conn.output_full_since = Some(now);
        }
        if conn.pending_output() == 0 {
            if conn.output.capacity() > KEEP_CAPACITY {
                conn.output = Vec::new();
                conn.written = 0;
            }
            if conn.input.is_empty() && conn.input.capacity() > KEEP_CAPACITY {
                conn.input = Vec::new();
            }
        }
        let wants_write = conn.pending_output() > 0;
        if wants_write != conn.wants_write {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry
                .reregister(&mut conn.stream, token, interest)
                .is_err()
            {
                self.close(registry, slot);
                return;
            }
            conn.wants_write = wants_write;
        }
    }

    fn close(&mut self, registry: &Registry, slot: usize) {
        if let Some(conn) = self.conns.close(registry, slot) {
            for q in &conn.queue {
                self.held.remove(&q.id);
            }
            self.client_memory -= conn.charged;
        }
    }
}

/// Executes the complete commands buffered on `conn`, until one must wait (too many held
/// writes, output backpressure) or the connection is closing. Replies go to the output, or
/// behind the held writes when there are any.
#[allow(clippy::too_many_arguments)]
fn execute_buffered(
    conn: &mut Conn,
    config: &commands::CommandConfig,
    store: &mut Store,
    sink: &mut dyn WriteSink,
    connected: usize,
    server: &RespServerConfig,
    held: &mut HashMap<ReplyTicket, usize>,
    slot: usize,
    oversized: &mut u64,
) -> bool {
    let mut consumed = 0;
    let mut completed = false;
    while conn.queue.len() < server.max_held_per_connection
        && (conn.queue.is_empty() || conn.held_bytes < server.max_held_bytes_per_connection)
        && conn.closing == Closing::No
        && conn.buffered_output() <= server.output_soft_limit
        && conn.paused_until.is_none()
    {
        let rest = conn.input.get(consumed..).unwrap_or(&[]);
        let auth_required = conn.client.auth_required(config);
        match conn.parser.parse(rest, auth_required) {
            Ok(Parsed::Incomplete) => break,
            Ok(Parsed::Nothing { consumed: n }) => {
                consumed += n;
                completed = true;
            }
            Ok(Parsed::Discard { consumed: n }) => consumed += n,
            Ok(Parsed::Oversized { consumed: n }) => {
                consumed += n;
                completed = true;
                let start = conn.output.len();
                resp::value_too_large(&mut conn.output, server.limits.max_bulk);
                conn.queue_tail(start);
                *oversized += 1;
            }
            Ok(Parsed::Command { consumed: n }) => {
                completed = true;
                let args = conn.parser.args(rest);
                let info_extra = if args.arg(0).eq_ignore_ascii_case(b"info") {
                    sink.info_extra()
                } else {
                    String::new()
                };
                let env = Env {
                    config,
                    now_ms: sink.now_ms(),
                    isolated: sink.isolated(),
                    connected_clients: connected,
                    info_extra: &info_extra,
                };
                let start = conn.output.len();
                let failures = conn.client.auth_failures;
                let outcome =
                    commands::execute(&args, &mut conn.client, store, &env, &mut conn.output);
                consumed += n;
                if conn.client.auth_failures > failures {
                    let delay = auth_delay_ms(conn.client.auth_failures);
                    conn.paused_until = Some(env.now_ms.saturating_add(delay));
                }
                match outcome {
                    Outcome::Reply => conn.queue_tail(start),
                    Outcome::Write(records) => {
                        let cost: usize = records.iter().map(|r| r.key.len() + r.value.len()).sum();
                        match sink.submit(records) {
                            Some(id) => {
                                let reply = conn.output.split_off(start);
                                conn.queued_bytes += reply.len();
                                conn.held_bytes += cost;
                                conn.queue.push_back(Queued {
                                    id,
                                    cost,
                                    result: None,
                                    reply,
                                    after: Vec::new(),
                                });
                                held.insert(id, slot);
                            }
                            None => conn.queue_tail(start),
                        }
                    }
                    Outcome::Quit => {
                        conn.queue_tail(start);
                        conn.closing = Closing::AfterFlush;
                    }
                    Outcome::Close => {
                        conn.output.truncate(start);
                        conn.closing = Closing::Now;
                    }
                }
            }
            Err(e) => {
                let start = conn.output.len();
                e.encode_reply(&mut conn.output);
                conn.queue_tail(start);
                conn.closing = Closing::AfterFlush;
            }
        }
    }
    if consumed > 0 {
        conn.input.drain(..consumed.min(conn.input.len()));
    }
    if completed {
        conn.active_ms = sink.now_ms();
    }
    consumed > 0
}

/// Writes pending output until done or the socket is full; true if anything was written.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    let before = conn.written;
    while conn.written < conn.output.len() {
        let pending = conn.output.get(conn.written..).unwrap_or(&[]);
        match conn.stream.write(pending) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(conn.written > before),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let wrote = conn.written > before;
    conn.output.clear();
    conn.written = 0;
    Ok(wrote)
}

/// Runs the RESP component alone on its own [`mio::Poll`] (examples, tests, benchmarks against
/// redis-server): no peers, so every write is "replicated" at once. With `hold_writes`, each
/// write's reply is held for one loop turn and then completed, which exercises the
/// synchronous-mode path (held replies, paused pipelines) without a cluster.
pub mod standalone {
    use std::io;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use mio::{Events, Poll, Token};
    use tandem_core::NodeId;

    use super::{ReplyTicket, RespServer, RespServerConfig, WriteSink};
    use crate::engine::store::{self, Replicate, Store};
    use crate::io::clock::unix_ms;
    use crate::resp::commands;

    struct Sink {
        hold: bool,
        next: u64,
        due: Vec<ReplyTicket>,
        replicated: u64,
        /// Completions of the current batch not yet delivered.
        left: usize,
    }

    impl WriteSink for Sink {
        fn now_ms(&self) -> u64 {
            unix_ms()
        }
        fn isolated(&self) -> bool {
            false
        }
        fn completions_left(&mut self) -> usize {
            self.left = self.left.saturating_sub(1);
            self.left
        }
        fn submit(&mut self, records: Vec<Replicate>) -> Option<ReplyTicket> {
            self.replicated += records.len() as u64;
            if !self.hold {
                return None;
            }
            self.next += 1;
            self.due.push(ReplyTicket(self.next));
            Some(ReplyTicket(self.next))
        }
        fn info_extra(&self) -> String {
            format!("standalone:1\nreplicated_records:{}\n", self.replicated)
        }
    }

    /// Binds and serves until `stop` is set. Returns once bound, with the address; the
    /// server runs on a new thread.
    pub fn spawn(
        server: RespServerConfig,
        commands: commands::CommandConfig,
        store_limits: store::Limits,
        hold_writes: bool,
        stop: Arc<AtomicBool>,
    ) -> io::Result<(SocketAddr, std::thread::JoinHandle<io::Result<()>>)> {
        let mut resp = RespServer::bind(server, commands, Token(0), 1)?;
        let addr = resp.local_addr()?;
        let handle = std::thread::spawn(move || {
            let mut poll = Poll::new()?;
            resp.register(poll.registry())?;
            let mut events = Events::with_capacity(256);
            let mut store = Store::new(NodeId(1), store_limits);
            let mut sink = Sink {
                hold: hold_writes,
                next: 0,
                due: Vec::new(),
                replicated: 0,
                left: 0,
            };
            let mut next_sweep = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let now = unix_ms();
                if now >= next_sweep {
                    next_sweep = store.sweep(now, 1000).unwrap_or(u64::MAX);
                }
                if resp.poll_timeout_ms().is_some_and(|t| t <= now) {
                    resp.handle_timer(poll.registry(), &mut store, &mut sink);
                }
                let next = resp.poll_timeout_ms().unwrap_or(u64::MAX).min(next_sweep);
                let wait = next.saturating_sub(now).min(50);
                let timeout = if sink.due.is_empty() { wait } else { 0 };
                match poll.poll(&mut events, Some(Duration::from_millis(timeout))) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
                for event in events.iter() {
                    resp.handle_event(poll.registry(), event, &mut store, &mut sink);
                }
                // Complete the writes held during the previous turn.
                let due = std::mem::take(&mut sink.due);
                sink.left = due.len();
                for id in due {
                    resp.complete(poll.registry(), id, Ok(()), &mut store, &mut sink);
                }
            }
            Ok(())
        });
        Ok((addr, handle))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Duration;

    use mio::{Events, Poll};
    use tandem_core::NodeId;

    use super::*;
    use crate::engine::store::{Limits as StoreLimits, Replicate};

    #[derive(Default)]
    struct TestSink {
        hold: bool,
        isolated: bool,
        next: u64,
        submitted: Vec<(ReplyTicket, Vec<Replicate>)>,
        /// Completions left in the current batch.
        left: usize,
        /// Milliseconds the test clock moved.
        elapsed_ms: u64,
    }

    impl WriteSink for TestSink {
        fn now_ms(&self) -> u64 {
            1_000_000 + self.elapsed_ms
        }
        fn isolated(&self) -> bool {
            self.isolated
        }
        fn completions_left(&mut self) -> usize {
            self.left = self.left.saturating_sub(1);
            self.left
        }
        fn submit(&mut self, records: Vec<Replicate>) -> Option<ReplyTicket> {
            self.next += 1;
            let id = ReplyTicket(self.next);
            self.submitted.push((id, records));
            self.hold.then_some(id)
        }
    }

    struct Rig {
        poll: Poll,
        events: Events,
        server: RespServer,
        store: Store,
        sink: TestSink,
    }

    impl Rig {
        fn new(config: RespServerConfig) -> Rig {
            Rig::with_commands(config, commands::CommandConfig::default())
        }

        fn with_commands(config: RespServerConfig, commands: commands::CommandConfig) -> Rig {
            let config = RespServerConfig {
                bind: ([127, 0, 0, 1], 0).into(),
                ..config
            };
            let poll = Poll::new().expect("poll");
            let mut server =
                RespServer::bind(config, commands, Token(0), 10).expect("bind loopback");
            server.register(poll.registry()).expect("register");
            Rig {
                poll,
                events: Events::with_capacity(64),
                server,
                store: Store::new(NodeId(1), StoreLimits::default()),
                sink: TestSink::default(),
            }
        }

        fn connect(&mut self) -> StdStream {
            let addr = self.server.local_addr().expect("addr");
            let s = StdStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            self.pump();
            s
        }

        /// Runs the loop until no event arrives for a few milliseconds (bounded).
        fn pump(&mut self) {
            for _ in 0..200 {
                self.poll
                    .poll(&mut self.events, Some(Duration::from_millis(2)))
                    .expect("poll");
                let due = self
                    .server
                    .poll_timeout_ms()
                    .is_some_and(|t| t <= self.sink.now_ms());
                if self.events.is_empty() && !due {
                    return;
                }
                if due {
                    self.server
                        .handle_timer(self.poll.registry(), &mut self.store, &mut self.sink);
                }
                let tokens: Vec<(Token, bool)> = self
                    .events
                    .iter()
                    .map(|e| (e.token(), e.is_read_closed() || e.is_error()))
                    .collect();
                for (t, hangup) in tokens {
                    self.server.handle_ready(
                        self.poll.registry(),
                        t,
                        hangup,
                        &mut self.store,
                        &mut self.sink,
                    );
                }
            }
        }

        /// Moves the test clock and runs the server's timer if due.
        fn advance(&mut self, ms: u64) {
            self.sink.elapsed_ms += ms;
            if self
                .server
                .poll_timeout_ms()
                .is_some_and(|t| t <= self.sink.now_ms())
            {
                self.server
                    .handle_timer(self.poll.registry(), &mut self.store, &mut self.sink);
            }
            self.pump();
        }

        fn complete(&mut self, id: ReplyTicket, result: Result<(), WriteFailure>) {
            self.server.complete(
                self.poll.registry(),
                id,
                result,
                &mut self.store,
                &mut self.sink,
            );
            self.pump();
        }
    }

    fn read_some(s: &mut StdStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => return out,
            }
        }
    }

    #[test]
    fn held_writes_let_the_pipeline_run_and_replies_keep_order() {
        let mut rig = Rig::new(RespServerConfig::default());
        rig.sink.hold = true;
        let mut c = rig.connect();
        c.write_all(b"SET a 1\r\nGET a\r\nSET a 2\r\nGET a\r\n")
            .expect("send");
        rig.pump();
        // Both writes run at once; no reply leaves before the first write completes.
        assert_eq!(read_some(&mut c), b"");
        assert_eq!(rig.sink.submitted.len(), 2);
        let (id1, recs) = rig.sink.submitted[0].clone();
        assert_eq!(recs[0].key, b"a".to_vec());
        let (id2, _) = rig.sink.submitted[1].clone();
        // Completing the second first releases nothing: replies stay in command order.
        rig.complete(id2, Err(WriteFailure::Isolated));
        assert_eq!(read_some(&mut c), b"");
        rig.complete(id1, Ok(()));
        let got = read_some(&mut c);
        let want = format!(
            "+OK\r\n$1\r\n1\r\n-{}\r\n$1\r\n2\r\n",
            String::from_utf8_lossy(ISOLATED_ERROR)
        );
        assert_eq!(String::from_utf8_lossy(&got), want);
        // Completing an unknown or already completed id does nothing.
        rig.complete(id1, Ok(()));
        assert_eq!(read_some(&mut c), b"");
        assert_eq!(rig.server.buffered_bytes(), 0);
    }

    #[test]
    fn held_writes_per_connection_are_bounded_and_quit_waits_for_them() {
        let mut rig = Rig::new(RespServerConfig {
            max_held_per_connection: 2,
            ..RespServerConfig::default()
        });
        rig.sink.hold = true;
        let mut c = rig.connect();
        c.write_all(b"SET a 1\r\nSET b 2\r\nSET c 3\r\nPING\r\nQUIT\r\n")
            .expect("send");
        rig.pump();
        assert_eq!(rig.sink.submitted.len(), 2, "the third write waits");
        assert_eq!(read_some(&mut c), b"");
        let (id1, _) = rig.sink.submitted[0].clone();
        rig.complete(id1, Ok(()));
        assert_eq!(read_some(&mut c), b"+OK\r\n");
        assert_eq!(
            rig.sink.submitted.len(),
            3,
            "a slot freed: the third write runs"
        );
        let (id2, _) = rig.sink.submitted[1].clone();
        let (id3, _) = rig.sink.submitted[2].clone();
        rig.complete(id2, Ok(()));
        assert_eq!(read_some(&mut c), b"+OK\r\n");
        assert_eq!(rig.server.connections(), 1, "QUIT waits for the held write");
        rig.complete(id3, Ok(()));
        assert_eq!(read_some(&mut c), b"+OK\r\n+PONG\r\n+OK\r\n");
        assert_eq!(rig.server.connections(), 0);
    }

    #[test]
    fn record_bytes_in_flight_per_connection_are_bounded() {
        let mut rig = Rig::new(RespServerConfig {
            max_held_bytes_per_connection: 1000,
            ..RespServerConfig::default()
        });
        rig.sink.hold = true;
        let mut c = rig.connect();
        let big = "x".repeat(600);
        c.write_all(format!("SET a {big}\r\nSET b {big}\r\nSET c 1\r\n").as_bytes())
            .expect("send");
        rig.pump();
        // The first two fit under the bound (600 < 1000); the third waits.
        assert_eq!(rig.sink.submitted.len(), 2);
        let (id1, _) = rig.sink.submitted[0].clone();
        rig.complete(id1, Ok(()));
        assert_eq!(read_some(&mut c), b"+OK\r\n");
        assert_eq!(rig.sink.submitted.len(), 3, "its own completion resumed it");
    }

    #[test]
    fn a_batch_of_completions_is_delivered_at_its_last_call() {
        let mut rig = Rig::new(RespServerConfig::default());
        rig.sink.hold = true;
        let mut c = rig.connect();
        c.write_all(b"SET a 1\r\nSET b 2\r\n").expect("send");
        rig.pump();
        let ids: Vec<ReplyTicket> = rig.sink.submitted.iter().map(|(id, _)| *id).collect();
        rig.sink.left = 2;
        rig.complete(ids[0], Ok(()));
        assert_eq!(read_some(&mut c), b"", "deferred to the end of the batch");
        rig.complete(ids[1], Ok(()));
        assert_eq!(read_some(&mut c), b"+OK\r\n+OK\r\n");
    }

    #[test]
    fn isolated_node_refuses_writes_and_serves_reads() {
        let mut rig = Rig::new(RespServerConfig::default());
        let mut c = rig.connect();
        c.write_all(b"SET a 1\r\n").expect("send");
        rig.pump();
        assert_eq!(read_some(&mut c), b"+OK\r\n");
        rig.sink.isolated = true;
        c.write_all(b"SET a 2\r\nGET a\r\n").expect("send");
        rig.pump();
        let got = read_some(&mut c);
        let want = format!(
            "-{}\r\n$1\r\n1\r\n",
            String::from_utf8_lossy(ISOLATED_ERROR)
        );
        assert_eq!(String::from_utf8_lossy(&got), want);
        assert_eq!(rig.sink.submitted.len(), 1);
    }

    #[test]
    fn max_connections_gets_redis_error() {
        let mut rig = Rig::new(RespServerConfig {
            max_connections: 2,
            ..RespServerConfig::default()
        });
        let _a = rig.connect();
        let _b = rig.connect();
        let mut c = rig.connect();
        assert_eq!(read_some(&mut c), b"-ERR max number of clients reached\r\n");
        assert_eq!(rig.server.connections(), 2);
    }

    #[test]
    fn client_that_does_not_read_is_bounded() {
        let soft = 256 * 1024;
        let limits = resp::Limits::for_max_value(64 * 1024);
        let mut rig = Rig::new(RespServerConfig {
            output_soft_limit: soft,
            limits,
            ..RespServerConfig::default()
        });
        let mut c = rig.connect();
        let value = vec![b'x'; 60_000];
        let mut set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$60000\r\n".to_vec();
        set.extend_from_slice(&value);
        set.extend_from_slice(b"\r\n");
        c.write_all(&set).expect("send");
        rig.pump();
        assert_eq!(read_some(&mut c), b"+OK\r\n");
        // Pipeline 500 GETs (30 MB of replies) without reading any reply.
        c.set_nonblocking(true).expect("nonblocking");
        let n = 500;
        let get = b"GET k\r\n".repeat(n);
        let mut sent = 0;
        let mut max_buffered = 0;
        let mut stalled = 0;
        while sent < get.len() && stalled < 20 {
            match c.write(&get[sent..]) {
                Ok(k) => {
                    sent += k;
                    stalled = 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => stalled += 1,
                Err(e) => panic!("{e}"),
            }
            rig.pump();
            max_buffered = max_buffered.max(rig.server.buffered_bytes());
        }
        // Input is bounded by one request plus one read; output by the soft limit plus one
        // reply; the kernel's socket buffers hold the rest.
        let bound = limits.max_request + READ_CHUNK + soft + 70_000;
        assert!(max_buffered <= bound, "{max_buffered} > {bound}");
        assert!(max_buffered > 0);
        // Now read everything on another thread: every reply arrives, none lost.
        c.set_nonblocking(false).expect("blocking");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reader = c.try_clone().expect("clone");
        let want = n * (60_000 + 10);
        let handle = std::thread::spawn(move || {
            let mut total = 0;
            let mut buf = vec![0u8; 1 << 16];
            while total < want {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => total += k,
                }
            }
            total
        });
        let mut rounds = 0;
        while !handle.is_finished() && rounds < 20_000 {
            if sent < get.len() {
                if let Ok(k) = c.write(&get[sent..]) {
                    sent += k;
                }
            }
            rig.pump();
            rounds += 1;
        }
        assert_eq!(handle.join().expect("reader"), want);
    }

    #[test]
    fn protocol_error_replies_then_closes() {
        let mut rig = Rig::new(RespServerConfig::default());
        let mut c = rig.connect();
        c.write_all(b"PING\r\n*1\r\n$x\r\nPING\r\n").expect("send");
        rig.pump();
        assert_eq!(
            read_some(&mut c),
            b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(rig.server.connections(), 0);
    }

    #[test]
    fn oversized_value_is_skipped_answered_and_the_connection_goes_on() {
        let limits = resp::Limits::for_max_value(1000);
        let mut rig = Rig::new(RespServerConfig {
            limits,
            ..RespServerConfig::default()
        });
        let mut c = rig.connect();
        c.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000000\r\n")
            .expect("send");
        // 5 MB in pieces: the server never holds more than a read of it.
        let chunk = vec![b'x'; 100_000];
        let mut max_buffered = 0;
        for _ in 0..50 {
            c.write_all(&chunk).expect("send");
            rig.pump();
            max_buffered = max_buffered.max(rig.server.buffered_bytes());
        }
        c.write_all(b"\r\nSET k small\r\nGET k\r\n").expect("send");
        rig.pump();
        assert_eq!(
            String::from_utf8_lossy(&read_some(&mut c)),
            "-ERR value exceeds --max-value-bytes (1000 bytes)\r\n+OK\r\n$5\r\nsmall\r\n"
        );
        assert!(max_buffered <= READ_CHUNK, "{max_buffered}");
        assert_eq!(rig.server.stats().oversized, 1);
        // Past proto-max-bulk-len: a protocol error, and the connection closes.
        c.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870913\r\n")
            .expect("send");
        rig.pump();
        assert_eq!(
            read_some(&mut c),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(rig.server.connections(), 0);
    }

    #[test]
    fn client_memory_budget_closes_the_largest_first() {
        // Requests of up to 1.25 MiB: a large one takes a buffer of 1.31 MiB.
        let mut rig = Rig::new(RespServerConfig {
            max_client_memory: 8 << 20,
            limits: resp::Limits::for_max_value(512 * 1024),
            ..RespServerConfig::default()
        });
        let mut small = rig.connect();
        let mut parked = Vec::new();
        // Each parks most of a 400 kB SET (within the value limit) and stops.
        for _ in 0..8 {
            let mut c = rig.connect();
            c.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$400000\r\n")
                .expect("send");
            c.write_all(&vec![b'x'; 350_000]).expect("send");
            rig.pump();
            assert!(rig.server.client_memory() <= 8 << 20);
            parked.push(c);
        }
        // Six fit in 8 MiB (with the small one): two are closed.
        assert_eq!(rig.server.stats().closed(CloseReason::ClientMemory), 2);
        assert!(
            rig.server.connections() >= 4,
            "{}",
            rig.server.connections()
        );
        // The small client was never the largest: it still works.
        small.write_all(b"PING\r\n").expect("send");
        rig.pump();
        assert_eq!(read_some(&mut small), b"+PONG\r\n");
        drop(parked);
        rig.pump();
        assert_eq!(rig.server.connections(), 1);
        assert!(rig.server.client_memory() < 1 << 20);
    }

    /// Each failed AUTH holds its reply and the connection's later commands for a pause
    /// that doubles (100, 200, 400 ... ms) on the server's timer; other clients, and the
    /// right password, are served at once meanwhile; the sixth failure closes.
    #[test]
    fn failed_auth_pauses_its_connection_growing_and_nobody_else() {
        let mut rig = Rig::with_commands(
            RespServerConfig::default(),
            commands::CommandConfig {
                requirepass: Some(b"pw".to_vec()),
                ..commands::CommandConfig::default()
            },
        );
        let mut guesser = rig.connect();
        let mut user = rig.connect();
        let flood: Vec<u8> = (0..8)
            .flat_map(|i| format!("AUTH guess{i}\r\n").into_bytes())
            .collect();
        guesser.write_all(&flood).expect("send");
        rig.pump();
        assert_eq!(
            read_some(&mut guesser),
            b"",
            "the first failure is answered late"
        );
        user.write_all(b"AUTH pw\r\nPING\r\n").expect("send");
        rig.pump();
        assert_eq!(read_some(&mut user), b"+OK\r\n+PONG\r\n");
        for (n, pause) in [100, 200, 400, 800, 1600, 3200].into_iter().enumerate() {
            assert_eq!(auth_delay_ms(n as u32 + 1), pause);
            rig.advance(pause - 1);
            assert_eq!(
                read_some(&mut guesser),
                b"",
                "failure {} answered early",
                n + 1
            );
            rig.advance(1);
            let reply = read_some(&mut guesser);
            assert!(
                reply.starts_with(b"-WRONGPASS"),
                "{}",
                String::from_utf8_lossy(&reply)
            );
            assert_eq!(
                reply.iter().filter(|&&b| b == b'\n').count(),
                1,
                "one reply per pause"
            );
        }
        // The sixth failure closed the connection: the last two guesses were never tried.
        rig.pump();
        let mut buf = [0u8; 64];
        assert!(matches!(guesser.read(&mut buf), Ok(0) | Err(_)));
        assert_eq!(rig.server.connections(), 1);
        assert_eq!(auth_delay_ms(10), MAX_AUTH_DELAY_MS);
    }

    #[test]
    fn idle_clients_time_out_and_busy_ones_stay() {
        let mut rig = Rig::new(RespServerConfig {
            client_timeout_ms: 3000,
            ..RespServerConfig::default()
        });
        let mut slow = rig.connect();
        let mut busy = rig.connect();
        for _ in 0..6 {
            // One byte of a request a second: never a complete command. (Once closed, the
            // write fails: the server reset the connection.)
            let _ = slow.write_all(b"*");
            busy.write_all(b"PING\r\n").expect("send");
            rig.advance(1000);
            assert_eq!(read_some(&mut busy), b"+PONG\r\n");
        }
        assert_eq!(rig.server.connections(), 1);
        assert_eq!(rig.server.stats().closed(CloseReason::Timeout), 1);
        assert_eq!(read_some(&mut slow), b"");
    }

    #[test]
    fn a_client_that_never_reads_is_cut_off_at_its_output_limit() {
        let mut rig = Rig::new(RespServerConfig {
            output_soft_limit: 64 * 1024,
            output_soft_ms: 2000,
            ..RespServerConfig::default()
        });
        let mut c = rig.connect();
        c.write_all(format!("SET k {}\r\n", "v".repeat(60_000)).as_bytes())
            .expect("send");
        rig.pump();
        assert_eq!(read_some(&mut c), b"+OK\r\n");
        c.set_nonblocking(true).expect("nonblocking");
        let gets = b"GET k\r\n".repeat(2000);
        let mut sent = 0;
        for _ in 0..200 {
            if let Ok(n) = c.write(&gets[sent..]) {
                sent += n;
            }
            rig.pump();
            if sent == gets.len() {
                break;
            }
        }
        assert!(rig.server.buffered_bytes() > 64 * 1024);
        for _ in 0..4 {
            rig.advance(1000);
        }
        assert_eq!(rig.server.connections(), 0);
        assert_eq!(rig.server.stats().closed(CloseReason::OutputBuffer), 1);
    }
}
