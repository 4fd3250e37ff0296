//! RESP request parser and reply encoding (RESP2, and RESP3 for connections that ask with
//! `HELLO 3`).
//!
//! [`Parser`] is incremental: the caller keeps the unconsumed input in one buffer, appends what
//! each read brings, and calls [`Parser::parse`] with the whole unconsumed input. The parser
//! remembers how far it got (pending argument count, pending bulk length, how far a line was
//! scanned), so no byte is scanned twice and a request split at any byte gives the same result
//! as the whole request. When a command is complete the caller reads its arguments with
//! [`Parser::args`] and then drops `consumed` bytes from the front of its buffer.
//!
//! Both request kinds of Redis are understood: arrays of bulk strings (`*2\r\n$3\r\nGET\r\n...`)
//! and inline commands (`GET key\r\n`, with Redis's quoting rules). Protocol errors carry the
//! exact text Redis 7 replies with; after one, Redis closes the connection, and so must the
//! caller (the parser's state is then unspecified).
//!
//! Bounds: argument count ([`Limits::max_args`]), bulk length ([`Limits::max_bulk`]), line
//! length ([`Limits::max_inline`], 64 KiB as in Redis) and total request size
//! ([`Limits::max_request`]). The parser never allocates from a peer-supplied length: argument
//! ranges are pushed one by one as arguments arrive, and bulk bodies stay in the caller's
//! buffer, which grows only as bytes arrive, and never past `max_request` + one read.
//!
//! A request over `max_bulk` or `max_request` is not a protocol error: the parser skips the
//! rest of it as it arrives ([`Parsed::Discard`], never buffered) and then reports it whole
//! ([`Parsed::Oversized`]), so the caller answers one error and the connection goes on. Only a
//! bulk longer than [`PROTO_MAX_BULK`] (Redis's `proto-max-bulk-len`) is a protocol error.
//!
//! Panics: never, whatever the bytes.

pub mod commands;
pub(crate) mod scripts;
pub mod server;

use std::ops::Range;

use crate::engine::value::string2ll;

/// Redis's `PROTO_INLINE_MAX_SIZE`: longest inline request or header line.
pub(crate) const MAX_INLINE: usize = 64 * 1024;
/// Redis's default `proto-max-bulk-len` (512 MiB): a longer bulk is a protocol error that
/// closes the connection; a shorter one over [`Limits::max_bulk`] is skipped and refused.
pub(crate) const PROTO_MAX_BULK: usize = 0x2000_0000;
/// Redis refuses more than this many arguments before AUTH when a password is set.
const UNAUTH_MAX_ARGS: i64 = 10;
/// Redis refuses bulks longer than this before AUTH when a password is set.
const UNAUTH_MAX_BULK: i64 = 16 * 1024;

/// Bounds the parser enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments in one command (command name included).
    pub max_args: usize,
    /// Longest bulk string (the daemon's `max_value_bytes`).
    pub max_bulk: usize,
    /// Longest inline request line or `*`/`$` header line.
    pub max_inline: usize,
    /// Most bytes one command may occupy in the input buffer.
    pub max_request: usize,
}

impl Limits {
    /// Limits for a daemon whose values are at most `max_value_bytes` long: room for an HSET or
    /// MGET with 4096 arguments, and for a command carrying two maximal values.
    pub(crate) fn for_max_value(max_value_bytes: usize) -> Limits {
        Limits {
            max_args: 4096 + 2,
            max_bulk: max_value_bytes,
            max_inline: MAX_INLINE,
            max_request: max_value_bytes.saturating_mul(2).saturating_add(256 * 1024),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::for_max_value(1024 * 1024)
    }
}

/// A protocol error. Every one ends the connection; nothing was executed for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*` header not a valid count, or above [`Limits::max_args`] (malformed or refused).
    InvalidMultibulkLength,
    /// `$` header not a valid length, or above [`PROTO_MAX_BULK`] (malformed or refused).
    InvalidBulkLength,
    /// An array element did not start with `$`; carries the byte found.
    ExpectedDollar(u8),
    /// Inline request with an unterminated quote, or a closing quote not followed by a space.
    UnbalancedQuotes,
    /// Inline request line longer than [`Limits::max_inline`] (refused).
    TooBigInline,
    /// `*` header line longer than [`Limits::max_inline`] (refused).
    TooBigMbulkCount,
    /// `$` header line longer than [`Limits::max_inline`] (refused).
    TooBigBulkCount,
    /// More than 10 arguments before AUTH while a password is required (refused).
    UnauthenticatedMultibulkLength,
    /// A bulk above 16 KiB before AUTH while a password is required (refused).
    UnauthenticatedBulkLength,
}

