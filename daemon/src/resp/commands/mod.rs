//! Command execution: the RESP2 subset session clients use, answering as Redis 7 does.
//!
//! [`execute`] runs one parsed command against the [`Store`] and appends its reply to `out`.
//! Checks run in Redis's order: unknown command, arity, authentication, then (for writes) the
//! isolation gate, then the command's own argument checks. A write that changed the store
//! returns [`Outcome::Write`] with the records to replicate; the caller decides whether the
//! reply (already in `out`) is sent now or held until replication completes.
//!
//! The commands are written by family, one module each: `strings`, `hashes`, `counters`,
//! `keys` (keys and expiry), `transactions` (EXEC and scripts) and `server` (server and
//! connection commands). This module holds what they share: the command table, the checks in
//! Redis's order, the dispatch, MULTI/WATCH bookkeeping and the error replies.
//!
//! Replies and error texts match Redis 7.0 byte for byte (checked by
//! `tests/resp_differential.rs` against a real redis-server), except where tandem differs on
//! purpose:
//! - `SELECT n` for n != 0 gets `-ERR DB index is out of range` (there is one database);
//! - writes on an isolated node get [`ISOLATED_ERROR`]; a write over the memory bounds gets
//!   Redis's `-OOM` text; a key above [`CommandConfig::max_key_bytes`] gets an `-ERR ... exceeds
//!   maximum allowed size` error, a value above the store's `max_value_bytes` gets
//!   [`resp::value_too_large`]'s (as does a request the parser skipped as oversized);
//! - `INFO` describes tandem (with the `role:master` and `redis_version` lines clients need);
//! - `HELLO 3` switches the connection to RESP3, whose reply types are used where Redis 7.0
//!   uses them: `_` for a missing value, maps for HELLO, HGETALL and CONFIG GET, verbatim
//!   strings for INFO and CLIENT INFO|LIST (the others are the same in both protocols);
//! - `CONFIG GET` answers for a few parameters tools ask about (`save`, `appendonly`,
//!   `maxmemory` = `--max-bytes`, `maxmemory-policy` = `noeviction`, `databases` = 1, `port`,
//!   `timeout`); `CONFIG SET` is refused: tandem is configured by its flags at start.
//!
//! - `MULTI` queues at most [`MAX_MULTI_COMMANDS`] commands and [`MAX_MULTI_BYTES`] of
//!   arguments (then the transaction fails with EXECABORT); `WATCH` takes at most
//!   [`MAX_WATCHED_KEYS`] keys per connection;
//! - `INCR` and friends on a key, and `HINCRBY` on a hash field, are convergent counters
//!   (see [`crate::engine::value`]).
//!
//! Panics: never, whatever the arguments.

use crate::engine::store::{Replicate, Revision, Store, StoreError};
use crate::engine::value::string2ll;
use crate::resp::scripts;
use crate::resp::{self, Args};

mod counters;
mod hashes;
mod keys;
mod server;
mod strings;
mod transactions;

/// Reply to a write on a node without quorum. `READONLY` makes client libraries raise their
/// read-only error (redis-py `ReadOnlyError`), which is what a write refusal is.
pub(crate) const ISOLATED_ERROR: &[u8] =
    b"READONLY tandem node is isolated from its cluster (no quorum); writes are refused";
const OOM_ERROR: &[u8] = b"OOM command not allowed when used memory > 'maxmemory'.";
const WRONGTYPE: &[u8] = b"WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INTEGER: &[u8] = b"ERR value is not an integer or out of range";
const OVERFLOW: &[u8] = b"ERR increment or decrement would overflow";
const HASH_NOT_INTEGER: &[u8] = b"ERR hash value is not an integer";
const SYNTAX: &[u8] = b"ERR syntax error";
const NOAUTH: &[u8] = b"NOAUTH Authentication required.";
/// The Redis version INFO and HELLO report: the command set and replies follow Redis 7.0.
const REDIS_VERSION: &str = "7.0.0";
const WRONGPASS: &[u8] = b"WRONGPASS invalid username-password pair or user is disabled.";

/// Command settings from the daemon's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandConfig {
    /// `--requirepass`: commands before a successful AUTH get `-NOAUTH`.
    pub requirepass: Option<Vec<u8>>,
    /// Longest key a write accepts (the wire format's `MAX_KEY_LEN`).
    pub max_key_bytes: usize,
    /// A reply larger than this (e.g. a huge MGET) closes the connection instead.
    pub max_reply_bytes: usize,
    /// Shown in INFO.
    pub tcp_port: u16,
    /// `--client-timeout` in seconds (CONFIG GET timeout).
    pub client_timeout: u64,
    /// When the server started (INFO's uptime).
    pub started: std::time::Instant,
}

impl Default for CommandConfig {
    fn default() -> CommandConfig {
        CommandConfig {
            requirepass: None,
            max_key_bytes: tandem_core::frame::MAX_KEY_LEN,
            max_reply_bytes: 64 << 20,
            tcp_port: 6379,
            client_timeout: 0,
            started: std::time::Instant::now(),
        }
    }
}

/// What the caller knows that commands need.
#[derive(Clone, Copy, Debug)]
pub struct Env<'a> {
    pub config: &'a CommandConfig,
    /// Unix milliseconds.
    pub now_ms: u64,
    /// True while the node has no quorum: writes get [`ISOLATED_ERROR`].
    pub isolated: bool,
    /// Shown in INFO.
    pub connected_clients: usize,
    /// Extra `name:value` lines for INFO's `# Tandem` section (node id, role, peers...).
    pub info_extra: &'a str,
}

