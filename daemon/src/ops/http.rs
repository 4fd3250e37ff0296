//! The HTTP endpoint: `GET /health`, `GET /status`, `GET /metrics`, in the daemon's loop.
//!
//! Non-blocking, one request per connection (`Connection: close`). Bounded everywhere: at
//! most [`HTTP_CONNS`] connections (more are accepted and closed at once), a request head of at
//! most [`MAX_REQUEST_BYTES`] (larger: 431), [`MAX_HEADERS`] headers (more: 431), and
//! [`CONN_TIMEOUT`] from accept to the last byte written (slow clients are cut off). An
//! `accept` that fails for lack of descriptors pauses the listener briefly and is retried
//! (the [`ConnTable`] the RESP server uses too), so the loop never spins on it and the
//! listener never stays dead.
//! Answers: 200/503 for /health (503 body = the reason), 404 unknown path, 405 other method,
//! 400 unparsable request. A request body is never read (GET/HEAD only).
//!
//! Panics: never; the request bytes are parsed by httparse and only matched as strings.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tandem_core::Instant;
use tracing::{debug, warn};

use crate::engine::status::StatusSnapshot;
use crate::io::connections::{ConnTable, Connection, Wake};
use crate::io::descriptors::HTTP_CONNS;

pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
pub(crate) const MAX_HEADERS: usize = 32;
pub(crate) const CONN_TIMEOUT: Duration = Duration::from_secs(5);

/// A response: status code and body; always `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(code: u16, body: impl Into<String>) -> Response {
        Response {
            code,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.code {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Unknown",
        }
    }

    /// The bytes on the wire; `head_only` for HEAD requests.
    pub(crate) fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
            self.code,
            self.reason(),
            self.content_type,
            self.body.len(),
            if self.code == 405 { "Allow: GET, HEAD\r\n" } else { "" },
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Where the answers come from: called only for the path that needs it.
pub trait Source {
    fn status(&self) -> StatusSnapshot;
    fn metrics(&self) -> String;
}

/// Result of parsing a request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes needed.
    Partial,
    /// The response and whether it is for HEAD.
    Done(Response, bool),
}

/// Parses `buf` (the bytes so far) and, when the head is complete, answers it.
pub fn answer(buf: &[u8], src: &dyn Source) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_REQUEST_BYTES {
                Parsed::Done(Response::text(431, "request head too large\n"), false)
            } else {
                Parsed::Partial
            }
        }
        Err(httparse::Error::TooManyHeaders) => {
            Parsed::Done(Response::text(431, "too many headers\n"), false)
        }
        Err(_) => Parsed::Done(Response::text(400, "bad request\n"), false),
        Ok(httparse::Status::Complete(_)) => {
            let method = req.method.unwrap_or("");
            let path = req.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            let head = method == "HEAD";
            Parsed::Done(route(method, path, src), head)
        }
    }
}

/// Maps method and path to a response.
pub fn route(method: &str, path: &str, src: &dyn Source) -> Response {
    let known = matches!(path, "/health" | "/status" | "/metrics");
    if !known {
        return Response::text(404, "not found: try /health, /status, /metrics\n");
    }
    if method != "GET" && method != "HEAD" {
        return Response::text(405, "method not allowed\n");
    }
    match path {
        "/health" => match src.status().health() {
            Ok(()) => Response::text(200, "ok\n"),
            Err(reason) => Response::text(503, format!("{reason}\n")),
        },
        "/status" => {
            let mut body = src.status().to_json().to_string();
            body.push('\n');
            Response {
                code: 200,
                content_type: "application/json",
                body,
            }
        }
        _ => Response {
            code: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: src.metrics(),
        },
    }
}

struct Conn {
    stream: TcpStream,
    buf: Box<[u8; MAX_REQUEST_BYTES]>,
    len: usize,
    /// Set once the request is answered: bytes to write and how far.
    out: Option<(Vec<u8>, usize)>,
    deadline: Instant,
}

impl Connection for Conn {
    fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// Counters the loop copies into its metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStats {
    pub requests: u64,
    pub rejected: u64,
    /// Failed `accept` calls (out of descriptors or memory).
    pub accept_errors: u64,
}

/// The listener and its connections. Tokens: `base` is the listener, `base + 1 + i` is
/// connection slot `i`, for `i < HTTP_CONNS`.
pub struct HttpServer {
    conns: ConnTable<Conn>,
    stats: HttpStats,
}