impl ProtocolError {
    /// Appends the reply Redis sends for this error, if any, to `out`.
    pub(crate) fn encode_reply(&self, out: &mut Vec<u8>) {
        let text: &[u8] = match self {
            ProtocolError::InvalidMultibulkLength => b"invalid multibulk length",
            ProtocolError::InvalidBulkLength => b"invalid bulk length",
            ProtocolError::ExpectedDollar(b) => {
                // Redis formats with %c and then maps CR and LF to spaces.
                let shown = if *b == b'\r' || *b == b'\n' { b' ' } else { *b };
                out.extend_from_slice(b"-ERR Protocol error: expected '$', got '");
                out.push(shown);
                out.extend_from_slice(b"'\r\n");
                return;
            }
            ProtocolError::UnbalancedQuotes => b"unbalanced quotes in request",
            ProtocolError::TooBigInline => b"too big inline request",
            ProtocolError::TooBigMbulkCount => b"too big mbulk count string",
            ProtocolError::TooBigBulkCount => b"too big bulk count string",
            ProtocolError::UnauthenticatedMultibulkLength => b"unauthenticated multibulk length",
            ProtocolError::UnauthenticatedBulkLength => b"unauthenticated bulk length",
        };
        out.extend_from_slice(b"-ERR Protocol error: ");
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    }
}

/// Result of one [`Parser::parse`] call that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed; call again with the same buffer plus what arrives next.
    Incomplete,
    /// A command is complete: read it with [`Parser::args`], then drop `consumed` bytes.
    Command { consumed: usize },
    /// Input that holds no command (empty line, `*0`, `*-1`): drop `consumed` bytes.
    Nothing { consumed: usize },
    /// Part of an oversized request, skipped: drop `consumed` bytes (the parser's offsets
    /// start again at the front of what is left).
    Discard { consumed: usize },
    /// The end of a request with a bulk over [`Limits::max_bulk`] or a total over
    /// [`Limits::max_request`]: drop `consumed` bytes and answer [`value_too_large`].
    Oversized { consumed: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a request.
    Start,
    /// Inside an array, `remaining` bulks to go; `pos` is where the next `$` header starts.
    Array { remaining: usize },
    /// Inside an array, waiting for a bulk body of `len` bytes plus 2 at `pos`.
    Bulk { remaining: usize, len: usize },
    /// Inside an oversized request: `left` bytes of the current bulk (and its CRLF) to skip
    /// from `pos`, then `remaining - 1` more bulks, skipped too.
    Skip { remaining: usize, left: usize },
}

/// Incremental RESP2 request parser; one per connection.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    state: State,
    /// Offset in the caller's buffer where parsing resumes.
    pos: usize,
    /// How far the current line has been scanned without finding its terminator.
    scanned: usize,
    /// Argument ranges of the current command, into the buffer or into `inline`.
    ranges: Vec<Range<usize>>,
    /// Unescaped inline arguments (inline commands only).
    inline: Vec<u8>,
    is_inline: bool,
    /// The current request is oversized: every further bulk of it is skipped.
    oversized: bool,
}

/// The arguments of a parsed command.
#[derive(Clone, Copy, Debug)]
pub struct Args<'a> {
    src: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    /// Arguments as `ranges` of `src` (e.g. a command queued by MULTI).
    pub fn new(src: &'a [u8], ranges: &'a [Range<usize>]) -> Args<'a> {
        Args { src, ranges }
    }

    /// Number of arguments, command name included.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True if there are no arguments (never for a parsed command).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i`, or an empty slice past the end.
    pub fn arg(&self, i: usize) -> &'a [u8] {
        self.ranges
            .get(i)
            .and_then(|r| self.src.get(r.clone()))
            .unwrap_or(&[])
    }

    /// Iterates the arguments.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let src = self.src;
        self.ranges
            .iter()
            .map(move |r| src.get(r.clone()).unwrap_or(&[]))
    }

    /// Copies the arguments (tests and diagnostics).
    pub fn to_vec(&self) -> Vec<Vec<u8>> {
        self.iter().map(|a| a.to_vec()).collect()
    }
}

