//! Shared helpers of the RESP integration tests: a real redis-server, tandemd's RESP
//! component on its own thread, raw request/reply exchange and a RESP reply splitter.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandemd::engine::store;
use tandemd::resp::commands;
use tandemd::resp::server::{standalone, RespServerConfig};

/// Finds a tool; `None` means skip the test, except under CI=true, where it is a failure.
pub fn require_tool(name: &str) -> Option<String> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p.to_string_lossy().into_owned()),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{name} is required under CI=true (apt-get install redis-server redis-tools)")
        }
        None => {
            eprintln!("SKIP: {name} not installed (apt-get install -y redis-server redis-tools)");
            None
        }
    }
}

/// A free loopback port (bound, read, released; a race with other processes is unlikely).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("bound socket has an address").port()
}

/// A redis-server child, killed on drop.
pub struct Redis {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts redis-server on a free loopback port with no persistence; `extra` are more
/// `--option value` arguments.
pub fn start_redis(binary: &str, extra: &[&str]) -> Redis {
    let port = free_port();
    let child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let redis = Redis { child, addr };
    // Bounded wait for the port to accept.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    redis
}

/// tandemd's RESP component on its own thread; stopped on drop.
pub struct Ours {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub fn start_ours(cmds: commands::CommandConfig, hold_writes: bool) -> Ours {
    start_ours_with(
        RespServerConfig::default(),
        cmds,
        store::Limits::default(),
        hold_writes,
    )
}

pub fn start_ours_with(
    mut server: RespServerConfig,
    cmds: commands::CommandConfig,
    limits: store::Limits,
    hold_writes: bool,
) -> Ours {
    server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, handle) = standalone::spawn(server, cmds, limits, hold_writes, stop.clone())
        .expect("start the RESP component");
    Ours {
        addr,
        stop,
        handle: Some(handle),
    }
}

/// Appended to each exchange: its reply marks the end of the replies.
pub const SENTINEL: &[u8] = b"*2\r\n$4\r\nECHO\r\n$12\r\n__sentinel__\r\n";
const SENTINEL_REPLY: &[u8] = b"$12\r\n__sentinel__\r\n";

/// Sends `request` (in pieces of `chunk` bytes) and then the sentinel on a new connection,
/// and returns every reply byte before the sentinel's reply, plus whether the server closed
/// the connection instead of answering the sentinel.
pub fn exchange(addr: SocketAddr, request: &[u8], chunk: usize) -> (Vec<u8>, bool) {
    exchange_with(addr, request, chunk, true)
}

/// [`exchange`], optionally without the sentinel (for requests after which the server must
/// close the connection: then everything until EOF is returned).
pub fn exchange_with(
    addr: SocketAddr,
    request: &[u8],
    chunk: usize,
    sentinel: bool,
) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    s.set_nodelay(true).expect("nodelay");
    for piece in request.chunks(chunk.max(1)) {
        // The server may close early (protocol error); later writes may then fail.
        if s.write_all(piece).is_err() {
            break;
        }
    }
    if sentinel {
        let _ = s.write_all(SENTINEL);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if sentinel && got.ends_with(SENTINEL_REPLY) {
            got.truncate(got.len() - SENTINEL_REPLY.len());
            return (got, false);
        }
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Encodes a command given as space-separated words (no quoting).
pub fn cmdw(words: &str) -> Vec<u8> {
    let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
    cmd(&args)
}

/// Splits a reply stream into top-level replies (each as its raw bytes).
pub fn split_replies(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let n = reply_len(bytes).unwrap_or_else(|| {
            panic!(
                "unparsable reply stream: {:?}",
                String::from_utf8_lossy(bytes)
            )
        });
        out.push(bytes[..n].to_vec());
        bytes = &bytes[n..];
    }
    out
}

fn reply_len(b: &[u8]) -> Option<usize> {
    let line_end = b.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&b[1..line_end]).unwrap_or("");
    let after = line_end + 2;
    match b.first()? {
        // RESP3's simple types: null, boolean, double, big number.
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Some(after),
        // RESP3's bulk-like types: verbatim string, bulk error.
        b'$' | b'=' | b'!' => {
            let n: i64 = head.parse().ok()?;
            if n < 0 {
                Some(after)
            } else {
                Some(after + n as usize + 2)
            }
        }
        // Arrays, and RESP3's sets, pushes, maps and attributes (two replies per entry).
        kind @ (b'*' | b'~' | b'>' | b'%' | b'|') => {
            let n: i64 = head.parse().ok()?;
            let n = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut pos = after;
            for _ in 0..n.max(0) {
                pos += reply_len(&b[pos..])?;
            }
            Some(pos)
        }
        _ => None,
    }
}

/// The elements of an array reply (raw bytes each), or None if not an array.
pub fn array_items(reply: &[u8]) -> Option<Vec<Vec<u8>>> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    aggregate_items(reply)
}

/// The elements of an array, set or push reply, or a map's keys and values in turn (raw
/// bytes each); None if `reply` is not an aggregate.
pub fn aggregate_items(reply: &[u8]) -> Option<Vec<Vec<u8>>> {
    let kind = *reply.first()?;
    if !b"*~>%|".contains(&kind) {
        return None;
    }
    let line_end = reply.windows(2).position(|w| w == b"\r\n")?;
    let n: usize = std::str::from_utf8(&reply[1..line_end])
        .ok()?
        .parse()
        .ok()?;
    let n = if matches!(kind, b'%' | b'|') {
        2 * n
    } else {
        n
    };
    let mut items = split_replies(&reply[line_end + 2..]);
    items.truncate(n);
    Some(items)
}

/// The payload of a bulk reply.
pub fn bulk_payload(reply: &[u8]) -> Option<Vec<u8>> {
    if reply.first() != Some(&b'$') {
        return None;
    }
    let line_end = reply.windows(2).position(|w| w == b"\r\n")?;
    let n: usize = std::str::from_utf8(&reply[1..line_end])
        .ok()?
        .parse()
        .ok()?;
    reply
        .get(line_end + 2..line_end + 2 + n)
        .map(<[u8]>::to_vec)
}

pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
