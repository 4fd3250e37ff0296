//! One connection table for the daemon's TCP servers (the RESP server and the HTTP endpoint):
//! the listener, the connection slots and their mio tokens, the cap on open connections,
//! accepting, timeouts and closing. What a connection holds and how it is driven is the
//! server's.
//!
//! Tokens: the listener's is its own; connection slot `i` is `base + i`, for `i < max`.
//! Accepting takes at most [`ACCEPT_PER_CALL`] connections per call, so a flood cannot hold
//! the loop; the rest wait for the next turn ([`AcceptPause::retry_at`]). An `accept` that
//! fails for lack of descriptors pauses the listener ([`AcceptPause`]) until its retry or
//! until a connection closes. The server decides, per connection, whether to take it
//! (`admit`: told whether the table is full, it may write a refusal and count why) and
//! builds its state (`open`); the table registers it and hands out its slot.
//!
//! Panics: never.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use tracing::debug;

use crate::io::descriptors::{self, AcceptPause};

/// Connections taken per wake-up of the listener (fairness toward the other sockets).
pub const ACCEPT_PER_CALL: usize = 1024;

/// Why [`ConnTable::handle_listener`] is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A readiness event of the listener.
    Ready,
    /// The loop's timer: a paused or backlogged listener may be due for a retry.
    Retry,
}

/// A connection the table holds: its socket, for (de)registration.
pub trait Connection {
    fn stream(&mut self) -> &mut TcpStream;
}

/// The listener and its connections (see the module docs).
#[derive(Debug)]
pub struct ConnTable<C> {
    /// Names the server in logs (`resp`, `http`).
    name: &'static str,
    listener: TcpListener,
    listener_token: Token,
    base: usize,
    max: usize,
    conns: Vec<Option<C>>,
    /// Empty slots below `conns.len()`, reused last-freed first.
    free: Vec<usize>,
    pause: AcceptPause,
}

impl<C: Connection> ConnTable<C> {
    /// Binds the listener (registered by [`ConnTable::register`]); at most `max`
    /// connections, with tokens `base .. base + max` (the listener's outside that range).
    pub fn bind(
        name: &'static str,
        addr: SocketAddr,
        listener_token: Token,
        base: usize,
        max: usize,
    ) -> io::Result<ConnTable<C>> {
        Ok(ConnTable {
            name,
            listener: TcpListener::bind(addr)?,
            listener_token,
            base,
            max,
            conns: Vec::new(),
            free: Vec::new(),
            pause: AcceptPause::default(),
        })
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.listener, self.listener_token, Interest::READABLE)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// True if `token` is the listener's or a connection slot's.
    pub fn owns(&self, token: Token) -> bool {
        token == self.listener_token || self.slot(token).is_some()
    }

    pub fn is_listener(&self, token: Token) -> bool {
        token == self.listener_token
    }

    /// The connection slot of `token`, if it is one (open or not).
    pub fn slot(&self, token: Token) -> Option<usize> {
        token.0.checked_sub(self.base).filter(|s| *s < self.max)
    }

