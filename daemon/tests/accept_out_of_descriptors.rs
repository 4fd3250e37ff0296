//! The RESP listener when `accept` fails for lack of descriptors (issue 11, item 1): the
//! failure pauses the listener instead of spinning, and the connections left in the backlog
//! are taken as soon as descriptors free up, with no new connection arriving to wake it.
//! The HTTP listener too. Its own test binary: it lowers this process's descriptor limit.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rlimit::Resource;
use socket2::{Domain, Socket, Type};
use tandem_core::{ClusterId, Incarnation, NodeId};
use tandemd::engine::status::{MemberState, Role, StatusSnapshot};
use tandemd::engine::store;
use tandemd::io::clock::Clock;
use tandemd::ops::http::{HttpServer, Source};
use tandemd::resp::commands;
use tandemd::resp::server::{standalone, RespServerConfig};

/// Opens `/dev/null` until the descriptor limit refuses (bounded by the limit).
fn exhaust(limit: u64) -> Vec<File> {
    let mut held = Vec::new();
    for _ in 0..limit {
        match File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(_) => break,
        }
    }
    held
}

/// `clients` connections to `addr` made while every descriptor up to `limit` is taken (their
/// sockets are opened first; the kernel completes the handshakes, the server cannot accept),
/// and the descriptors held, to drop when the test frees them.
fn connect_when_exhausted(
    addr: std::net::SocketAddr,
    clients: usize,
    limit: u64,
) -> (Vec<TcpStream>, Vec<File>) {
    let unconnected: Vec<Socket> = (0..clients)
        .map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap())
        .collect();
    let held = exhaust(limit);
    let socks = unconnected
        .into_iter()
        .map(|s| {
            s.connect(&addr.into())
                .expect("the kernel completes the handshake");
            s.into()
        })
        .collect();
    (socks, held)
}

/// This process's CPU time, from `/proc/self/stat` opened beforehand (no descriptor is
/// free when it is read).
fn cpu_time(stat: &mut File) -> Duration {
    use std::io::Seek;
    stat.rewind().unwrap();
    let mut stat_text = String::new();
    stat.read_to_string(&mut stat_text).unwrap();
    let stat = stat_text;
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[test]
fn a_listener_out_of_descriptors_pauses_then_takes_its_backlog() {
    let stop = Arc::new(AtomicBool::new(false));
    let config = RespServerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        max_connections: 10_000,
        ..RespServerConfig::default()
    };
    let (addr, server) = standalone::spawn(
        config,
        commands::CommandConfig::default(),
        store::Limits::default(),
        false,
        stop.clone(),
    )
    .unwrap();
    // The server runs (its epoll descriptor exists) before descriptors run out.
    // (QUIT: its end of file says the server closed its side, so no descriptor frees later.)
    let mut first = TcpStream::connect(addr).unwrap();
    first.write_all(b"PING\r\nQUIT\r\n").unwrap();
    let mut replies = Vec::new();
    first.read_to_end(&mut replies).unwrap();
    assert_eq!(replies, b"+PONG\r\n+OK\r\n");
    drop(first);
    let (_, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap();
    let limit = 256;
    rlimit::setrlimit(Resource::NOFILE, limit, hard).unwrap();

    let mut stat = File::open("/proc/self/stat").unwrap();
    // The clients' sockets first, then every descriptor taken, then the clients connect (the
    // kernel completes the handshakes; the server cannot take them).
    let clients = 8;
    let (mut socks, held) = connect_when_exhausted(addr, clients, limit);
    for s in &mut socks {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"PING\r\n").unwrap();
    }
    // The server cannot take them: nothing answers, and it does not spin meanwhile.
    let cpu = cpu_time(&mut stat);
    let mut buf = [0u8; 7];
    socks[0]
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        socks[0].read(&mut buf).is_err(),
        "answered without a descriptor?"
    );
    let spent = cpu_time(&mut stat) - cpu;
    assert!(
        spent < Duration::from_millis(150),
        "CPU {spent:?} in 300 ms"
    );

    // Descriptors free up: the backlog is taken with no new connection to wake the listener.
    let freed = Instant::now();
    drop(held);
    for (i, s) in socks.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut got = [0u8; 7];
        s.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("client {i} never answered: {e}"));
        assert_eq!(&got, b"+PONG\r\n");
    }
    println!(
        "backlog of {clients} taken {:?} after descriptors freed",
        freed.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap().unwrap();
    drop(socks);

    // The HTTP listener the same way: `/health` comes back once descriptors free up.
    http_listener_out_of_descriptors(limit, &mut stat);
}

/// A fixed status for the HTTP endpoint: a healthy lone node.
struct Healthy;

impl Source for Healthy {
    fn status(&self) -> StatusSnapshot {
        StatusSnapshot {
            node_id: NodeId(1),
            cluster_id: ClusterId(1),
            incarnation: Incarnation(1),
            state: MemberState::Alive,
            leader: Some(NodeId(1)),
            view: 1,
            role: Role::Leader,
            members: Vec::new(),
            synced: true,
            isolated: false,
            duplicate_id: false,
            sync: Default::default(),
            backlog: Default::default(),
            vips: Vec::new(),
        }
    }

    fn metrics(&self) -> String {
        String::new()
    }
}

fn http_listener_out_of_descriptors(limit: u64, stat: &mut File) {
    let mut poll = mio::Poll::new().unwrap();
    let mut server = HttpServer::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        poll.registry(),
        mio::Token(0),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let mut events = mio::Events::with_capacity(64);
    let clock = Clock::new();
    // The loop, as the daemon runs it: events, then due timeouts (bounded: 5 s).
    let mut turn = |server: &mut HttpServer, until: Duration| {
        let start = Instant::now();
        while start.elapsed() < until {
            let now = clock.now();
            let wait = server
                .poll_timeout()
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(20))
                .min(Duration::from_millis(20));
            poll.poll(&mut events, Some(wait)).unwrap();
            let now = clock.now();
            for ev in events.iter() {
                server.handle_event(poll.registry(), ev.token(), now, &Healthy);
            }
            if server.poll_timeout().is_some_and(|t| t <= now) {
                server.handle_timeout(poll.registry(), now);
            }
        }
    };
    let clients = 4;
    let (mut socks, held) = connect_when_exhausted(addr, clients, limit);
    for s in &mut socks {
        s.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    }
    let cpu = cpu_time(stat);
    turn(&mut server, Duration::from_millis(300));
    assert!(cpu_time(stat) - cpu < Duration::from_millis(150));
    assert!(server.stats().accept_errors > 0);
    drop(held);
    turn(&mut server, Duration::from_millis(300));
    for s in &mut socks {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }
}