impl Parser {
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            state: State::Start,
            pos: 0,
            scanned: 0,
            ranges: Vec::new(),
            inline: Vec::new(),
            is_inline: false,
            oversized: false,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Parses the next request from `buf`, which must be the caller's unconsumed input: the
    /// same bytes as on the previous call (if it returned `Incomplete`) plus any new ones.
    /// `auth_required` applies Redis's tighter pre-AUTH bounds.
    pub fn parse(&mut self, buf: &[u8], auth_required: bool) -> Result<Parsed, ProtocolError> {
        loop {
            match self.state {
                State::Start => {
                    self.ranges.clear();
                    self.pos = 0;
                    self.oversized = false;
                    let Some(&first) = buf.first() else {
                        return Ok(Parsed::Incomplete);
                    };
                    if first != b'*' {
                        return self.parse_inline(buf);
                    }
                    let Some(cr) = self.find_line_end(buf, 0, b'\r') else {
                        if buf.len() > self.limits.max_inline {
                            return Err(ProtocolError::TooBigMbulkCount);
                        }
                        return Ok(Parsed::Incomplete);
                    };
                    // The same bound once the line is whole: how the bytes were cut into
                    // reads must not decide whether a request is refused.
                    if cr > self.limits.max_inline {
                        return Err(ProtocolError::TooBigMbulkCount);
                    }
                    // Redis waits for the byte after CR but never checks that it is LF.
                    if cr + 2 > buf.len() {
                        return Ok(Parsed::Incomplete);
                    }
                    let count = match buf.get(1..cr).and_then(string2ll) {
                        Some(n) if n <= i64::from(i32::MAX) => n,
                        _ => return Err(ProtocolError::InvalidMultibulkLength),
                    };
                    if count > UNAUTH_MAX_ARGS && auth_required {
                        return Err(ProtocolError::UnauthenticatedMultibulkLength);
                    }
                    if count <= 0 {
                        self.scanned = 0;
                        return Ok(Parsed::Nothing { consumed: cr + 2 });
                    }
                    let remaining = usize::try_from(count)
                        .ok()
                        .filter(|&n| n <= self.limits.max_args)
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    self.is_inline = false;
                    self.pos = cr + 2;
                    self.scanned = self.pos;
                    self.state = State::Array { remaining };
                }
                State::Array { remaining } => {
                    let start = self.pos;
                    let Some(cr) = self.find_line_end(buf, start, b'\r') else {
                        if buf.len() - start > self.limits.max_inline {
                            return Err(ProtocolError::TooBigBulkCount);
                        }
                        return Ok(Parsed::Incomplete);
                    };
                    if cr - start > self.limits.max_inline {
                        return Err(ProtocolError::TooBigBulkCount);
                    }
                    if cr + 2 > buf.len() {
                        return Ok(Parsed::Incomplete);
                    }
                    let lead = buf.get(start).copied().unwrap_or(0);
                    if lead != b'$' {
                        return Err(ProtocolError::ExpectedDollar(lead));
                    }
                    let len = match buf.get(start + 1..cr).and_then(string2ll) {
                        Some(n) if n >= 0 => n,
                        _ => return Err(ProtocolError::InvalidBulkLength),
                    };
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|&n| n <= PROTO_MAX_BULK)
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    if len as i64 > UNAUTH_MAX_BULK && auth_required {
                        return Err(ProtocolError::UnauthenticatedBulkLength);
                    }
                    let body = cr + 2;
                    self.pos = body;
                    self.oversized |= len > self.limits.max_bulk
                        || body.saturating_add(len).saturating_add(2) > self.limits.max_request;
                    self.state = if self.oversized {
                        // `len` <= PROTO_MAX_BULK: no overflow.
                        State::Skip {
                            remaining,
                            left: len + 2,
                        }
                    } else {
                        State::Bulk { remaining, len }
                    };
                }
                State::Skip { remaining, left } => {
                    let avail = buf.len().saturating_sub(self.pos);
                    if avail < left {
                        // Drop everything held: what arrives next continues the skip.
                        self.state = State::Skip {
                            remaining,
                            left: left - avail,
                        };
                        self.pos = 0;
                        self.scanned = 0;
                        return Ok(match buf.len() {
                            0 => Parsed::Incomplete,
                            n => Parsed::Discard { consumed: n },
                        });
                    }
                    self.pos += left;
                    self.scanned = self.pos;
                    if remaining <= 1 {
                        self.state = State::Start;
                        self.scanned = 0;
                        return Ok(Parsed::Oversized { consumed: self.pos });
                    }
                    self.state = State::Array {
                        remaining: remaining - 1,
                    };
                }
                State::Bulk { remaining, len } => {
                    let end = self.pos + len;
                    // Redis skips the two bytes after a bulk body without checking them.
                    if end + 2 > buf.len() {
                        return Ok(Parsed::Incomplete);
                    }
                    self.ranges.push(self.pos..end);
                    self.pos = end + 2;
                    self.scanned = self.pos;
                    if remaining <= 1 {
                        self.state = State::Start;
                        self.scanned = 0;
                        return Ok(Parsed::Command { consumed: self.pos });
                    }
                    self.state = State::Array {
                        remaining: remaining - 1,
                    };
                }
            }
        }
    }

    /// The arguments of the command the last `parse` returned as complete. `buf` must be the
    /// buffer given to that call.
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> Args<'a> {
        Args {
            src: if self.is_inline { &self.inline } else { buf },
            ranges: &self.ranges,
        }
    }

    /// Finds `term` at or after `from`, resuming where the last scan of this line stopped.
    /// Like Redis's `strchr`, a NUL byte hides everything after it: the line then never ends
    /// (and eventually hits the line-length bound, as in Redis).
    fn find_line_end(&mut self, buf: &[u8], from: usize, term: u8) -> Option<usize> {
        let start = self.scanned.max(from);
        let rest = buf.get(start..)?;
        match rest.iter().position(|&b| b == term || b == 0) {
            Some(i) if rest.get(i) == Some(&term) => Some(start + i),
            Some(_) => {
                // Stuck on a NUL for good: never scan this line again.
                self.scanned = usize::MAX;
                None
            }
            None => {
                self.scanned = buf.len();
                None
            }
        }
    }

    fn parse_inline(&mut self, buf: &[u8]) -> Result<Parsed, ProtocolError> {
        let Some(lf) = self.find_line_end(buf, 0, b'\n') else {
            if buf.len() > self.limits.max_inline {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(Parsed::Incomplete);
        };
        // Refused whole as it would be in pieces (Redis checks only a line still without its
        // newline, so one read of a long line passes there: split-invariance wins here).
        if lf > self.limits.max_inline {
            return Err(ProtocolError::TooBigInline);
        }
        self.scanned = 0;
        let mut line = buf.get(..lf).unwrap_or(&[]);
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        self.inline.clear();
        self.ranges.clear();
        self.is_inline = true;
        split_args(
            line,
            &mut self.inline,
            &mut self.ranges,
            self.limits.max_args,
        )?;
        if self.ranges.is_empty() {
            return Ok(Parsed::Nothing { consumed: lf + 1 });
        }
        Ok(Parsed::Command { consumed: lf + 1 })
    }
}