    pub fn token(&self, slot: usize) -> Token {
        Token(self.base + slot)
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cap on open connections.
    pub fn max(&self) -> usize {
        self.max
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut C> {
        self.conns.get_mut(slot)?.as_mut()
    }

    /// The open connections and their slots.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &C)> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| Some((slot, c.as_ref()?)))
    }

    /// The open connections for which `why` gives a reason to close, with it (the caller
    /// closes them: closing is the server's, it has its own bookkeeping).
    pub fn expired<R>(&self, mut why: impl FnMut(&C) -> Option<R>) -> Vec<(usize, R)> {
        self.iter()
            .filter_map(|(slot, c)| Some((slot, why(c)?)))
            .collect()
    }

    /// Failed `accept` calls so far (out of descriptors or memory).
    pub fn accept_errors(&self) -> u64 {
        self.pause.errors()
    }

    /// When a paused (or still backlogged) listener is retried, unix ms.
    pub fn retry_at(&self) -> Option<u64> {
        self.pause.deadline()
    }

    /// Accepts at `now_ms` on a readiness event of the listener (unless paused), or when
    /// its retry is due ([`Wake::Retry`]). Returns the connections admitted but lost because
    /// their registration failed.
    pub fn handle_listener(
        &mut self,
        registry: &Registry,
        now_ms: u64,
        wake: Wake,
        admit: impl FnMut(&mut TcpStream, SocketAddr, bool) -> bool,
        open: impl FnMut(TcpStream) -> C,
    ) -> u64 {
        match wake {
            Wake::Ready if self.pause.paused(now_ms) => return 0,
            Wake::Ready => {}
            Wake::Retry if self.pause.deadline().is_none_or(|t| t > now_ms) => return 0,
            Wake::Retry => self.pause.clear(),
        }
        self.accept(registry, now_ms, admit, open)
    }

    /// Accepts until the backlog is empty (edge-triggered), at most [`ACCEPT_PER_CALL`].
    /// `admit(stream, peer, full)` says whether to take a connection (a refused stream is
    /// closed when dropped); `open` builds the state of one taken.
    fn accept(
        &mut self,
        registry: &Registry,
        now_ms: u64,
        mut admit: impl FnMut(&mut TcpStream, SocketAddr, bool) -> bool,
        mut open: impl FnMut(TcpStream) -> C,
    ) -> u64 {
        let mut lost = 0;
        for _ in 0..ACCEPT_PER_CALL {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return lost,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // The peer gave up before we took it (ECONNABORTED...): the next one.
                Err(e) if descriptors::per_connection(&e) => {
                    debug!(error = %e, server = self.name, "accept");
                    continue;
                }
                Err(e) => {
                    // Out of descriptors (or worse): the connection stays in the backlog;
                    // retry shortly or when a connection closes, never spin on the
                    // still-readable listener.
                    self.pause.failed(self.name, &e, now_ms);
                    return lost;
                }
            };
            let full = self.len() >= self.max;
            if !admit(&mut stream, peer, full) || full {
                continue;
            }
            let slot = match self.free.pop() {
                Some(s) => s,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            if registry
                .register(&mut stream, self.token(slot), Interest::READABLE)
                .is_err()
            {
                self.free.push(slot);
                lost += 1;
                continue;
            }
            if let Some(cell) = self.conns.get_mut(slot) {
                *cell = Some(open(stream));
            }
        }
        // More may wait (edge-triggered: no new event for them): take them next turn.
        self.pause.retry_at(now_ms);
        lost
    }

    /// Takes the connection out of `slot` (deregistered; its socket closes when the
    /// returned state is dropped). A listener paused for lack of descriptors may take one
    /// again at once.
    pub fn close(&mut self, registry: &Registry, slot: usize) -> Option<C> {
        let mut conn = self.conns.get_mut(slot)?.take()?;
        let _ = registry.deregister(conn.stream());
        self.free.push(slot);
        self.pause.resume();
        Some(conn)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Duration;

    use mio::{Events, Poll};

    use super::*;

    struct Conn {
        stream: TcpStream,
        id: u32,
    }

    impl Connection for Conn {
        fn stream(&mut self) -> &mut TcpStream {
            &mut self.stream
        }
    }

    fn table(max: usize) -> (Poll, ConnTable<Conn>) {
        let poll = Poll::new().unwrap();
        let mut t =
            ConnTable::bind("test", "127.0.0.1:0".parse().unwrap(), Token(7), 100, max).unwrap();
        t.register(poll.registry()).unwrap();
        (poll, t)
    }

    /// Accepts until `want` connections have been offered to `admit` (bounded: 2 s).
    fn accept_all(
        poll: &mut Poll,
        t: &mut ConnTable<Conn>,
        want: usize,
        refused: &mut Vec<bool>,
        next: &mut u32,
    ) {
        let mut events = Events::with_capacity(16);
        for _ in 0..200 {
            if refused.len() >= want {
                return;
            }
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            t.handle_listener(
                poll.registry(),
                0,
                Wake::Ready,
                |_, peer, full| {
                    assert!(peer.ip().is_loopback());
                    refused.push(full);
                    !full
                },
                |stream| {
                    *next += 1;
                    Conn { stream, id: *next }
                },
            );
        }
        panic!("offered {} of {want} connections", refused.len());
    }

    #[test]
    fn the_cap_refuses_past_max_and_a_close_frees_the_slot_and_its_token() {
        let (mut poll, mut t) = table(2);
        let mut next = 0;
        let addr = t.local_addr().unwrap();
        let clients: Vec<StdStream> = (0..3).map(|_| StdStream::connect(addr).unwrap()).collect();
        let mut offered = Vec::new();
        accept_all(&mut poll, &mut t, 3, &mut offered, &mut next);
        assert_eq!(
            offered,
            [false, false, true],
            "the third found the table full"
        );
        assert_eq!(t.len(), 2);
        let slots: Vec<usize> = t.iter().map(|(s, _)| s).collect();
        assert_eq!(slots, [0, 1]);
        assert!(t.owns(Token(7)) && t.is_listener(Token(7)));
        assert_eq!((t.slot(Token(100)), t.slot(Token(101))), (Some(0), Some(1)));
        assert_eq!(t.slot(Token(102)), None, "past max: not a connection token");
        assert!(!t.owns(Token(102)) && !t.owns(Token(99)));
        // The refused connection was closed: its client reads end of file.
        let mut third = &clients[2];
        third
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(third.read(&mut [0u8; 8]).unwrap(), 0);

        let closed = t.close(poll.registry(), 0).unwrap();
        assert_eq!(closed.id, 1);
        drop(closed);
        assert!(t.close(poll.registry(), 0).is_none(), "closed once");
        assert_eq!(t.len(), 1);
        let mut first = &clients[0];
        first
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(first.read(&mut [0u8; 8]).unwrap(), 0, "closed socket");
        // A new connection takes the freed slot (and its token) again.
        let _again = StdStream::connect(addr).unwrap();
        let mut offered = Vec::new();
        accept_all(&mut poll, &mut t, 1, &mut offered, &mut next);
        assert_eq!(offered, [false]);
        assert_eq!(
            t.iter().map(|(s, c)| (s, c.id)).collect::<Vec<_>>(),
            [(0, 3), (1, 2)]
        );
        assert_eq!(t.token(0), Token(100));
    }

    #[test]
    fn a_registered_connection_gets_its_slots_token_and_expired_lists_reasons() {
        let (mut poll, mut t) = table(4);
        let mut next = 0;
        let addr = t.local_addr().unwrap();
        let mut a = StdStream::connect(addr).unwrap();
        let _b = StdStream::connect(addr).unwrap();
        let mut offered = Vec::new();
        accept_all(&mut poll, &mut t, 2, &mut offered, &mut next);
        a.write_all(b"x").unwrap();
        let mut events = Events::with_capacity(16);
        let mut seen = None;
        for _ in 0..200 {
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            if let Some(e) = events.iter().find(|e| e.token() != Token(7)) {
                seen = Some(e.token());
                break;
            }
        }
        assert_eq!(seen, Some(t.token(0)), "the first connection's slot token");
        let old: Vec<(usize, &str)> = t.expired(|c| (c.id == 2).then_some("idle"));
        assert_eq!(old, [(1, "idle")]);
    }
}