impl HttpServer {
    pub fn bind(addr: SocketAddr, registry: &Registry, base: Token) -> io::Result<HttpServer> {
        let mut conns = ConnTable::bind("http", addr, base, base.0 + 1, HTTP_CONNS)?;
        conns.register(registry)?;
        Ok(HttpServer {
            conns,
            stats: HttpStats::default(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.conns.local_addr()
    }

    /// Tokens this server owns.
    pub fn owns(&self, token: Token) -> bool {
        self.conns.owns(token)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn stats(&self) -> HttpStats {
        HttpStats {
            accept_errors: self.conns.accept_errors(),
            ..self.stats
        }
    }

    pub fn handle_event(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
        src: &dyn Source,
    ) {
        if self.conns.is_listener(token) {
            self.accept(registry, now, Wake::Ready);
        } else if let Some(slot) = self.conns.slot(token) {
            self.drive(registry, slot, src);
        }
    }

    /// Closes connections past their deadline; retries a paused listener.
    pub fn handle_timeout(&mut self, registry: &Registry, now: Instant) {
        self.accept(registry, now, Wake::Retry);
        for (slot, ()) in self.conns.expired(|c| (now >= c.deadline).then_some(())) {
            debug!(slot, "http: connection timed out");
            self.stats.rejected += 1;
            self.close(registry, slot);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.conns.retry_at().map(Instant::from_millis);
        self.conns
            .iter()
            .map(|(_, c)| c.deadline)
            .chain(retry)
            .min()
    }

    fn accept(&mut self, registry: &Registry, now: Instant, wake: Wake) {
        let lost = self.conns.handle_listener(
            registry,
            ms(now),
            wake,
            |_, _, full| admit(&mut self.stats, full),
            |stream| Conn::new(stream, now),
        );
        self.stats.rejected += lost;
    }

    fn drive(&mut self, registry: &Registry, slot: usize, src: &dyn Source) {
        let token = self.conns.token(slot);
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let mut close = false;
        if conn.out.is_none() {
            while let Some(space) = conn.buf.get_mut(conn.len..) {
                if space.is_empty() {
                    break;
                }
                match conn.stream.read(space) {
                    Ok(0) => {
                        close = true;
                        break;
                    }
                    Ok(n) => conn.len += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            match answer(conn.buf.get(..conn.len).unwrap_or(&[]), src) {
                Parsed::Partial => {}
                Parsed::Done(resp, head) => {
                    if resp.code >= 400 && resp.code != 404 && resp.code != 405 {
                        self.stats.rejected += 1;
                    } else {
                        self.stats.requests += 1;
                    }
                    conn.out = Some((resp.to_bytes(head), 0));
                    close = false;
                }
            }
        }
        if let Some((out, written)) = &mut conn.out {
            while let Some(rest) = out.get(*written..) {
                if rest.is_empty() {
                    close = true;
                    break;
                }
                match conn.stream.write(rest) {
                    Ok(0) => {
                        close = true;
                        break;
                    }
                    Ok(n) => *written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if registry
                            .reregister(&mut conn.stream, token, Interest::WRITABLE)
                            .is_err()
                        {
                            close = true;
                        }
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
        }
        if close {
            self.close(registry, slot);
        }
    }

    fn close(&mut self, registry: &Registry, slot: usize) {
        if let Some(c) = self.conns.close(registry, slot) {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Conn {
    fn new(stream: TcpStream, now: Instant) -> Conn {
        Conn {
            stream,
            buf: Box::new([0; MAX_REQUEST_BYTES]),
            len: 0,
            out: None,
            deadline: now + CONN_TIMEOUT,
        }
    }
}

/// Takes a connection unless all [`HTTP_CONNS`] are open (closing the stream refuses it).
fn admit(stats: &mut HttpStats, full: bool) -> bool {
    if full {
        stats.rejected += 1;
        warn!("http: {HTTP_CONNS} connections open, refusing one");
    }
    !full
}

/// `now` in whole milliseconds, the unit of the connection table's accept pause.
fn ms(now: Instant) -> u64 {
    now.as_micros() / 1000
}

/// Entry point for the `http` fuzz target and the seed replay test.
pub mod fuzzing {
    use super::{answer, Parsed, Source, MAX_REQUEST_BYTES};
    use crate::engine::status::{MemberState, MemberStatus, Role, StatusSnapshot};
    use tandem_core::{ClusterId, Incarnation, NodeId};

    struct Fixed;

    impl Source for Fixed {
        fn status(&self) -> StatusSnapshot {
            StatusSnapshot {
                node_id: NodeId(1),
                cluster_id: ClusterId(1),
                incarnation: Incarnation(1),
                state: MemberState::Alive,
                leader: Some(NodeId(1)),
                view: 1,
                role: Role::Leader,
                members: vec![MemberStatus {
                    node_id: NodeId(1),
                    state: MemberState::Alive,
                    incarnation: Incarnation(1),
                    ms_since_heard: 0,
                }],
                synced: true,
                isolated: false,
                duplicate_id: false,
                sync: Default::default(),
                backlog: Default::default(),
                vips: Vec::new(),
            }
        }

        fn metrics(&self) -> String {
            "x_total 1\n".into()
        }
    }

    /// Answers `data` as a request head (whole, and every prefix the server could have
    /// read first, bounded); checks the answer is a known status with a bounded body.
    pub fn check(data: &[u8]) {
        let data = &data[..data.len().min(2 * MAX_REQUEST_BYTES)];
        for end in [data.len(), data.len() / 2, data.len().min(16)] {
            let Some(head) = data.get(..end) else {
                continue;
            };
            if let Parsed::Done(r, is_head) = answer(head, &Fixed) {
                assert!(
                    matches!(r.code, 200 | 400 | 404 | 405 | 431 | 503),
                    "{}",
                    r.code
                );
                assert!(r.body.len() < 1 << 16);
                let bytes = r.to_bytes(is_head);
                assert!(bytes.starts_with(b"HTTP/1."));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::engine::status::{MemberState, MemberStatus, Role};
    use tandem_core::{ClusterId, Incarnation, NodeId};

    struct Fixed(StatusSnapshot);

    impl Source for Fixed {
        fn status(&self) -> StatusSnapshot {
            self.0.clone()
        }
        fn metrics(&self) -> String {
            "# HELP x y\n# TYPE x counter\nx_total 1\n".into()
        }
    }

    fn src(synced: bool) -> Fixed {
        Fixed(StatusSnapshot {
            node_id: NodeId(1),
            cluster_id: ClusterId(1),
            incarnation: Incarnation(5),
            state: MemberState::Alive,
            leader: None,
            view: 0,
            role: Role::Joining,
            members: vec![MemberStatus {
                node_id: NodeId(1),
                state: MemberState::Alive,
                incarnation: Incarnation(5),
                ms_since_heard: 0,
            }],
            synced,
            isolated: false,
            duplicate_id: false,
            sync: Default::default(),
            backlog: Default::default(),
            vips: Vec::new(),
        })
    }

    fn done(bytes: &[u8], s: &Fixed) -> Response {
        match answer(bytes, s) {
            Parsed::Done(r, _) => r,
            Parsed::Partial => panic!("partial"),
        }
    }

    #[test]
    fn routes() {
        let s = src(true);
        assert_eq!(
            done(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", &s).code,
            200
        );
        let r = done(b"GET /health HTTP/1.1\r\n\r\n", &src(false));
        assert_eq!(r.code, 503);
        assert!(r.body.contains("synced"));
        let r = done(b"GET /status?x=1 HTTP/1.0\r\n\r\n", &s);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["node_id"], 1);
        assert_eq!(v["members"][0]["state"], "alive");
        assert!(done(b"GET /metrics HTTP/1.1\r\n\r\n", &s)
            .body
            .contains("x_total 1"));
        assert_eq!(done(b"GET /nope HTTP/1.1\r\n\r\n", &s).code, 404);
        assert_eq!(done(b"POST /status HTTP/1.1\r\n\r\n", &s).code, 405);
        assert_eq!(done(b"\x00\x01garbage\r\n\r\n", &s).code, 400);
        assert_eq!(answer(b"GET /status HTTP/1.1\r\nHos", &s), Parsed::Partial);
        let head = match answer(b"HEAD /health HTTP/1.1\r\n\r\n", &s) {
            Parsed::Done(r, head) => r.to_bytes(head),
            Parsed::Partial => panic!(),
        };
        assert!(head.ends_with(b"\r\n\r\n"));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_get_an_answer_or_wait(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let s = src(true);
            match answer(&raw, &s) {
                Parsed::Partial => proptest::prop_assert!(raw.len() < MAX_REQUEST_BYTES),
                Parsed::Done(r, _) => proptest::prop_assert!(matches!(r.code, 200 | 400 | 404 | 405 | 431 | 503)),
            }
        }

        #[test]
        fn request_lines_route(method in "[A-Z]{1,7}", path in "/[a-z?=&]{0,12}") {
            let s = src(true);
            let req = format!("{method} {path} HTTP/1.1\r\n\r\n");
            match answer(req.as_bytes(), &s) {
                Parsed::Done(r, _) => proptest::prop_assert!(matches!(r.code, 200 | 404 | 405)),
                Parsed::Partial => proptest::prop_assert!(false, "complete request seen as partial"),
            }
        }
    }

    #[test]
    fn bounds() {
        let s = src(true);
        let mut big = b"GET /status HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST_BYTES, b'a');
        assert_eq!(done(&big, &s).code, 431);
        let mut many = b"GET /status HTTP/1.1\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(done(&many, &s).code, 431);
    }

    #[test]
    fn serves_over_a_socket() {
        use std::io::{Read as _, Write as _};
        let mut poll = mio::Poll::new().unwrap();
        let mut server =
            HttpServer::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), Token(10)).unwrap();
        let addr = server.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /status HTTP/1.1\r\n\r\n").unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        });
        let s = src(true);
        let mut events = mio::Events::with_capacity(16);
        // Bounded: 100 polls of at most 50 ms.
        for _ in 0..100 {
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
            for ev in events.iter() {
                assert!(server.owns(ev.token()));
                server.handle_event(poll.registry(), ev.token(), Instant::ZERO, &s);
            }
            if client.is_finished() {
                break;
            }
        }
        let reply = client.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("\"node_id\":1"));
        assert_eq!(server.stats().requests, 1);
        assert_eq!(server.poll_timeout(), None);
    }
}