/// The reply to an [`Parsed::Oversized`] request and to a write whose value would pass the
/// store's `max_value_bytes`: one text, naming the limit.
pub(crate) fn value_too_large(out: &mut Vec<u8>, max_value_bytes: usize) {
    error(
        out,
        format!("ERR value exceeds --max-value-bytes ({max_value_bytes} bytes)").as_bytes(),
    );
}

/// Redis's `sdssplitargs`: splits an inline line into arguments, honouring double quotes
/// (with `\n`, `\r`, `\t`, `\b`, `\a`, `\xHH` escapes) and single quotes (with `\'`). The line
/// holds no NUL (see [`Parser::find_line_end`]). Too many arguments count as a bad multibulk
/// length, as the line is then refused like an oversized array.
fn split_args(
    line: &[u8],
    out: &mut Vec<u8>,
    ranges: &mut Vec<Range<usize>>,
    max_args: usize,
) -> Result<(), ProtocolError> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut p = 0;
    loop {
        while p < line.len() && is_space(at(p)) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(());
        }
        if ranges.len() >= max_args {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        let start = out.len();
        let (mut inq, mut insq) = (false, false);
        loop {
            let c = at(p);
            if inq {
                if c == b'\\' && at(p + 1) == b'x' && hex(at(p + 2)).is_some() {
                    if let (Some(h), Some(l)) = (hex(at(p + 2)), hex(at(p + 3))) {
                        out.push(h * 16 + l);
                        p += 4;
                        continue;
                    }
                }
                if c == b'\\' && p + 1 < line.len() {
                    p += 1;
                    out.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if p + 1 < line.len() && !is_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if p >= line.len() {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    out.push(c);
                }
            } else if insq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    out.push(b'\'');
                } else if c == b'\'' {
                    if p + 1 < line.len() && !is_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if p >= line.len() {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    out.push(c);
                }
            } else {
                match c {
                    _ if p >= line.len() => break,
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        p += 1;
                        break;
                    }
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    other => out.push(other),
                }
            }
            p += 1;
        }
        ranges.push(start..out.len());
    }
}