/// Failed AUTH attempts one connection may make: the next failure closes it, so guessing
/// passwords costs a TCP connection per few guesses instead of a round trip each (and the
/// RESP server pauses a connection after each failure, `resp_server::auth_delay_ms`).
pub(crate) const MAX_AUTH_FAILURES: u32 = 5;

/// Per-connection state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    pub id: u64,
    pub authenticated: bool,
    pub name: Option<Vec<u8>>,
    /// Failed AUTH (and HELLO AUTH) attempts so far.
    pub auth_failures: u32,
    /// Inside MULTI: the commands queued for EXEC.
    pub multi: Option<Multi>,
    /// The reply protocol, set by `HELLO 2|3`.
    pub protocol: resp::Protocol,
    /// WATCHed keys and what each was at WATCH time ([`Store::revision`]); EXEC aborts if
    /// any changed. At most [`MAX_WATCHED_KEYS`].
    pub watched: Vec<(Vec<u8>, Revision)>,
}

/// Keys one connection may WATCH at once (a client cannot grow the list without limit).
pub(crate) const MAX_WATCHED_KEYS: usize = 10_000;

/// A transaction being queued (MULTI ... EXEC).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Multi {
    /// Each command's arguments, copied: (bytes, argument ranges into them).
    queued: Vec<(Vec<u8>, Vec<std::ops::Range<usize>>)>,
    bytes: usize,
    /// A command was refused while queuing: EXEC answers EXECABORT.
    failed: bool,
}

/// Bounds of one transaction's queue (a client cannot grow it without limit).
pub(crate) const MAX_MULTI_COMMANDS: usize = 100_000;
pub(crate) const MAX_MULTI_BYTES: usize = 64 << 20;

impl Client {
    pub fn new(id: u64) -> Client {
        Client {
            id,
            ..Client::default()
        }
    }

    /// True if the next command must be AUTH (Redis's `authRequired`).
    pub(crate) fn auth_required(&self, config: &CommandConfig) -> bool {
        config.requirepass.is_some() && !self.authenticated
    }
}

/// What the caller does after [`execute`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send the reply.
    Reply,
    /// The store changed: replicate these records (never empty), then send the reply.
    Write(Vec<Replicate>),
    /// Send the reply, then close (QUIT).
    Quit,
    /// Close without sending the reply (it would exceed `max_reply_bytes`).
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Ping,
    Echo,
    Quit,
    Auth,
    Hello,
    Config,
    Select,
    Client,
    Info,
    Get,
    Set,
    SetEx,
    PSetEx,
    Del,
    Exists,
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
    Persist,
    Ttl,
    PTtl,
    MGet,
    Scan,
    DbSize,
    HSet,
    HGet,
    HGetAll,
    HDel,
    Multi,
    Exec,
    Discard,
    HMSet,
    HMGet,
    HLen,
    HExists,
    HKeys,
    HVals,
    HIncrBy,
    HSetNx,
    Incr,
    Decr,
    IncrBy,
    DecrBy,
    SetNx,
    GetSet,
    GetDel,
    GetEx,
    Unlink,
    Touch,
    Type,
    Keys,
    ExpireTime,
    PExpireTime,
    Eval,
    EvalSha,
    Script,
    Watch,
    Unwatch,
}

struct Spec {
    cmd: Cmd,
    name: &'static str,
    /// Redis arity: n > 0 exactly n arguments, n < 0 at least -n (name included).
    arity: i32,
    write: bool,
    /// Allowed before AUTH.
    no_auth: bool,
}

const fn spec(cmd: Cmd, name: &'static str, arity: i32, write: bool, no_auth: bool) -> Spec {
    Spec {
        cmd,
        name,
        arity,
        write,
        no_auth,
    }
}

const COMMANDS: &[Spec] = &[
    spec(Cmd::Get, "get", 2, false, false),
    spec(Cmd::Set, "set", -3, true, false),
    spec(Cmd::Ping, "ping", -1, false, false),
    spec(Cmd::Echo, "echo", 2, false, false),
    spec(Cmd::Quit, "quit", -1, false, true),
    spec(Cmd::Auth, "auth", -2, false, true),
    spec(Cmd::Hello, "hello", -1, false, true),
    spec(Cmd::Config, "config", -2, false, false),
    spec(Cmd::Select, "select", 2, false, false),
    spec(Cmd::Client, "client", -2, false, false),
    spec(Cmd::Info, "info", -1, false, false),
    spec(Cmd::SetEx, "setex", 4, true, false),
    spec(Cmd::PSetEx, "psetex", 4, true, false),
    spec(Cmd::Del, "del", -2, true, false),
    spec(Cmd::Exists, "exists", -2, false, false),
    spec(Cmd::Expire, "expire", -3, true, false),
    spec(Cmd::PExpire, "pexpire", -3, true, false),
    spec(Cmd::ExpireAt, "expireat", -3, true, false),
    spec(Cmd::PExpireAt, "pexpireat", -3, true, false),
    spec(Cmd::Persist, "persist", 2, true, false),
    spec(Cmd::Ttl, "ttl", 2, false, false),
    spec(Cmd::PTtl, "pttl", 2, false, false),
    spec(Cmd::MGet, "mget", -2, false, false),
    spec(Cmd::Scan, "scan", -2, false, false),
    spec(Cmd::DbSize, "dbsize", 1, false, false),
    spec(Cmd::HSet, "hset", -4, true, false),
    spec(Cmd::HGet, "hget", 3, false, false),
    spec(Cmd::HGetAll, "hgetall", 2, false, false),
    spec(Cmd::HDel, "hdel", -3, true, false),
    spec(Cmd::Multi, "multi", 1, false, false),
    spec(Cmd::Exec, "exec", 1, false, false),
    spec(Cmd::Discard, "discard", 1, false, false),
    spec(Cmd::HMSet, "hmset", -4, true, false),
    spec(Cmd::HMGet, "hmget", -3, false, false),
    spec(Cmd::HLen, "hlen", 2, false, false),
    spec(Cmd::HExists, "hexists", 3, false, false),
    spec(Cmd::HKeys, "hkeys", 2, false, false),
    spec(Cmd::HVals, "hvals", 2, false, false),
    spec(Cmd::HIncrBy, "hincrby", 4, true, false),
    spec(Cmd::HSetNx, "hsetnx", 4, true, false),
    spec(Cmd::Incr, "incr", 2, true, false),
    spec(Cmd::Decr, "decr", 2, true, false),
    spec(Cmd::IncrBy, "incrby", 3, true, false),
    spec(Cmd::DecrBy, "decrby", 3, true, false),
    spec(Cmd::SetNx, "setnx", 3, true, false),
    spec(Cmd::GetSet, "getset", 3, true, false),
    spec(Cmd::GetDel, "getdel", 2, true, false),
    spec(Cmd::GetEx, "getex", -2, true, false),
    spec(Cmd::Unlink, "unlink", -2, true, false),
    spec(Cmd::Touch, "touch", -2, false, false),
    spec(Cmd::Type, "type", 2, false, false),
    spec(Cmd::Keys, "keys", 2, false, false),
    spec(Cmd::ExpireTime, "expiretime", 2, false, false),
    spec(Cmd::PExpireTime, "pexpiretime", 2, false, false),
    spec(Cmd::Eval, "eval", -3, true, false),
    spec(Cmd::EvalSha, "evalsha", -3, true, false),
    spec(Cmd::Script, "script", -2, false, false),
    spec(Cmd::Watch, "watch", -2, false, false),
    spec(Cmd::Unwatch, "unwatch", 1, false, false),
];

fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// The bytes of a C string view of `arg`: Redis compares options with `strcasecmp`, which
/// stops at the first NUL.
fn cstr(arg: &[u8]) -> &[u8] {
    match arg.iter().position(|&b| b == 0) {
        Some(i) => arg.get(..i).unwrap_or(arg),
        None => arg,
    }
}

fn is(arg: &[u8], word: &str) -> bool {
    cstr(arg).eq_ignore_ascii_case(word.as_bytes())
}

/// Runs one command. `args` is never empty (the parser yields no empty commands).
pub fn execute(
    args: &Args<'_>,
    client: &mut Client,
    store: &mut Store,
    env: &Env<'_>,
    out: &mut Vec<u8>,
) -> Outcome {
    // A command refused before it runs also dooms the transaction being queued.
    let refuse = |client: &mut Client| {
        if let Some(m) = &mut client.multi {
            m.failed = true;
        }
        Outcome::Reply
    };
    let Some(spec) = lookup(args.arg(0)) else {
        unknown_command(args, out);
        return refuse(client);
    };
    let argc = args.len();
    let arity_ok = if spec.arity > 0 {
        argc == spec.arity as usize
    } else {
        argc >= spec.arity.unsigned_abs() as usize
    };
    if !arity_ok {
        arity_error(spec.name, out);
        return refuse(client);
    }
    if client.auth_required(env.config) && !spec.no_auth {
        resp::error(out, NOAUTH);
        return refuse(client);
    }
    if spec.write && env.isolated {
        resp::error(out, ISOLATED_ERROR);
        return refuse(client);
    }
    match (spec.cmd, &mut client.multi) {
        (Cmd::Exec, Some(_)) => return transactions::exec(client, store, env, out),
        (Cmd::Exec, None) => resp::error(out, b"ERR EXEC without MULTI"),
        (Cmd::Discard, Some(_)) => {
            client.multi = None;
            client.watched.clear();
            resp::simple(out, b"OK");
        }
        (Cmd::Discard, None) => resp::error(out, b"ERR DISCARD without MULTI"),
        (Cmd::Multi, Some(_)) => resp::error(out, b"ERR MULTI calls can not be nested"),
        (Cmd::Multi, None) => {
            client.multi = Some(Multi::default());
            resp::simple(out, b"OK");
        }
        // Not queued, and the transaction goes on (Redis's answer).
        (Cmd::Watch, Some(_)) => resp::error(out, b"ERR WATCH inside MULTI is not allowed"),
        (Cmd::Watch, None) => {
            let now = env.now_ms;
            for key in args.iter().skip(1) {
                if client.watched.iter().any(|(k, _)| k == key) {
                    continue;
                }
                if client.watched.len() >= MAX_WATCHED_KEYS {
                    resp::error(out, b"ERR too many watched keys (tandem bounds WATCH)");
                    return Outcome::Reply;
                }
                client
                    .watched
                    .push((key.to_vec(), store.revision(key, now)));
            }
            resp::simple(out, b"OK");
        }
        // QUIT is not queued.
        (Cmd::Quit, _) | (_, None) => return execute_one(spec, args, client, store, env, out),
        (_, Some(m)) => {
            let len: usize = args.iter().map(<[u8]>::len).sum();
            if m.queued.len() >= MAX_MULTI_COMMANDS || m.bytes.saturating_add(len) > MAX_MULTI_BYTES
            {
                resp::error(
                    out,
                    b"ERR transaction too large (tandem bounds a MULTI's queue)",
                );
                return refuse(client);
            }
            let mut src = Vec::with_capacity(len);
            let mut ranges = Vec::with_capacity(args.len());
            for a in args.iter() {
                ranges.push(src.len()..src.len() + a.len());
                src.extend_from_slice(a);
            }
            m.bytes += len;
            m.queued.push((src, ranges));
            resp::simple(out, b"QUEUED");
        }
    }
    Outcome::Reply
}

