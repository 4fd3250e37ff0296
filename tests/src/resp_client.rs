//! A small blocking RESP2 client for the tests: connects from inside a namespace, sends
//! commands as arrays of bulk strings, reads one reply per command (pipelining supported).
//!
//! Every read is bounded: a timeout on the socket, and reply sizes capped at [`MAX_REPLY`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::in_netns;

/// Largest bulk string or array the client accepts (a 256 KiB value fits easily).
pub const MAX_REPLY: usize = 4 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == "OK")
    }

    /// The bytes of a non-nil bulk reply.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }
}

pub struct Resp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Resp {
    /// Connects to `addr` from inside namespace `ns`; `timeout` bounds the connect and
    /// every later read and write.
    pub fn connect(ns: &str, addr: SocketAddr, timeout: Duration) -> io::Result<Resp> {
        let s = in_netns(ns, move || TcpStream::connect_timeout(&addr, timeout))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Resp {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    /// Sends one command and reads its reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        self.send(args)?;
        self.read()
    }

    /// Sends all `cmds` in one write, then reads their replies in order.
    pub fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> io::Result<Vec<Reply>> {
        let mut buf = Vec::new();
        for c in cmds {
            let refs: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            encode(&mut buf, &refs);
        }
        self.w.write_all(&buf)?;
        cmds.iter().map(|_| self.read()).collect()
    }

    pub fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        let mut buf = Vec::new();
        encode(&mut buf, args);
        self.w.write_all(&buf)
    }

    /// Writes `bytes` as they are (a pipeline built with [`encode`], or a malformed stream).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)
    }

    pub fn set(&mut self, key: &str, value: &[u8]) -> io::Result<Reply> {
        self.cmd(&[b"SET", key.as_bytes(), value])
    }

    pub fn get(&mut self, key: &str) -> io::Result<Reply> {
        self.cmd(&[b"GET", key.as_bytes()])
    }

    /// Reads one reply.
    pub fn read(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.r, 0)
    }
}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    // Bounded: a header line is short.
    let n = r.take(64 * 1024).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad("line without CRLF"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| bad("non-UTF-8 line"))
}

fn read_reply(r: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    if depth > 8 {
        return Err(bad("reply nested too deep"));
    }
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let len = || -> io::Result<i64> { rest.parse().map_err(|_| bad("bad length")) };
    Ok(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(len()?),
        "$" => {
            let n = len()?;
            if n < 0 {
                Reply::Bulk(None)
            } else if n as usize > MAX_REPLY {
                return Err(bad("bulk too large"));
            } else {
                let mut b = vec![0; n as usize + 2];
                r.read_exact(&mut b)?;
                if !b.ends_with(b"\r\n") {
                    return Err(bad("bulk without CRLF"));
                }
                b.truncate(n as usize);
                Reply::Bulk(Some(b))
            }
        }
        "*" => {
            let n = len()?;
            if n < 0 {
                Reply::Array(None)
            } else if n as usize > MAX_REPLY {
                return Err(bad("array too large"));
            } else {
                let mut v = Vec::new();
                for _ in 0..n {
                    v.push(read_reply(r, depth + 1)?);
                }
                Reply::Array(Some(v))
            }
        }
        _ => return Err(bad("unknown reply type")),
    })
}

#[cfg(test)]
// A failed unwrap in a test is a failed test.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut BufReader::new(bytes), 0)
    }

    #[test]
    fn parses_every_reply_kind() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Simple("OK".into()));
        assert_eq!(parse(b"-ERR x\r\n").unwrap(), Reply::Error("ERR x".into()));
        assert_eq!(parse(b":-3\r\n").unwrap(), Reply::Int(-3));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse(b"$3\r\na\r\n\r\n").unwrap(),
            Reply::Bulk(Some(b"a\r\n".to_vec()))
        );
        assert_eq!(
            parse(b"*2\r\n:1\r\n$0\r\n\r\n").unwrap(),
            Reply::Array(Some(vec![Reply::Int(1), Reply::Bulk(Some(vec![]))]))
        );
        assert!(parse(b"$5\r\nab\r\n").is_err());
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
    }

    #[test]
    fn encodes_bulk_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }
}