/// C's `isspace`.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

// Reply encoding. Each appends one reply to `out`; the types RESP3 added (null, map,
// verbatim string) take the connection's [`Protocol`] and fall back to their RESP2 forms.

/// The reply protocol a connection speaks: RESP2 until it sends `HELLO 3`, as in Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// `+text\r\n`. `text` must hold no CR or LF.
pub(crate) fn simple(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'+');
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// `-text\r\n`. `text` (e.g. `ERR syntax error`) must hold no CR or LF.
pub fn error(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'-');
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// `:n\r\n`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `$len\r\nbytes\r\n`.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_decimal(out, bytes.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A missing value: `$-1\r\n` in RESP2, `_\r\n` in RESP3 (Redis's `addReplyNull`).
pub fn null(out: &mut Vec<u8>, proto: Protocol) {
    out.extend_from_slice(match proto {
        Protocol::Resp2 => b"$-1\r\n",
        Protocol::Resp3 => b"_\r\n",
    });
}

/// A missing array (EXEC aborted by WATCH): `*-1\r\n` in RESP2, `_\r\n` in RESP3.
pub(crate) fn null_array(out: &mut Vec<u8>, proto: Protocol) {
    out.extend_from_slice(match proto {
        Protocol::Resp2 => b"*-1\r\n",
        Protocol::Resp3 => b"_\r\n",
    });
}