/// Runs one command whose arity, authentication and isolation checks passed.
fn execute_one(
    spec: &Spec,
    args: &Args<'_>,
    client: &mut Client,
    store: &mut Store,
    env: &Env<'_>,
    out: &mut Vec<u8>,
) -> Outcome {
    let mut ex = Exec {
        args,
        store,
        env,
        out,
        proto: client.protocol,
        writes: Vec::new(),
    };
    let outcome = match spec.cmd {
        Cmd::Ping => ex.ping(),
        Cmd::Echo => {
            resp::bulk(ex.out, args.arg(1));
            Outcome::Reply
        }
        Cmd::Quit => {
            resp::simple(ex.out, b"OK");
            Outcome::Quit
        }
        Cmd::Auth => ex.auth(client),
        Cmd::Select => ex.select(),
        Cmd::Client => ex.client(client),
        Cmd::Hello => ex.hello(client),
        Cmd::Config => ex.config(),
        Cmd::Info => ex.info(),
        Cmd::Get => ex.get(),
        Cmd::Set => ex.set(),
        Cmd::SetEx => ex.setex(1000, "setex"),
        Cmd::PSetEx => ex.setex(1, "psetex"),
        Cmd::Del => ex.del(),
        Cmd::Exists => ex.exists(),
        Cmd::Expire => ex.expire(1000, false, "expire"),
        Cmd::PExpire => ex.expire(1, false, "pexpire"),
        Cmd::ExpireAt => ex.expire(1000, true, "expireat"),
        Cmd::PExpireAt => ex.expire(1, true, "pexpireat"),
        Cmd::Persist => ex.persist(),
        Cmd::Ttl => ex.ttl(1000),
        Cmd::PTtl => ex.ttl(1),
        Cmd::MGet => ex.mget(),
        Cmd::Scan => ex.scan(),
        Cmd::DbSize => {
            resp::integer(ex.out, ex.store.len() as i64);
            Outcome::Reply
        }
        Cmd::HSet => ex.hset("hset"),
        Cmd::HGet => ex.hget(),
        Cmd::HGetAll => ex.hgetall(),
        Cmd::HDel => ex.hdel(),
        // Handled by `execute` before it gets here.
        Cmd::Multi | Cmd::Exec | Cmd::Discard | Cmd::Watch => Outcome::Reply,
        Cmd::Unwatch => {
            client.watched.clear();
            resp::simple(ex.out, b"OK");
            Outcome::Reply
        }
        Cmd::HMSet => ex.hset("hmset"),
        Cmd::HMGet => ex.hmget(),
        Cmd::HLen => ex.hash_read(|h, out, _| resp::integer(out, h.hash_fields().count() as i64)),
        Cmd::HExists => {
            let field = args.arg(2);
            ex.hash_read(|h, out, _| resp::integer(out, i64::from(h.hash_field(field).is_some())))
        }
        Cmd::HKeys => ex.hash_list(true, false),
        Cmd::HVals => ex.hash_list(false, true),
        Cmd::HIncrBy => ex.hincrby(),
        Cmd::HSetNx => ex.hsetnx(),
        Cmd::Incr => ex.incr(Some(1)),
        Cmd::Decr => ex.incr(Some(-1)),
        Cmd::IncrBy => ex.incr(None),
        Cmd::DecrBy => ex.decrby(),
        Cmd::SetNx => ex.setnx(),
        Cmd::GetSet => ex.getset(),
        Cmd::GetDel => ex.getdel(),
        Cmd::GetEx => ex.getex(),
        Cmd::Unlink => ex.del(),
        Cmd::Touch => ex.exists(),
        Cmd::Type => ex.type_of(),
        Cmd::Keys => ex.keys(),
        Cmd::ExpireTime => ex.expiretime(false),
        Cmd::PExpireTime => ex.expiretime(true),
        Cmd::Eval => ex.eval(false),
        Cmd::EvalSha => ex.eval(true),
        Cmd::Script => ex.script(),
    };
    if outcome == Outcome::Reply && !ex.writes.is_empty() {
        return Outcome::Write(ex.writes);
    }
    outcome
}

/// `-ERR unknown command 'name', with args beginning with: 'a' 'b' `, truncated as Redis
/// does (`%.128s` of C strings, args while the list is under 128 bytes), CR/LF as spaces.
fn unknown_command(args: &Args<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"-ERR unknown command '");
    let name = cstr(args.arg(0));
    out.extend_from_slice(name.get(..128).unwrap_or(name));
    out.extend_from_slice(b"', with args beginning with: ");
    let mut listed = 0usize;
    for arg in args.iter().skip(1) {
        if listed >= 128 {
            break;
        }
        let a = cstr(arg);
        let room = 128 - listed;
        let a = a.get(..room).unwrap_or(a);
        out.push(b'\'');
        out.extend_from_slice(a);
        out.extend_from_slice(b"' ");
        listed += a.len() + 3;
    }
    sanitize_crlf(out, start + 1);
    out.extend_from_slice(b"\r\n");
}

/// An error reply whose text may hold client bytes: CR and LF become spaces, as in Redis.
fn error_sanitized(out: &mut Vec<u8>, text: &[u8]) {
    let start = out.len();
    out.push(b'-');
    out.extend_from_slice(text);
    sanitize_crlf(out, start);
    out.extend_from_slice(b"\r\n");
}

fn sanitize_crlf(out: &mut [u8], from: usize) {
    for b in out.iter_mut().skip(from) {
        if *b == b'\r' || *b == b'\n' {
            *b = b' ';
        }
    }
}

const BAD_CLIENT_NAME: &[u8] =
    b"ERR Client names cannot contain spaces, newlines or special characters.";