/// A map of `n` pairs: `%n\r\n` in RESP3, an array of `2n` in RESP2; the caller appends
/// key, value, key, value...
pub(crate) fn map_header(out: &mut Vec<u8>, proto: Protocol, n: usize) {
    match proto {
        Protocol::Resp2 => array_header(out, 2 * n),
        Protocol::Resp3 => {
            out.push(b'%');
            push_decimal(out, n as i64);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Text for a human (INFO, CLIENT INFO): a bulk in RESP2, a `txt` verbatim string in RESP3.
pub fn verbatim(out: &mut Vec<u8>, proto: Protocol, text: &[u8]) {
    match proto {
        Protocol::Resp2 => bulk(out, text),
        Protocol::Resp3 => {
            out.push(b'=');
            push_decimal(out, text.len() as i64 + 4);
            out.extend_from_slice(b"\r\ntxt:");
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// `*n\r\n`; the caller appends `n` replies.
pub(crate) fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n as i64);
    out.extend_from_slice(b"\r\n");
}

/// Bytes [`bulk`] appends for a value of `len` bytes.
pub(crate) fn bulk_size(len: usize) -> usize {
    len + 5 + decimal_len(len as u64)
}

fn decimal_len(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&tmp[i..]);
}

/// The fuzz target's body, shared with the test that replays the seed corpus.
#[doc(hidden)]
pub mod fuzzing {
    use super::{Limits, Parsed, Parser, ProtocolError};
    use crate::engine::store::{self, Store};
    use crate::resp::commands::{self, Client, Env};
    use tandem_core::NodeId;

    /// What one feeding produced: the commands, and the error that ended the input, if any.
    type Run = (Vec<Vec<Vec<u8>>>, Option<ProtocolError>);

    /// Feeds `input` cut at `cuts` (offsets, any order, clamped), executing every command
    /// against a small store. Never panics; returns what was parsed.
    fn feed(input: &[u8], cuts: &[usize], limits: Limits, auth: bool, execute: bool) -> Run {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
        cuts.sort_unstable();
        cuts.push(input.len());
        let mut parser = Parser::new(limits);
        let mut buf = Vec::new();
        let mut cmds = Vec::new();
        let config = commands::CommandConfig {
            requirepass: auth.then(|| b"pw".to_vec()),
            max_reply_bytes: 1 << 16,
            ..commands::CommandConfig::default()
        };
        let mut client = Client::new(1);
        let mut store = Store::new(
            NodeId(1),
            store::Limits {
                max_sessions: 64,
                max_bytes: 1 << 16,
                max_value_bytes: 1 << 12,
                max_tombstones: 64,
                tombstone_ttl_ms: 1000,
            },
        );
        let mut out = Vec::new();
        let mut last = 0;
        for cut in cuts {
            buf.extend_from_slice(input.get(last..cut).unwrap_or(&[]));
            last = cut;
            loop {
                match parser.parse(&buf, client.auth_required(&config)) {
                    Ok(Parsed::Incomplete) => break,
                    Ok(Parsed::Nothing { consumed } | Parsed::Discard { consumed }) => {
                        buf.drain(..consumed);
                    }
                    Ok(Parsed::Oversized { consumed }) => {
                        // Recorded as an empty command: every feeding must see it too.
                        cmds.push(Vec::new());
                        buf.drain(..consumed);
                    }
                    Ok(Parsed::Command { consumed }) => {
                        let args = parser.args(&buf);
                        assert!(!args.is_empty());
                        cmds.push(args.to_vec());
                        if execute {
                            let env = Env {
                                config: &config,
                                now_ms: 1_000_000 + cmds.len() as u64 * 100,
                                isolated: cmds.len() % 7 == 3,
                                connected_clients: 1,
                                info_extra: "",
                            };
                            out.clear();
                            commands::execute(&args, &mut client, &mut store, &env, &mut out);
                            store.sweep(env.now_ms, 8);
                        }
                        assert!(consumed <= buf.len());
                        buf.drain(..consumed);
                    }
                    Err(e) => return (cmds, Some(e)),
                }
                // Bounded input: never more than one request plus what was just appended.
                assert!(buf.len() <= limits.max_request.max(limits.max_inline + 2) + input.len());
            }
        }
        (cmds, None)
    }

    /// Parses `data` whole and cut at points derived from its first byte, and checks that both
    /// give the same commands and the same error; executes the commands too.
    pub fn check(data: &[u8]) {
        let Some((&seed, input)) = data.split_first() else {
            return;
        };
        let limits = Limits {
            max_args: 64,
            max_bulk: 4096,
            max_inline: 1024,
            max_request: 16 * 1024,
        };
        let auth = seed & 0x80 != 0;
        let whole = feed(input, &[], limits, false, false);
        // xorshift-derived cut points: every feeding must agree with the whole one.
        let mut x = u32::from(seed) | 0x100;
        let mut cuts = Vec::new();
        for _ in 0..(seed % 16) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            cuts.push(x as usize % (input.len() + 1));
        }
        let split = feed(input, &cuts, limits, false, false);
        assert_eq!(whole, split, "split at {cuts:?} changed the parse");
        let bytewise: Vec<usize> = (0..input.len().min(512)).collect();
        if input.len() <= 512 {
            assert_eq!(whole, feed(input, &bytewise, limits, false, false));
        }
        feed(input, &cuts, limits, auth, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Outcome = Result<Vec<Vec<Vec<u8>>>, (Vec<Vec<Vec<u8>>>, ProtocolError)>;

    /// Feeds `input` in pieces cut at `cuts`, the way a connection does; returns the commands
    /// (or the commands before the error, and the error).
    fn feed(limits: Limits, input: &[u8], cuts: &[usize]) -> Outcome {
        let mut parser = Parser::new(limits);
        let mut buf = Vec::new();
        let mut cmds = Vec::new();
        let mut last = 0;
        let mut points: Vec<usize> = cuts.to_vec();
        points.push(input.len());
        for &cut in &points {
            buf.extend_from_slice(&input[last..cut]);
            last = cut;
            loop {
                match parser.parse(&buf, false) {
                    Ok(Parsed::Incomplete) => break,
                    Ok(Parsed::Command { consumed }) => {
                        cmds.push(parser.args(&buf).to_vec());
                        buf.drain(..consumed);
                    }
                    Ok(Parsed::Nothing { consumed } | Parsed::Discard { consumed }) => {
                        buf.drain(..consumed);
                    }
                    Ok(Parsed::Oversized { consumed }) => {
                        cmds.push(v(&["<oversized>"]));
                        buf.drain(..consumed);
                    }
                    Err(e) => return Err((cmds, e)),
                }
            }
        }
        Ok(cmds)
    }

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn every_split_point_gives_the_same_commands() {
        let input: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nPING\r\n*0\r\n\
            \r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\necho \"a\\x41 b\" 'c\\'d'\n*1\r\n$0\r\n\r\n";
        let whole = feed(Limits::default(), input, &[]).expect("valid input");
        assert_eq!(
            whole,
            vec![
                v(&["SET", "k", "hello"]),
                v(&["PING"]),
                v(&["GET", "k"]),
                v(&["echo", "aA b", "c'd"]),
                v(&[""]),
            ]
        );
        for i in 0..=input.len() {
            for j in i..=input.len() {
                assert_eq!(feed(Limits::default(), input, &[i, j]), Ok(whole.clone()));
            }
        }
        // Byte by byte.
        let cuts: Vec<usize> = (1..input.len()).collect();
        assert_eq!(feed(Limits::default(), input, &cuts), Ok(whole));
    }

    #[test]
    fn errors_match_redis_text() {
        let cases: &[(&[u8], &[u8])] = &[
            (
                b"*1\r\nx4\r\nPING\r\n",
                b"-ERR Protocol error: expected '$', got 'x'\r\n",
            ),
            (
                b"*1\r\n\r\r\n",
                b"-ERR Protocol error: expected '$', got ' '\r\n",
            ),
            (
                b"*1\r\n$-5\r\n",
                b"-ERR Protocol error: invalid bulk length\r\n",
            ),
            (
                b"*1\r\n$+4\r\n",
                b"-ERR Protocol error: invalid bulk length\r\n",
            ),
            (
                b"*1\r\n$\r\n",
                b"-ERR Protocol error: invalid bulk length\r\n",
            ),
            (
                b"*abc\r\n",
                b"-ERR Protocol error: invalid multibulk length\r\n",
            ),
            (
                b"*01\r\n",
                b"-ERR Protocol error: invalid multibulk length\r\n",
            ),
            (
                b"*1 \r\n",
                b"-ERR Protocol error: invalid multibulk length\r\n",
            ),
            (
                b"*9999999999\r\n",
                b"-ERR Protocol error: invalid multibulk length\r\n",
            ),
            (
                b"set \"a b\r\n",
                b"-ERR Protocol error: unbalanced quotes in request\r\n",
            ),
            (
                b"set 'a\r\n",
                b"-ERR Protocol error: unbalanced quotes in request\r\n",
            ),
            (
                b"set \"a\"b c\r\n",
                b"-ERR Protocol error: unbalanced quotes in request\r\n",
            ),
        ];
        for (input, reply) in cases {
            let err = feed(Limits::default(), input, &[])
                .expect_err("must fail")
                .1;
            let mut out = Vec::new();
            err.encode_reply(&mut out);
            assert_eq!(out, reply.to_vec(), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn bounds_are_refused() {
        let limits = Limits {
            max_args: 3,
            max_bulk: 8,
            max_inline: 32,
            max_request: 40,
        };
        let e = |input: &[u8]| feed(limits, input, &[]).expect_err("must fail").1;
        assert_eq!(e(b"*4\r\n"), ProtocolError::InvalidMultibulkLength);
        assert_eq!(e(b"a b c d\r\n"), ProtocolError::InvalidMultibulkLength);
        assert_eq!(e(&[b'a'; 33]), ProtocolError::TooBigInline);
        assert_eq!(e(&[b'*'; 33]), ProtocolError::TooBigMbulkCount);
        let mut long = b"*1\r\n".to_vec();
        long.extend_from_slice(&[b'$'; 40]);
        assert_eq!(e(&long), ProtocolError::TooBigBulkCount);
        // A line over the bound is refused the same whether its end came in the same read or
        // a later one (the RESP fuzzer found a whole 1,427-byte inline line accepted where
        // the same bytes in pieces were refused).
        for (line, err) in [
            (
                [&[b'a'; 40][..], b"\r\n"].concat(),
                ProtocolError::TooBigInline,
            ),
            (
                [&b"*1"[..], &[b'0'; 38], b"\r\n"].concat(),
                ProtocolError::TooBigMbulkCount,
            ),
            (
                [&b"*1\r\n$"[..], &[b'0'; 38], b"\r\n"].concat(),
                ProtocolError::TooBigBulkCount,
            ),
        ] {
            assert_eq!(e(&line), err, "whole: {line:?}");
            assert_eq!(feed(limits, &line, &[20]).expect_err("must fail").1, err);
        }
        // Within bounds, the same shapes parse.
        assert_eq!(
            feed(
                limits,
                b"*3\r\n$8\r\n12345678\r\n$1\r\na\r\n$0\r\n\r\n",
                &[]
            ),
            Ok(vec![v(&["12345678", "a", ""])])
        );
        // A huge announced length allocates nothing and is refused at once; so is one just
        // past Redis's proto-max-bulk-len.
        assert_eq!(
            e(b"*1\r\n$9223372036854775807\r\n"),
            ProtocolError::InvalidBulkLength
        );
        assert_eq!(e(b"*1\r\n$536870913\r\n"), ProtocolError::InvalidBulkLength);
    }

    #[test]
    fn oversized_requests_are_skipped_and_the_connection_goes_on() {
        let limits = Limits {
            max_args: 4,
            max_bulk: 8,
            max_inline: 32,
            max_request: 40,
        };
        // A bulk over max_bulk; then three bulks within it whose total passes max_request
        // (an HSET whose fields together are too large); each followed by a good command.
        let input: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$12\r\n123456789abc\r\nPING\r\n\
            *4\r\n$8\r\n12345678\r\n$8\r\n12345678\r\n$8\r\n12345678\r\n$1\r\nx\r\n\
            *2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let want = vec![
            v(&["<oversized>"]),
            v(&["PING"]),
            v(&["<oversized>"]),
            v(&["GET", "k"]),
        ];
        for i in 0..=input.len() {
            assert_eq!(feed(limits, input, &[i]), Ok(want.clone()), "cut at {i}");
        }
        let cuts: Vec<usize> = (1..input.len()).collect();
        assert_eq!(feed(limits, input, &cuts), Ok(want));
        // Skipped bytes are dropped as they arrive: the buffer never holds the large bulk.
        let mut p = Parser::new(limits);
        assert_eq!(
            p.parse(b"*2\r\n$3\r\nSET\r\n$1000\r\nxxxx", false),
            Ok(Parsed::Discard { consumed: 24 })
        );
        assert_eq!(p.parse(b"", false), Ok(Parsed::Incomplete));
        assert_eq!(
            p.parse(&[b'x'; 500], false),
            Ok(Parsed::Discard { consumed: 500 })
        );
        let mut tail = vec![b'x'; 496];
        tail.extend_from_slice(b"\r\nPING\r\n");
        assert_eq!(
            p.parse(&tail, false),
            Ok(Parsed::Oversized { consumed: 498 })
        );
    }

    #[test]
    fn unauthenticated_bounds() {
        let mut p = Parser::new(Limits::default());
        assert_eq!(
            p.parse(b"*11\r\n", true),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        let mut p = Parser::new(Limits::default());
        assert_eq!(
            p.parse(b"*1\r\n$16385\r\n", true),
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
    }

    #[test]
    fn nul_hides_the_line_end_like_redis() {
        let limits = Limits {
            max_inline: 16,
            ..Limits::default()
        };
        assert_eq!(feed(limits, b"ping\0x\r\n", &[]), Ok(vec![]));
        let mut input = b"ping\0x\r\n".to_vec();
        input.extend_from_slice(&[b'a'; 20]);
        assert_eq!(
            feed(limits, &input, &[3, 9]).expect_err("must fail").1,
            ProtocolError::TooBigInline
        );
    }

    #[test]
    fn reply_encoding() {
        let mut out = Vec::new();
        simple(&mut out, b"OK");
        error(&mut out, b"ERR x");
        integer(&mut out, -12);
        bulk(&mut out, b"abc");
        null(&mut out, Protocol::Resp2);
        array_header(&mut out, 2);
        null_array(&mut out, Protocol::Resp2);
        map_header(&mut out, Protocol::Resp2, 2);
        verbatim(&mut out, Protocol::Resp2, b"a:1");
        assert_eq!(
            out,
            b"+OK\r\n-ERR x\r\n:-12\r\n$3\r\nabc\r\n$-1\r\n*2\r\n*-1\r\n*4\r\n$3\r\na:1\r\n"
                .to_vec()
        );
        let mut out = Vec::new();
        null(&mut out, Protocol::Resp3);
        null_array(&mut out, Protocol::Resp3);
        map_header(&mut out, Protocol::Resp3, 2);
        verbatim(&mut out, Protocol::Resp3, b"a:1");
        assert_eq!(out, b"_\r\n_\r\n%2\r\n=7\r\ntxt:a:1\r\n".to_vec());
        for n in [0usize, 9, 10, 99, 100, 123456] {
            let mut o = Vec::new();
            bulk(&mut o, &vec![0; n]);
            assert_eq!(o.len(), bulk_size(n));
        }
    }
}