/// Redis's `validateClientName`: printable ASCII without spaces (CLIENT SETNAME, HELLO).
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// `-ERR unknown subcommand 'x'. Try CMD HELP.`, the client's bytes cut as Redis cuts them.
fn unknown_subcommand(out: &mut Vec<u8>, sub: &[u8], command: &str) {
    let sub = cstr(sub);
    let mut text = b"ERR unknown subcommand '".to_vec();
    text.extend_from_slice(sub.get(..128).unwrap_or(sub));
    text.extend_from_slice(format!("'. Try {command} HELP.").as_bytes());
    error_sanitized(out, &text);
}

/// The error for a script tandem does not know: says why and names it by SHA1, so that an
/// operator can look it up (README, "Scripts").
fn unknown_script(body: &[u8]) -> Vec<u8> {
    let mut text =
        b"ERR tandem runs no Lua, only the scripts README lists; this one's SHA1 is ".to_vec();
    text.extend_from_slice(&scripts::sha1_hex(body));
    text
}

fn arity_error(name: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"-ERR wrong number of arguments for '");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"' command\r\n");
}

fn expire_time_error(name: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"-ERR invalid expire time in '");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"' command\r\n");
}

fn store_error(e: StoreError, max_value_bytes: usize, out: &mut Vec<u8>) {
    match e {
        StoreError::OutOfMemory => resp::error(out, OOM_ERROR),
        StoreError::ValueTooLarge | StoreError::Malformed => {
            resp::value_too_large(out, max_value_bytes)
        }
    }
}

/// Redis's `stringmatchlen`: glob with `*`, `?`, `[...]` (ranges, `^` negation) and `\`
/// escapes. Recursion depth is bounded by the number of `*` in the pattern, which is bounded
/// by the argument size; Redis bounds it too, so skip runs of `*` and iterate.
pub(crate) fn glob_match(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    fn eq(a: u8, b: u8, nocase: bool) -> bool {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    }
    // Iterative matcher with single-star backtracking (equivalent for glob semantics).
    let (mut p, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < string.len() {
        let c = string.get(s).copied().unwrap_or(0);
        let matched = match pattern.get(p) {
            Some(b'*') => {
                while pattern.get(p) == Some(&b'*') {
                    p += 1;
                }
                if p >= pattern.len() {
                    return true;
                }
                star = Some((p, s));
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => {
                let (ok, next) = match_class(pattern, p + 1, c, nocase);
                ok.then_some(next)
            }
            Some(b'\\') if p + 1 < pattern.len() => {
                let lit = pattern.get(p + 1).copied().unwrap_or(0);
                eq(lit, c, nocase).then_some(p + 2)
            }
            Some(&lit) => eq(lit, c, nocase).then_some(p + 1),
            None => None,
        };
        match matched {
            Some(next) => {
                p = next;
                s += 1;
            }
            None => match star {
                Some((sp, ss)) => {
                    p = sp;
                    s = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    while pattern.get(p) == Some(&b'*') {
        p += 1;
    }
    p >= pattern.len()
}

/// Matches `c` against the class starting after `[` at `p`; returns (matched, index after
/// the class). Mirrors Redis, including an unterminated class ending at the pattern's end.
fn match_class(pattern: &[u8], mut p: usize, c: u8, nocase: bool) -> (bool, usize) {
    let at = |i: usize| pattern.get(i).copied();
    let not = at(p) == Some(b'^');
    if not {
        p += 1;
    }
    let mut matched = false;
    let fold = |x: u8| if nocase { x.to_ascii_lowercase() } else { x };
    loop {
        match at(p) {
            Some(b'\\') if p + 2 < pattern.len() + 1 && at(p + 1).is_some() => {
                p += 1;
                if at(p).map(fold) == Some(fold(c)) {
                    matched = true;
                }
            }
            Some(b']') => break,
            None => {
                // Redis: an unterminated class backs up to the last char (treated as ']').
                p = p.saturating_sub(1);
                break;
            }
            Some(x) if at(p + 1) == Some(b'-') && at(p + 2).is_some() => {
                let (mut lo, mut hi) = (x, at(p + 2).unwrap_or(x));
                if lo > hi {
                    std::mem::swap(&mut lo, &mut hi);
                }
                p += 2;
                let cc = fold(c);
                if fold(lo) <= cc && cc <= fold(hi) {
                    matched = true;
                }
            }
            Some(x) => {
                if fold(x) == fold(c) {
                    matched = true;
                }
            }
        }
        p += 1;
    }
    (matched != not, p + 1)
}

/// Parses a decimal i64 the way Redis's `getLongLongFromObject` does.
fn int_arg(arg: &[u8]) -> Option<i64> {
    string2ll(arg)
}

/// Redis's SCAN cursor: `strtoul` with no leading space, the whole argument consumed, no
/// overflow (a leading `-` wraps, as strtoul does).
fn scan_cursor(arg: &[u8]) -> Option<u64> {
    let (neg, digits) = match arg {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, arg),
    };
    if digits.is_empty() {
        // strtoul parses nothing: the cursor is 0 and valid iff nothing follows (empty arg).
        return arg.is_empty().then_some(0);
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

struct Exec<'x, 'a> {
    args: &'x Args<'a>,
    store: &'x mut Store,
    env: &'x Env<'x>,
    out: &'x mut Vec<u8>,
    /// The connection's reply protocol.
    proto: resp::Protocol,
    writes: Vec<Replicate>,
}

impl Exec<'_, '_> {
    fn now(&self) -> u64 {
        self.env.now_ms
    }

    fn arg(&self, i: usize) -> &[u8] {
        self.args.arg(i)
    }

    fn err(&mut self, text: &[u8]) -> Outcome {
        resp::error(self.out, text);
        Outcome::Reply
    }

    fn null(&mut self) {
        resp::null(self.out, self.proto);
    }

    /// Refuses a write to a key longer than the wire format carries.
    fn key_too_long(&mut self, key: &[u8]) -> bool {
        if key.len() > self.env.config.max_key_bytes {
            let text = format!(
                "ERR key exceeds maximum allowed size ({} bytes)",
                self.env.config.max_key_bytes
            );
            resp::error(self.out, text.as_bytes());
            return true;
        }
        false
    }
}

/// The key holds another type; the WRONGTYPE error has been sent.
struct WrongType;

enum ExpireError {
    NotInteger,
    Invalid,
}

/// Redis's `getExpireMillisecondsOrReply` for SET/SETEX/PSETEX: a positive integer, scaled
/// without overflow, made absolute for relative units.
fn expire_ms(arg: &[u8], seconds: bool, relative: bool, now: u64) -> Result<u64, ExpireError> {
    let v = int_arg(arg).ok_or(ExpireError::NotInteger)?;
    if v <= 0 || (seconds && v > i64::MAX / 1000) {
        return Err(ExpireError::Invalid);
    }
    let ms = if seconds { v * 1000 } else { v };
    let ms = if relative {
        ms.checked_add(now as i64).ok_or(ExpireError::Invalid)?
    } else {
        ms
    };
    u64::try_from(ms).map_err(|_| ExpireError::Invalid)
}

/// Whether `given` is the password, in time that depends on neither where the two differ
/// nor whether their lengths do: both are hashed (SHA-256, as Redis does) and the digests
/// compared in constant time (`subtle`, whose comparison the optimizer cannot cut short).
fn password_matches(expected: &[u8], given: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let (a, b) = (
        ring::digest::digest(&ring::digest::SHA256, expected),
        ring::digest::digest(&ring::digest::SHA256, given),
    );
    a.as_ref().ct_eq(b.as_ref()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::store::{Expiry, Limits as StoreLimits};
    use crate::resp::{Limits, Parsed, Parser};
    use tandem_core::frame::Op;
    use tandem_core::NodeId;

    struct Harness {
        store: Store,
        client: Client,
        config: CommandConfig,
        now: u64,
        isolated: bool,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                store: Store::new(NodeId(1), StoreLimits::default()),
                client: Client::new(1),
                config: CommandConfig::default(),
                now: 1_000_000,
                isolated: false,
            }
        }

        /// Runs inline commands; returns the replies and the outcome of the last one.
        fn run(&mut self, line: &str) -> (String, Outcome) {
            let mut parser = Parser::new(Limits::default());
            let input = format!("{line}\r\n");
            let mut out = Vec::new();
            let Ok(Parsed::Command { .. }) = parser.parse(input.as_bytes(), false) else {
                panic!("bad test command {line}");
            };
            let args = parser.args(input.as_bytes());
            let env = Env {
                config: &self.config,
                now_ms: self.now,
                isolated: self.isolated,
                connected_clients: 1,
                info_extra: "",
            };
            let outcome = execute(&args, &mut self.client, &mut self.store, &env, &mut out);
            (String::from_utf8_lossy(&out).into_owned(), outcome)
        }

        fn reply(&mut self, line: &str) -> String {
            self.run(line).0
        }
    }

    #[test]
    fn info_reports_the_real_uptime_and_role() {
        let mut h = Harness::new();
        // Instant is a signed count of the monotonic clock: 25 h back is representable
        // even on a machine up for less.
        h.config.started = std::time::Instant::now()
            .checked_sub(std::time::Duration::from_secs(90_000))
            .expect("an instant 25 h back");
        let r = h.reply("info");
        assert!(r.contains("uptime_in_seconds:90000\r\n"), "{r}");
        assert!(r.contains("uptime_in_days:1\r\n"), "{r}");
        assert!(r.contains("role:master\r\n"), "{r}");
    }

    #[test]
    fn hello_sets_the_protocol_the_name_and_authenticates() {
        let mut h = Harness::new();
        let r = h.reply("hello 2 setname app");
        assert!(
            r.starts_with("*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n"),
            "{r}"
        );
        assert!(r.contains("$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:"), "{r}");
        assert!(
            r.ends_with("$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"),
            "{r}"
        );
        assert_eq!(h.reply("client getname"), "$3\r\napp\r\n");
        assert_eq!(h.reply("hello"), r);
        assert_eq!(
            h.reply("hello 4"),
            "-NOPROTO unsupported protocol version\r\n"
        );
        // HELLO 3 switches this connection to RESP3 (the HELLO reply included) until HELLO 2.
        h.reply("hset h f v");
        let r3 = h.reply("hello 3");
        assert!(
            r3.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n"),
            "{r3}"
        );
        assert!(r3.contains("$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:"), "{r3}");
        assert_eq!(h.reply("get nokey"), "_\r\n");
        assert_eq!(h.reply("mget nokey"), "*1\r\n_\r\n");
        assert_eq!(h.reply("hgetall h"), "%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
        assert_eq!(h.reply("hgetall nokey"), "%0\r\n");
        assert_eq!(h.reply("hkeys h"), "*1\r\n$1\r\nf\r\n");
        assert_eq!(
            h.reply("config get appendonly"),
            "%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        );
        assert!(
            h.reply("info").starts_with("="),
            "INFO is a verbatim string"
        );
        assert_eq!(h.reply("hello 2"), r);
        assert_eq!(h.reply("get nokey"), "$-1\r\n");
        assert_eq!(h.reply("hgetall h"), "*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
        // Another connection starts in RESP2.
        assert_eq!(Harness::new().reply("get nokey"), "$-1\r\n");

        let mut h = Harness::new();
        h.config.requirepass = Some(b"pw".to_vec());
        assert!(h
            .reply("hello 2")
            .starts_with("-NOAUTH HELLO must be called"));
        assert!(h
            .reply("hello 2 auth default nope")
            .starts_with("-WRONGPASS"));
        assert!(h.reply("get k").starts_with("-NOAUTH"));
        assert!(h.reply("hello 2 auth default pw").starts_with("*14\r\n"));
        assert_eq!(h.reply("get k"), "$-1\r\n");
    }

    #[test]
    fn config_get_reads_tandems_settings_and_set_is_refused() {
        let mut h = Harness::new();
        let max = h.store.limits().max_bytes.to_string();
        assert_eq!(
            h.reply("config get maxmem*"),
            format!("*4\r\n$9\r\nmaxmemory\r\n${}\r\n{max}\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n", max.len())
        );
        // Each parameter once, whatever matches it.
        assert_eq!(
            h.reply("config get databases d*"),
            "*2\r\n$9\r\ndatabases\r\n$1\r\n1\r\n"
        );
        assert_eq!(
            h.reply("config set maxmemory 1"),
            "-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - tandem takes its configuration from its flags\r\n"
        );
        assert!(h
            .reply("config help")
            .starts_with("*5\r\n+CONFIG <subcommand>"));
    }

    #[test]
    fn info_keyspace_counts_keys_with_an_expiry() {
        let mut h = Harness::new();
        assert!(!h.reply("info").contains("db0:"));
        h.reply("set a 1 px 5000");
        h.reply("set b 2");
        h.reply("set c 3 ex 100");
        h.reply("persist c");
        let r = h.reply("info");
        assert!(r.contains("db0:keys=3,expires=1,avg_ttl=0\r\n"), "{r}");
    }

    #[test]
    fn writes_return_records_reads_do_not() {
        let mut h = Harness::new();
        let (r, o) = h.run("set k v px 500");
        assert_eq!(r, "+OK\r\n");
        let Outcome::Write(recs) = o else {
            panic!("{o:?}")
        };
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].op, Op::Put);
        assert_eq!(recs[0].expires_at_ms, 1_000_500);
        // Tag, expiry stamp (version 1, node 1), bytes.
        assert_eq!(recs[0].value, b"\x00\0\0\0\0\0\0\0\x01\0\x01v".to_vec());
        assert_eq!(h.run("get k"), ("$1\r\nv\r\n".into(), Outcome::Reply));
        // A write that changes nothing replicates nothing.
        assert_eq!(h.run("set k w nx"), ("$-1\r\n".into(), Outcome::Reply));
        assert_eq!(h.run("del nope"), (":0\r\n".into(), Outcome::Reply));
        let (r, o) = h.run("del k k2");
        assert_eq!(r, ":1\r\n");
        assert!(matches!(o, Outcome::Write(ref v) if v.len() == 1 && v[0].op == Op::Delete));
    }

    #[test]
    fn isolation_refuses_writes_before_touching_the_store() {
        let mut h = Harness::new();
        h.reply("set k v");
        h.isolated = true;
        assert_eq!(
            h.reply("set k w"),
            format!("-{}\r\n", String::from_utf8_lossy(ISOLATED_ERROR))
        );
        assert!(h.reply("del k").starts_with("-READONLY"));
        assert_eq!(h.reply("get k"), "$1\r\nv\r\n");
        // Arity errors still come first, as in Redis.
        assert_eq!(
            h.reply("set k"),
            "-ERR wrong number of arguments for 'set' command\r\n"
        );
    }

    #[test]
    fn auth_gate() {
        let mut h = Harness::new();
        h.config.requirepass = Some(b"pw".to_vec());
        assert_eq!(h.reply("get a"), "-NOAUTH Authentication required.\r\n");
        assert!(h.reply("foo").starts_with("-ERR unknown command 'foo'"));
        assert!(h.reply("auth x").starts_with("-WRONGPASS"));
        assert!(h.reply("auth other pw").starts_with("-WRONGPASS"));
        assert_eq!(h.reply("auth default pw"), "+OK\r\n");
        assert_eq!(h.reply("get a"), "$-1\r\n");
    }

    #[test]
    fn repeated_wrong_passwords_close_the_connection() {
        let mut h = Harness::new();
        h.config.requirepass = Some(b"pw".to_vec());
        // Wrong lengths and wrong bytes alike.
        for guess in [
            "auth p",
            "auth pX",
            "auth pwpw",
            "hello 2 auth default x",
            "auth qw",
        ] {
            let (reply, outcome) = h.run(guess);
            assert!(reply.starts_with("-WRONGPASS"), "{guess}: {reply}");
            assert_eq!(outcome, Outcome::Reply, "{guess}");
        }
        let (reply, outcome) = h.run("auth again");
        assert!(reply.starts_with("-WRONGPASS"), "{reply}");
        assert_eq!(outcome, Outcome::Quit);
        assert!(password_matches(b"pw", b"pw"));
        assert!(!password_matches(b"pw", b"pw\0"));
        assert!(!password_matches(b"", b"pw"));
    }

    #[test]
    fn watch_aborts_exec_on_a_replicated_write_or_an_expiry() {
        let mut h = Harness::new();
        h.reply("set k 1");
        // A peer's write to the watched key lands between WATCH and EXEC.
        let mut peer = Store::new(NodeId(2), StoreLimits::default());
        let rec = peer
            .set_string(b"k", b"2", Expiry::Never, h.now)
            .expect("fits");
        assert_eq!(h.reply("watch k other"), "+OK\r\n");
        h.store.apply_remote(&rec.entry(), h.now).expect("applies");
        h.reply("multi");
        h.reply("set k 3");
        let (reply, outcome) = h.run("exec");
        assert_eq!(reply, "*-1\r\n");
        assert_eq!(outcome, Outcome::Reply, "nothing to replicate");
        assert_eq!(h.reply("get k"), "$1\r\n2\r\n");
        // A replicated write to an unwatched key does not abort it.
        h.reply("watch k");
        let other = peer
            .set_string(b"other", b"x", Expiry::Never, h.now)
            .expect("fits");
        h.store
            .apply_remote(&other.entry(), h.now)
            .expect("applies");
        h.reply("multi");
        h.reply("set k 3");
        assert_eq!(h.reply("exec"), "*1\r\n+OK\r\n");
        // A watched key that expires meanwhile aborts it (RESP3: a null).
        h.reply("set e v px 100");
        h.reply("hello 3");
        h.reply("watch e");
        h.now += 200;
        h.reply("multi");
        h.reply("ping");
        assert_eq!(h.reply("exec"), "_\r\n");
    }

    #[test]
    fn exec_runs_the_queue_and_replicates_its_writes_together() {
        let mut h = Harness::new();
        assert_eq!(h.run("multi"), ("+OK\r\n".into(), Outcome::Reply));
        assert_eq!(h.run("set a 1"), ("+QUEUED\r\n".into(), Outcome::Reply));
        assert_eq!(h.run("incr a"), ("+QUEUED\r\n".into(), Outcome::Reply));
        assert_eq!(h.run("hset h f v"), ("+QUEUED\r\n".into(), Outcome::Reply));
        assert_eq!(h.run("get a"), ("+QUEUED\r\n".into(), Outcome::Reply));
        // Nothing ran yet.
        assert_eq!(h.store.get(b"a", h.now), None);
        let (r, o) = h.run("exec");
        assert_eq!(r, "*4\r\n+OK\r\n:2\r\n:1\r\n$1\r\n2\r\n");
        let Outcome::Write(recs) = o else {
            panic!("{o:?}")
        };
        let keys: Vec<&[u8]> = recs.iter().map(|r| r.key.as_slice()).collect();
        assert_eq!(keys, vec![&b"a"[..], b"a", b"h"]);
        assert_eq!(h.client.multi, None);
        // The queue is bounded.
        h.reply("multi");
        for _ in 0..MAX_MULTI_COMMANDS {
            assert_eq!(h.reply("ping"), "+QUEUED\r\n");
        }
        assert!(h.reply("ping").starts_with("-ERR transaction too large"));
        assert!(h.reply("exec").starts_with("-EXECABORT"));
    }

    #[test]
    fn oom_and_size_errors_keep_data() {
        let mut h = Harness::new();
        h.store = Store::new(
            NodeId(1),
            StoreLimits {
                max_sessions: 1,
                max_value_bytes: 16,
                ..StoreLimits::default()
            },
        );
        h.reply("set a 1");
        assert_eq!(
            h.reply("set b 1"),
            "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
        );
        assert!(h.reply("hset h f 1").starts_with("-OOM"));
        assert!(h
            .reply("set a 12345678901234567")
            .starts_with("-ERR value exceeds --max-value-bytes (16 bytes)"));
        assert_eq!(h.reply("get a"), "$1\r\n1\r\n");
        let long = "k".repeat(257);
        assert!(h
            .reply(&format!("set {long} v"))
            .starts_with("-ERR key exceeds maximum allowed size (256 bytes)"));
    }

    #[test]
    fn ttl_and_expiry_follow_the_clock() {
        let mut h = Harness::new();
        h.reply("set k v ex 10");
        assert_eq!(h.reply("ttl k"), ":10\r\n");
        h.now += 2_400;
        assert_eq!(h.reply("ttl k"), ":8\r\n");
        assert_eq!(h.reply("pttl k"), ":7600\r\n");
        h.now += 7_600;
        assert_eq!(h.reply("get k"), "$-1\r\n");
        assert_eq!(h.reply("ttl k"), ":-2\r\n");
        h.reply("set k v");
        assert_eq!(h.reply("ttl k"), ":-1\r\n");
        assert_eq!(h.reply("expire k -1"), ":1\r\n");
        assert_eq!(h.reply("exists k"), ":0\r\n");
    }

    #[test]
    fn quit_and_huge_mget() {
        let mut h = Harness::new();
        assert_eq!(h.run("quit"), ("+OK\r\n".into(), Outcome::Quit));
        h.config.max_reply_bytes = 100;
        h.reply(&format!("set k {}", "x".repeat(60)));
        assert_eq!(h.run("mget k").1, Outcome::Reply);
        assert_eq!(h.run("mget k k").1, Outcome::Close);
    }

    #[test]
    fn glob() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("a*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbb", false),
            ("a?c", "abc", true),
            ("a[bx]c", "axc", true),
            ("a[^bx]c", "abc", false),
            ("a[a-c]", "ab", true),
            ("a[c-a]", "ab", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("*:sessions:*", "spring:sessions:123", true),
            ("h?llo", "hllo", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(
                glob_match(p.as_bytes(), s.as_bytes(), false),
                *want,
                "{p} {s}"
            );
        }
    }

    #[test]
    fn scan_cursor_like_strtoul() {
        assert_eq!(scan_cursor(b"0"), Some(0));
        assert_eq!(scan_cursor(b""), Some(0));
        assert_eq!(scan_cursor(b"+7"), Some(7));
        assert_eq!(scan_cursor(b"007"), Some(7));
        assert_eq!(scan_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(scan_cursor(b" 0"), None);
        assert_eq!(scan_cursor(b"0x"), None);
        assert_eq!(scan_cursor(b"18446744073709551616"), None);
    }
}
