//! Differential test: the same command sequences go to a real redis-server and to tandemd's
//! RESP component (with writes held for a loop turn, as in synchronous replication), and the
//! replies must match byte for byte; INFO, SCAN cursors and millisecond TTLs are compared by
//! meaning. Every case runs again on a connection switched to RESP3 by `HELLO 3`. Skips (with
//! a message) when redis-server is missing, except under CI=true.

mod resp_support;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use resp_support::*;
use tandemd::resp::commands;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmp {
    Exact,
    /// Integer replies within this many units (PTTL).
    Near(i64),
    /// A TTL or PTTL reply: the same negative code (-1 no expiry, -2 no key), or two remaining
    /// times within this many units (a loaded machine may cross a second between the two
    /// servers' replies: redis `:100`, tandem `:99` was seen).
    Remaining(i64),
    /// Arrays of the same shape whose integers are within this many units (a script's
    /// `{count, pttl}`) and whose other items are the same bytes.
    NearItems(i64),
    /// A successful HELLO's map: the same bytes once the values of `version` and `id` (which
    /// name the server and the connection) are blanked on both sides.
    Hello,
}

type Step = (Vec<u8>, Cmp);

fn e(words: &str) -> Step {
    let verb = words.split(' ').next().unwrap_or("").to_ascii_uppercase();
    let mode = match verb.as_str() {
        "TTL" => Cmp::Remaining(1),
        "PTTL" => Cmp::Remaining(1000),
        _ => Cmp::Exact,
    };
    (cmdw(words), mode)
}

fn ea(args: &[&[u8]]) -> Step {
    (cmd(args), Cmp::Exact)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Command sequences; `p` prefixes every key so runs do not share keys.
fn cases(p: &str) -> Vec<(&'static str, Vec<Step>)> {
    let k = |s: &str| format!("{p}{s}");
    let in100s = now_ms() + 100_000;
    vec![
        (
            "connection",
            vec![
                e("PING"),
                e("ping hello"),
                e("PING a b"),
                e("ECHO x"),
                e("echo"),
                e("SELECT 0"),
                e("SELECT 16"),
                e("SELECT -1"),
                e("SELECT x"),
                e("SELECT 99999999999"),
                e("select"),
                e("CLIENT SETNAME app1"),
                e("CLIENT GETNAME"),
                e("CLIENT SETNAME"),
                e("CLIENT FOO"),
                e("CLIENT"),
                ea(&[b"CLIENT", b"SETNAME", b"a b"]),
                ea(&[b"CLIENT", b"x\r\ny\xff\0z"]),
                ea(&[b"client", "s".repeat(200).as_bytes()]),
                e("AUTH x"),
                e("AUTH someone x"),
                e("AUTH a b c"),
                e("auth"),
                // HELLO's refusals (a successful HELLO names the server's version and id).
                e("HELLO x"),
                e("HELLO 1"),
                e("HELLO 4"),
                e("HELLO 99999999999999999999"),
                e("HELLO 2 FOO"),
                e("HELLO 2 SETNAME"),
                e("HELLO 2 AUTH x"),
                e("HELLO 2 AUTH someone x"),
                ea(&[b"HELLO", b"2", b"SETNAME", b"a b"]),
                // CONFIG: the parameters whose values agree with a default redis-server.
                e("CONFIG GET save"),
                e("CONFIG GET SAVE"),
                e("config get appendonly"),
                e("CONFIG GET maxmemory-policy"),
                e("CONFIG GET timeout"),
                e("CONFIG GET nosuch"),
                e("CONFIG GET nosuch* appendonl?"),
                e("config get"),
                e("config set"),
                e("config set maxmemory"),
                e("CONFIG SET nosuch 1"),
                e("CONFIG FOO"),
                e("CONFIG"),
                e("config resetstat"),
                e("config resetstat x"),
                e("CONFIG REWRITE"),
            ],
        ),
        (
            "unknown commands",
            vec![
                e("FOO"),
                e("foo a b"),
                e("FLUSHEVERYTHING x y z"),
                ea(&[b"bad\r\ncmd", b"a\rb", b"c\nd"]),
                ea(&[b"x", "y".repeat(200).as_bytes(), b"z"]),
                ea(&["n".repeat(200).as_bytes(), b"a"]),
                ea(&[
                    b"x",
                    "a".repeat(60).as_bytes(),
                    "b".repeat(60).as_bytes(),
                    b"ccc",
                    b"d",
                ]),
                ea(&[b"x", b"a\0b", b"c"]),
                ea(&[b""]),
            ],
        ),
        (
            "strings",
            vec![
                e(&format!("GET {}", k("s"))),
                e(&format!("SET {} v1", k("s"))),
                e(&format!("GET {}", k("s"))),
                e(&format!("SET {} v2 NX", k("s"))),
                e(&format!("SET {} v2 XX", k("s"))),
                e(&format!("SET {} v3 XX", k("missing"))),
                e(&format!("SET {} v3 NX XX", k("s"))),
                e(&format!("SET {} v3 XX NX", k("s"))),
                e(&format!("SET {} v3 GET", k("s"))),
                e(&format!("SET {} v4 GET", k("new1"))),
                e(&format!("SET {} v4 NX GET", k("s"))),
                e(&format!("SET {} v4 XX GET", k("missing"))),
                e(&format!("SET {} v", k("s"))),
                e(&format!("set {} v foo", k("s"))),
                e(&format!("SET {}", k("s"))),
                e("SET"),
                e(&format!("MGET {} {} {}", k("s"), k("missing"), k("new1"))),
                e("MGET"),
                e(&format!("GET {} x", k("s"))),
                ea(&[b"SET", k("bin\0\r\n").as_bytes(), b"v\0\r\nal"]),
                ea(&[b"GET", k("bin\0\r\n").as_bytes()]),
                ea(&[b"SET", k("empty").as_bytes(), b""]),
                ea(&[b"GET", k("empty").as_bytes()]),
                ea(&[b"SET", k("big").as_bytes(), &vec![b'x'; 200_000]]),
                ea(&[b"GET", k("big").as_bytes()]),
            ],
        ),
        (
            "set expiry options",
            vec![
                e(&format!("SET {} v EX 100", k("e"))),
                e(&format!("TTL {}", k("e"))),
                (cmdw(&format!("PTTL {}", k("e"))), Cmp::Near(1000)),
                e(&format!("SET {} v PX 100000", k("e"))),
                e(&format!("TTL {}", k("e"))),
                e(&format!("SET {} v EX 0", k("e"))),
                e(&format!("SET {} v EX -5", k("e"))),
                e(&format!("SET {} v EX x", k("e"))),
                e(&format!("SET {} v EX", k("e"))),
                e(&format!("SET {} v EX 10 PX 10", k("e"))),
                e(&format!("SET {} v EX 10 EX 100", k("e"))),
                e(&format!("TTL {}", k("e"))),
                e(&format!("SET {} v KEEPTTL", k("e"))),
                e(&format!("TTL {}", k("e"))),
                e(&format!("SET {} v KEEPTTL EX 10", k("e"))),
                e(&format!("SET {} v EX 10 KEEPTTL", k("e"))),
                e(&format!("SET {} v", k("e"))),
                e(&format!("TTL {}", k("e"))),
                e(&format!("SET {} v EX 9223372036854775807", k("e"))),
                e(&format!("SET {} v PX 9223372036854775807", k("e"))),
                e(&format!("SET {} v EX 9223372036854775808", k("e"))),
                e(&format!("SET {} v EXAT {}", k("e"), in100s / 1000 + 50)),
                (cmdw(&format!("TTL {}", k("e"))), Cmp::Near(1)),
                e(&format!("SET {} v PXAT {}", k("e"), in100s)),
                e(&format!("TTL {}", k("e"))),
                e(&format!("SET {} v PXAT 0", k("e"))),
                e(&format!("SET {} v PXAT 1", k("e"))),
                e(&format!("GET {}", k("e"))),
                e(&format!("EXISTS {}", k("e"))),
                e(&format!("SETEX {} 100 v", k("se"))),
                e(&format!("TTL {}", k("se"))),
                e(&format!("SETEX {} 0 v", k("se"))),
                e(&format!("SETEX {} -1 v", k("se"))),
                e(&format!("SETEX {} x v", k("se"))),
                e(&format!("SETEX {} 10", k("se"))),
                e(&format!("PSETEX {} 100000 v", k("se"))),
                e(&format!("TTL {}", k("se"))),
                e(&format!("PSETEX {} 0 v", k("se"))),
                e(&format!("PSETEX {} 9223372036854775807 v", k("se"))),
                e(&format!("GET {}", k("se"))),
            ],
        ),
        (
            "keys and ttl",
            vec![
                e(&format!("SET {} 1", k("a"))),
                e(&format!("SET {} 2", k("b"))),
                e(&format!(
                    "EXISTS {} {} {} {}",
                    k("a"),
                    k("a"),
                    k("b"),
                    k("zz")
                )),
                e("EXISTS"),
                e(&format!("DEL {} {} {}", k("a"), k("a"), k("zz"))),
                e(&format!("DEL {}", k("a"))),
                e("DEL"),
                e(&format!("TTL {}", k("a"))),
                e(&format!("TTL {}", k("b"))),
                e(&format!("PTTL {}", k("b"))),
                e(&format!("PTTL {}", k("a"))),
                e(&format!("TTL {} x", k("b"))),
                e(&format!("EXPIRE {} 100", k("b"))),
                e(&format!("TTL {}", k("b"))),
                e(&format!("EXPIRE {} 100", k("a"))),
                e(&format!("EXPIRE {} x", k("b"))),
                e(&format!("EXPIRE {}", k("b"))),
                e(&format!("EXPIRE {} 200 NX", k("b"))),
                e(&format!("EXPIRE {} 200 XX", k("b"))),
                e(&format!("TTL {}", k("b"))),
                e(&format!("EXPIRE {} 100 GT", k("b"))),
                e(&format!("EXPIRE {} 300 GT", k("b"))),
                e(&format!("EXPIRE {} 500 LT", k("b"))),
                e(&format!("EXPIRE {} 50 LT", k("b"))),
                e(&format!("TTL {}", k("b"))),
                e(&format!("EXPIRE {} 50 NX XX", k("b"))),
                e(&format!("EXPIRE {} 50 GT LT", k("b"))),
                e(&format!("EXPIRE {} 50 FOO", k("b"))),
                e(&format!("EXPIRE {} x FOO", k("b"))),
                ea(&[b"EXPIRE", k("b").as_bytes(), b"5", b"a\r\n\xfe\0b"]),
                e(&format!("EXPIRE {} 9223372036854775807", k("b"))),
                e(&format!("PEXPIRE {} 9223372036854775807", k("b"))),
                e(&format!("PERSIST {}", k("b"))),
                e(&format!("PERSIST {}", k("b"))),
                e(&format!("PERSIST {}", k("a"))),
                e(&format!("TTL {}", k("b"))),
                e(&format!("EXPIRE {} 100 GT", k("b"))),
                e(&format!("EXPIRE {} 100 LT", k("b"))),
                e(&format!("TTL {}", k("b"))),
                e(&format!("PEXPIRE {} 100000", k("b"))),
                e(&format!("TTL {}", k("b"))),
                e(&format!("EXPIREAT {} {}", k("b"), in100s / 1000 + 50)),
                (cmdw(&format!("TTL {}", k("b"))), Cmp::Near(1)),
                e(&format!("PEXPIREAT {} {}", k("b"), in100s)),
                e(&format!("TTL {}", k("b"))),
                e(&format!("EXPIRE {} -1", k("b"))),
                e(&format!("EXISTS {}", k("b"))),
                e(&format!("SET {} 1", k("c"))),
                e(&format!("PEXPIREAT {} 1", k("c"))),
                e(&format!("GET {}", k("c"))),
                e(&format!("SET {} 1", k("c"))),
                e(&format!("EXPIREAT {} 0", k("c"))),
                e(&format!("EXISTS {}", k("c"))),
                e(&format!("PERSIST {} x", k("c"))),
            ],
        ),
        (
            "hashes",
            vec![
                e(&format!("HSET {} f1 v1", k("h"))),
                e(&format!("HSET {} f1 v2 f2 w f3 x", k("h"))),
                e(&format!("HGETALL {}", k("h"))),
                e(&format!("HSET {} f1", k("h"))),
                e(&format!("HSET {} f1 v f2", k("h"))),
                e(&format!("HGET {} f1", k("h"))),
                e(&format!("HGET {} nope", k("h"))),
                e(&format!("HGET {} f1", k("nohash"))),
                e(&format!("HGET {}", k("h"))),
                e(&format!("HDEL {} f2 nope f2", k("h"))),
                e(&format!("HGETALL {}", k("h"))),
                e(&format!("HSET {} f2 again", k("h"))),
                e(&format!("HGETALL {}", k("h"))),
                e(&format!("HDEL {}", k("h"))),
                e(&format!("HDEL {} f1 f3 f2", k("h"))),
                e(&format!("EXISTS {}", k("h"))),
                e(&format!("HGETALL {}", k("h"))),
                e(&format!("HGETALL {} x", k("h"))),
                e(&format!("SET {} s", k("str"))),
                e(&format!("HSET {} f v", k("str"))),
                e(&format!("HGET {} f", k("str"))),
                e(&format!("HGETALL {}", k("str"))),
                e(&format!("HDEL {} f", k("str"))),
                e(&format!("HSET {} f v", k("h2"))),
                e(&format!("GET {}", k("h2"))),
                e(&format!("SET {} x GET", k("h2"))),
                e(&format!("MGET {} {}", k("h2"), k("str"))),
                e(&format!("EXPIRE {} 100", k("h2"))),
                e(&format!("HSET {} g w", k("h2"))),
                e(&format!("TTL {}", k("h2"))),
                e(&format!("SET {} x", k("h2"))),
                e(&format!("GET {}", k("h2"))),
                e(&format!("TTL {}", k("h2"))),
                e(&format!("HSET {} f v", k("str"))),
            ],
        ),
        (
            "hash commands",
            vec![
                e(&format!("HMSET {} a 1 b 2 c x", k("h"))),
                e(&format!("HMSET {} a", k("h"))),
                e(&format!("HMGET {} a b nope", k("h"))),
                e(&format!("HMGET {} a", k("nohash"))),
                e(&format!("HMGET {}", k("h"))),
                e(&format!("HLEN {}", k("h"))),
                e(&format!("HLEN {}", k("nohash"))),
                e(&format!("HEXISTS {} a", k("h"))),
                e(&format!("HEXISTS {} zz", k("h"))),
                e(&format!("HEXISTS {} zz", k("nohash"))),
                e(&format!("HKEYS {}", k("h"))),
                e(&format!("HVALS {}", k("h"))),
                e(&format!("HKEYS {}", k("nohash"))),
                e(&format!("HVALS {}", k("nohash"))),
                e(&format!("HINCRBY {} n 5", k("h"))),
                e(&format!("HINCRBY {} n -7", k("h"))),
                e(&format!("HINCRBY {} a x", k("h"))),
                e(&format!("HINCRBY {} a 1", k("h"))),
                e(&format!("HINCRBY {} c 1", k("h"))),
                e(&format!("HSET {} big 9223372036854775807", k("h"))),
                e(&format!("HINCRBY {} big 1", k("h"))),
                e(&format!("HINCRBY {} new 1", k("h2"))),
                e(&format!("HSETNX {} a z", k("h"))),
                e(&format!("HSETNX {} fresh z", k("h"))),
                e(&format!("HGETALL {}", k("h"))),
                e(&format!("HDEL {} a b c n big fresh", k("h"))),
                e(&format!("HLEN {}", k("h"))),
                e(&format!("EXISTS {}", k("h"))),
                e(&format!("TYPE {}", k("h"))),
                e(&format!("HSET {} back 1", k("h"))),
                e(&format!("HGETALL {}", k("h"))),
                e(&format!("SET {} s", k("str"))),
                e(&format!("HMSET {} f v", k("str"))),
                e(&format!("HMGET {} f", k("str"))),
                e(&format!("HLEN {}", k("str"))),
                e(&format!("HEXISTS {} f", k("str"))),
                e(&format!("HKEYS {}", k("str"))),
                e(&format!("HVALS {}", k("str"))),
                e(&format!("HINCRBY {} f 1", k("str"))),
                e(&format!("HSETNX {} f v", k("str"))),
                e(&format!("HINCRBY {} f", k("str"))),
            ],
        ),
        (
            "counters",
            vec![
                e(&format!("INCR {}", k("c"))),
                e(&format!("INCRBY {} 10", k("c"))),
                e(&format!("DECR {}", k("c"))),
                e(&format!("DECRBY {} 3", k("c"))),
                e(&format!("GET {}", k("c"))),
                e(&format!("INCRBY {} x", k("c"))),
                e(&format!("INCRBY {} 1.5", k("c"))),
                e(&format!("DECRBY {} -9223372036854775808", k("c"))),
                e(&format!("INCRBY {} -9223372036854775808", k("c"))),
                e(&format!("SET {} 9223372036854775807", k("c2"))),
                e(&format!("INCR {}", k("c2"))),
                e(&format!("DECRBY {} -1", k("c2"))),
                e(&format!("SET {} -9223372036854775808", k("c2"))),
                e(&format!("DECR {}", k("c2"))),
                e(&format!("SET {} abc", k("c3"))),
                e(&format!("INCR {}", k("c3"))),
                e(&format!("SET {} 007", k("c3"))),
                e(&format!("INCR {}", k("c3"))),
                e(&format!("HSET {} f v", k("h"))),
                e(&format!("INCR {}", k("h"))),
                e(&format!("SET {} 5", k("c"))),
                e(&format!("INCR {}", k("c"))),
                e(&format!("EXPIRE {} 100", k("c"))),
                e(&format!("INCR {}", k("c"))),
                e(&format!("TTL {}", k("c"))),
                e(&format!("TYPE {}", k("c"))),
                e(&format!("MGET {} {}", k("c"), k("c2"))),
                e(&format!("SET {} x GET", k("c"))),
                e(&format!("INCR {}", k("c"))),
                e("INCR"),
                e(&format!("INCR {} x", k("c"))),
                e(&format!("DECRBY {}", k("c"))),
            ],
        ),
        ("scripts tandem knows: php-redis's lock release", {
            let script: &[u8] = b"if redis.call(\"get\",KEYS[1]) == ARGV[1] then return redis.call(\"del\",KEYS[1]) else return 0 end";
            let sha: &[u8] = b"b70c2384248f88e6b75b9f89241a180f856ad852";
            let lock = k("lock");
            let lock = lock.as_bytes();
            vec![
                e(&format!("SET {} tok", k("lock"))),
                ea(&[b"EVAL", script, b"1", lock, b"other"]),
                e(&format!("GET {}", k("lock"))),
                ea(&[b"EVAL", script, b"1", lock, b"tok"]),
                e(&format!("GET {}", k("lock"))),
                ea(&[b"EVAL", script, b"1", lock, b"tok"]),
                e(&format!("SET {} tok2", k("lock"))),
                ea(&[b"EVALSHA", sha, b"1", lock, b"tok2"]),
                e(&format!("EXISTS {}", k("lock"))),
                ea(&[b"SCRIPT", b"EXISTS", sha]),
                ea(&[b"SCRIPT", b"LOAD", script]),
                ea(&[b"EVAL", script, b"x"]),
                ea(&[b"EVAL", script, b"-1"]),
                ea(&[b"EVAL", script, b"3", lock]),
                e("SCRIPT FOO"),
            ]
        }),
        ("scripts tandem knows: rate limiters", {
            // limits 5 (Flask-Limiter 4): incr_expire.lua; rate-limit-redis 6: hit and read.
            let incr_expire: &[u8] = b"local current\nlocal amount = tonumber(ARGV[2])\ncurrent = redis.call(\"incrby\", KEYS[1], amount)\n\nif tonumber(current) == amount then\n    redis.call(\"expire\", KEYS[1], ARGV[1])\nend\n\nreturn current\n";
            let hit: &[u8] = b"local windowMs = tonumber(ARGV[1])\nlocal timeToExpire = redis.call(\"PTTL\", KEYS[1])\nif timeToExpire <= 0 then\nredis.call(\"SET\", KEYS[1], 1, \"PX\", windowMs)\nreturn { 1, windowMs }\nend\nlocal totalHits = redis.call(\"INCR\", KEYS[1])        \nreturn { totalHits, timeToExpire }";
            let read: &[u8] = b"local totalHits = redis.call(\"GET\", KEYS[1])\nlocal timeToExpire = redis.call(\"PTTL\", KEYS[1])\nreturn { totalHits, timeToExpire }";
            let incr_sha: &[u8] = b"628bd136a573a06b346879695681af12ccef300f";
            let hit_sha: &[u8] = b"895b92e1712734e1b464999be23953485475357b";
            let read_sha: &[u8] = b"6aeb97ed6086dcdeafdc6fda3999a0d0e38ec96a";
            let (fw, rl) = (k("fw"), k("rl"));
            let (fw, rl) = (fw.as_bytes(), rl.as_bytes());
            let near = |args: &[&[u8]]| (cmd(args), Cmp::NearItems(1000));
            vec![
                ea(&[b"SCRIPT", b"LOAD", incr_expire]),
                ea(&[b"EVALSHA", incr_sha, b"1", fw, b"60", b"1"]),
                (cmdw(&format!("TTL {}", k("fw"))), Cmp::Near(1)),
                ea(&[b"EVALSHA", incr_sha, b"1", fw, b"60", b"1"]),
                ea(&[b"EVAL", incr_expire, b"1", fw, b"60", b"5"]),
                e(&format!("GET {}", k("fw"))),
                e(&format!("PERSIST {}", k("fw"))),
                ea(&[b"EVALSHA", incr_sha, b"1", fw, b"60", b"1"]),
                e(&format!("TTL {}", k("fw"))),
                ea(&[b"SCRIPT", b"LOAD", hit]),
                ea(&[b"SCRIPT", b"LOAD", read]),
                ea(&[b"SCRIPT", b"EXISTS", hit_sha, read_sha, incr_sha]),
                near(&[b"EVALSHA", read_sha, b"1", rl]),
                near(&[b"EVALSHA", hit_sha, b"1", rl, b"60000"]),
                (cmdw(&format!("PTTL {}", k("rl"))), Cmp::Near(1000)),
                near(&[b"EVALSHA", hit_sha, b"1", rl, b"60000"]),
                near(&[b"EVALSHA", hit_sha, b"1", rl, b"60000"]),
                near(&[b"EVALSHA", read_sha, b"1", rl]),
                e(&format!("GET {}", k("rl"))),
                e(&format!("SET {} 7", k("rl"))),
                near(&[b"EVALSHA", hit_sha, b"1", rl, b"60000"]),
                e(&format!("GET {}", k("rl"))),
            ]
        }),
        (
            "conditional writes",
            vec![
                e(&format!("SETNX {} 1", k("n"))),
                e(&format!("SETNX {} 2", k("n"))),
                e(&format!("GET {}", k("n"))),
                e(&format!("GETSET {} 3", k("n"))),
                e(&format!("GETSET {} 1", k("new"))),
                e(&format!("HSET {} f v", k("h"))),
                e(&format!("GETSET {} x", k("h"))),
                e(&format!("SETNX {} x", k("h"))),
                e(&format!("GETDEL {}", k("n"))),
                e(&format!("GETDEL {}", k("n"))),
                e(&format!("GETDEL {}", k("h"))),
                e(&format!("SET {} v", k("g"))),
                e(&format!("GETEX {}", k("g"))),
                e(&format!("GETEX {} EX 100", k("g"))),
                e(&format!("TTL {}", k("g"))),
                e(&format!("GETEX {} PERSIST", k("g"))),
                e(&format!("TTL {}", k("g"))),
                e(&format!("GETEX {} EX 100 EX 200", k("g"))),
                e(&format!("TTL {}", k("g"))),
                e(&format!("GETEX {} EX 0", k("g"))),
                e(&format!("GETEX {} EX x", k("g"))),
                e(&format!("GETEX {} EX 1 PX 1", k("g"))),
                e(&format!("GETEX {} EX 1 PERSIST", k("g"))),
                e(&format!("GETEX {} PERSIST PERSIST", k("g"))),
                e(&format!("GETEX {} FOO", k("g"))),
                e(&format!("GETEX {} EX", k("g"))),
                e(&format!("GETEX {} EX 0", k("nokey"))),
                e(&format!("GETEX {}", k("h"))),
                e(&format!("GETEX {} PXAT 1", k("g"))),
                e(&format!("EXISTS {}", k("g"))),
                e(&format!("SET {} v NX", k("g"))),
                e(&format!("SET {} v NX", k("g"))),
                e(&format!("SET {} w XX GET", k("g"))),
                e(&format!("SET {} w XX GET", k("none"))),
                e(&format!("SET {} w NX GET", k("g"))),
            ],
        ),
        (
            "keyspace",
            vec![
                e(&format!("SET {} 1", k("a"))),
                e(&format!("HSET {} f v", k("b"))),
                e(&format!("UNLINK {} {} {}", k("a"), k("b"), k("nokey"))),
                e(&format!("SET {} 1", k("a"))),
                e(&format!("HSET {} f v", k("b"))),
                e(&format!("TOUCH {} {} {}", k("a"), k("b"), k("nokey"))),
                e(&format!("TYPE {}", k("a"))),
                e(&format!("TYPE {}", k("b"))),
                e(&format!("TYPE {}", k("nokey"))),
                e(&format!("KEYS {}", k("a"))),
                e(&format!("KEYS {}[b]", k(""))),
                e(&format!("KEYS {}nomatch*", k(""))),
                e(&format!("EXPIRETIME {}", k("nokey"))),
                e(&format!("EXPIRETIME {}", k("a"))),
                e(&format!("EXPIREAT {} 4000000000", k("a"))),
                e(&format!("EXPIRETIME {}", k("a"))),
                e(&format!("PEXPIRETIME {}", k("a"))),
                e(&format!("PEXPIREAT {} 4000000000499", k("b"))),
                e(&format!("EXPIRETIME {}", k("b"))),
                e(&format!("PEXPIRETIME {}", k("b"))),
                e("UNLINK"),
                e("TYPE"),
                e("KEYS"),
                e("EXPIRETIME"),
            ],
        ),
        (
            "transactions",
            vec![
                e("EXEC"),
                e("DISCARD"),
                e("MULTI"),
                e("MULTI"),
                e(&format!("SET {} 1", k("t"))),
                e(&format!("INCR {}", k("t"))),
                e(&format!("HSET {} f v", k("th"))),
                e(&format!("HGET {} f", k("t"))),
                e(&format!("GET {}", k("t"))),
                e("EXEC"),
                e(&format!("GET {}", k("t"))),
                e("MULTI"),
                e(&format!("SET {} 9", k("t"))),
                e("DISCARD"),
                e(&format!("GET {}", k("t"))),
                e("MULTI"),
                e(&format!("SET {} 9", k("t"))),
                e("NOSUCHCOMMAND"),
                e(&format!("SET {}", k("t"))),
                e("EXEC"),
                e(&format!("GET {}", k("t"))),
                e("MULTI"),
                e("EXEC"),
                e("MULTI"),
                e("MULTI x"),
                e(&format!("INCR {}", k("th"))),
                e("EXEC"),
            ],
        ),
        (
            "watch",
            vec![
                e(&format!("SET {} 0", k("w"))),
                e(&format!("WATCH {} {}", k("w"), k("wnone"))),
                e("MULTI"),
                e(&format!("WATCH {}", k("w"))),
                e(&format!("INCR {}", k("w"))),
                e("UNWATCH"),
                e("EXEC"),
                e(&format!("WATCH {}", k("w"))),
                e(&format!("SET {} 5", k("w"))),
                e("MULTI"),
                e(&format!("INCR {}", k("w"))),
                e("EXEC"),
                e(&format!("GET {}", k("w"))),
                e(&format!("WATCH {}", k("w"))),
                e("UNWATCH"),
                e(&format!("SET {} 6", k("w"))),
                e("MULTI"),
                e(&format!("INCR {}", k("w"))),
                e("EXEC"),
                e(&format!("WATCH {}", k("wh"))),
                e(&format!("HSET {} f v", k("wh"))),
                e("MULTI"),
                e("EXEC"),
                e(&format!("WATCH {}", k("w"))),
                e(&format!("EXPIRE {} 100", k("w"))),
                e("MULTI"),
                e("EXEC"),
                e(&format!("WATCH {}", k("w"))),
                e(&format!("GET {}", k("w"))),
                e("MULTI"),
                e("NOSUCH"),
                e("EXEC"),
                e(&format!("WATCH {}", k("w"))),
                e("MULTI"),
                e("DISCARD"),
                e(&format!("SET {} 9", k("w"))),
                e("MULTI"),
                e(&format!("GET {}", k("w"))),
                e("EXEC"),
                e("WATCH"),
                e("UNWATCH x"),
            ],
        ),
        (
            "scan errors",
            vec![
                e("SCAN x"),
                e("SCAN 0x"),
                e("SCAN 18446744073709551616"),
                e("SCAN 0 COUNT 0"),
                e("SCAN 0 COUNT x"),
                e("SCAN 0 COUNT"),
                e("SCAN 0 MATCH"),
                e("SCAN 0 FOO bar"),
                e("SCAN"),
                ea(&[b"SCAN", b" 0"]),
            ],
        ),
    ]
}

/// Raw byte streams, compared whole (including whether the server closed the connection).
fn raw_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "inline",
            b"PING\r\nping\nPING hi\r\necho \"a\\x41\\n\\t\" 'it\\'s'\r\n".to_vec(),
        ),
        (
            "inline blanks",
            b"\r\n\n   \r\n  PING   \r\n\tECHO  x\t\r\n".to_vec(),
        ),
        ("inline cr", b"ping\rx\r\n".to_vec()),
        (
            "empty arrays",
            b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
        ),
        (
            "unchecked crlf",
            b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n".to_vec(),
        ),
        ("expected dollar", b"*1\r\nx4\r\nPING\r\n".to_vec()),
        ("expected dollar cr", b"*1\r\n\r\r\n".to_vec()),
        ("negative bulk", b"*1\r\n$-5\r\nPING\r\n".to_vec()),
        ("bad bulk", b"*1\r\n$abc\r\n".to_vec()),
        ("plus bulk", b"*1\r\n$+4\r\nPING\r\n".to_vec()),
        ("empty bulk len", b"*1\r\n$\r\n".to_vec()),
        ("bad multibulk", b"*abc\r\n".to_vec()),
        ("leading zero multibulk", b"*01\r\n$4\r\nPING\r\n".to_vec()),
        ("space multibulk", b"*1 \r\n".to_vec()),
        ("huge multibulk", b"*9999999999\r\n".to_vec()),
        ("lf only multibulk", b"*1\n$4\r\nPING\r\n".to_vec()),
        ("unbalanced dq", b"set \"a b\r\n".to_vec()),
        ("unbalanced sq", b"set 'a\r\n".to_vec()),
        ("quote then text", b"set \"a\"b c\r\n".to_vec()),
        ("error after good", b"PING\r\n*1\r\n$x\r\nPING\r\n".to_vec()),
        ("quit", b"PING\r\nQUIT\r\nPING\r\n".to_vec()),
        ("quit inline", b"quit\r\n".to_vec()),
        ("empty command", b"*1\r\n$0\r\n\r\n\"\" a\r\n".to_vec()),
    ];
    v.push(("too big inline", vec![b'a'; 70_000]));
    let mut mbulk = b"*".to_vec();
    mbulk.extend_from_slice(&[b'1'; 70_000]);
    v.push(("too big mbulk count", mbulk));
    let mut bulk = b"*1\r\n$".to_vec();
    bulk.extend_from_slice(&[b'1'; 70_000]);
    v.push(("too big bulk count", bulk));
    let mut pipelined = Vec::new();
    for i in 0..300 {
        pipelined.extend_from_slice(&cmdw(&format!("SET raw:pipe:{i} value{i}")));
        pipelined.extend_from_slice(format!("GET raw:pipe:{i}\r\n").as_bytes());
    }
    pipelined.extend_from_slice(&cmdw("DEL raw:pipe:1 raw:pipe:2 raw:pipe:299"));
    v.push(("pipelined 600", pipelined));
    v
}

/// Sends `steps` to both servers and records every mismatch in `failures`.
fn compare_case(
    redis: SocketAddr,
    ours: SocketAddr,
    name: &str,
    steps: &[Step],
    chunk: usize,
    failures: &mut Vec<String>,
) -> usize {
    let request: Vec<u8> = steps.iter().flat_map(|(r, _)| r.clone()).collect();
    let (want, want_closed) = exchange(redis, &request, chunk);
    let (got, got_closed) = exchange(ours, &request, chunk);
    assert_eq!(got_closed, want_closed, "{name}: closed");
    let want = split_replies(&want);
    let got = split_replies(&got);
    assert_eq!(got.len(), want.len(), "{name}: reply count");
    assert_eq!(want.len(), steps.len(), "{name}: one reply per step");
    for (i, ((w, g), (req, mode))) in want.iter().zip(&got).zip(steps).enumerate() {
        let ctx = || format!("{name} step {i} {:?}", show(&req[..req.len().min(120)]));
        match mode {
            Cmp::Exact => {
                if g != w {
                    failures.push(format!(
                        "{}:\n  redis:  {:?}\n  tandem: {:?}",
                        ctx(),
                        show(w),
                        show(g)
                    ));
                }
            }
            Cmp::Hello => {
                if blank_hello(g) != blank_hello(w) {
                    failures.push(format!(
                        "{}:\n  redis:  {:?}\n  tandem: {:?}",
                        ctx(),
                        show(w),
                        show(g)
                    ));
                }
            }
            Cmp::NearItems(tol) => {
                let near = |a: &[u8], b: &[u8]| {
                    let int = |x: &[u8]| -> Option<i64> {
                        x.strip_prefix(b":")?
                            .strip_suffix(b"\r\n")
                            .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok())
                    };
                    match (int(a), int(b)) {
                        (Some(x), Some(y)) => (x - y).abs() <= *tol,
                        _ => a == b,
                    }
                };
                let same = match (aggregate_items(g), aggregate_items(w)) {
                    (Some(gi), Some(wi)) => {
                        g.first() == w.first()
                            && gi.len() == wi.len()
                            && gi.iter().zip(&wi).all(|(x, y)| near(x, y))
                    }
                    _ => g == w,
                };
                if !same {
                    failures.push(format!(
                        "{}:\n  redis:  {:?}\n  tandem: {:?}",
                        ctx(),
                        show(w),
                        show(g)
                    ));
                }
            }
            Cmp::Near(tol) => {
                let num = |b: &[u8]| -> i64 {
                    show(b)
                        .trim_start_matches(':')
                        .trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{}: not an integer {:?}", ctx(), show(b)))
                };
                if (num(g) - num(w)).abs() > *tol {
                    failures.push(format!("{}: {:?} vs {:?}", ctx(), show(g), show(w)));
                }
            }
            Cmp::Remaining(tol) => {
                let num = |b: &[u8]| -> Option<i64> {
                    b.strip_prefix(b":")?
                        .strip_suffix(b"\r\n")
                        .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok())
                };
                let same = match (num(g), num(w)) {
                    (Some(x), Some(y)) if x >= 0 && y >= 0 => (x - y).abs() <= *tol,
                    _ => g == w,
                };
                if !same {
                    failures.push(format!(
                        "{}:\n  redis:  {:?}\n  tandem: {:?}",
                        ctx(),
                        show(w),
                        show(g)
                    ));
                }
            }
        }
    }
    steps.len()
}

/// A HELLO reply with the values of `version` and `id` replaced by `-`; other replies (the
/// errors) as they are.
fn blank_hello(reply: &[u8]) -> Vec<u8> {
    let Some(items) = aggregate_items(reply) else {
        return reply.to_vec();
    };
    let header_end = reply.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
    let mut out = reply[..header_end].to_vec();
    for pair in items.chunks(2) {
        out.extend_from_slice(&pair[0]);
        match bulk_payload(&pair[0]).as_deref() {
            Some(b"version" | b"id") => out.extend_from_slice(b"-\r\n"),
            _ => out.extend_from_slice(pair.get(1).map_or(&[][..], |v| &v[..])),
        }
    }
    out
}

fn full_scan(addr: SocketAddr, extra: &str) -> (Vec<Vec<u8>>, usize) {
    let mut keys = Vec::new();
    let mut cursor = b"0".to_vec();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 10_000, "SCAN does not terminate");
        let mut args: Vec<&[u8]> = vec![b"SCAN", &cursor];
        args.extend(
            extra
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(str::as_bytes),
        );
        let (reply, _) = exchange(addr, &cmd(&args), usize::MAX);
        let items = array_items(&reply).expect("SCAN replies an array");
        assert_eq!(items.len(), 2, "SCAN reply {:?}", show(&reply));
        cursor = bulk_payload(&items[0]).expect("cursor is a bulk");
        for key in array_items(&items[1]).expect("keys array") {
            keys.push(bulk_payload(&key).expect("key is a bulk"));
        }
        if cursor == b"0" {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    (keys, calls)
}

#[test]
fn replies_match_redis_server() {
    let Some(binary) = require_tool("redis-server") else {
        return;
    };
    let redis = start_redis(&binary, &[]);
    let ours = start_ours(commands::CommandConfig::default(), true);

    // DBSIZE on empty stores first.
    let mut failures = Vec::new();
    let mut compared = compare_case(
        redis.addr,
        ours.addr,
        "dbsize",
        &[
            e("DBSIZE"),
            e("SET dbsize:a 1"),
            e("HSET dbsize:b f v"),
            e("DBSIZE"),
            e("DBSIZE x"),
        ],
        usize::MAX,
        &mut failures,
    );
    let mut cases_run = 1;
    // Each case whole (pipelined in one write), again cut into 5-byte writes, and again
    // whole on a connection that switched to RESP3 with `HELLO 3` first.
    for (run, chunk) in [("p", usize::MAX), ("c", 5), ("r3", usize::MAX)] {
        for (name, mut steps) in cases(&format!("{run}:")) {
            if run == "r3" {
                steps.insert(0, (cmdw("HELLO 3"), Cmp::Hello));
            }
            compared += compare_case(redis.addr, ours.addr, name, &steps, chunk, &mut failures);
            cases_run += 1;
        }
    }
    // HELLO's own replies in both protocols, and the switch back.
    compared += compare_case(
        redis.addr,
        ours.addr,
        "hello",
        &[
            (cmdw("HELLO"), Cmp::Hello),
            (cmdw("HELLO 3"), Cmp::Hello),
            (cmdw("HELLO"), Cmp::Hello),
            e("GET hello:none"),
            (cmdw("HELLO 3 SETNAME app3"), Cmp::Hello),
            e("CLIENT GETNAME"),
            e("HELLO 4"),
            e("HELLO 3 SETNAME"),
            (cmdw("HELLO 2"), Cmp::Hello),
            e("GET hello:none"),
            (cmdw("HELLO 3 AUTH default anything"), Cmp::Hello),
            e("GET hello:none"),
        ],
        usize::MAX,
        &mut failures,
    );
    cases_run += 1;
    let mut raw_bytes = 0;
    for (name, bytes) in raw_cases() {
        for chunk in [usize::MAX, 3] {
            if chunk == 3 && bytes.len() > 4096 {
                continue;
            }
            // Oversized requests end the connection: no sentinel, read to EOF.
            let sentinel = !name.starts_with("too big");
            let (want, want_closed) = exchange_with(redis.addr, &bytes, chunk, sentinel);
            let (got, got_closed) = exchange_with(ours.addr, &bytes, chunk, sentinel);
            if got != want || got_closed != want_closed {
                failures.push(format!(
                    "raw case {name} (chunk {chunk}):\n  redis:  {:?} closed {want_closed}\n  tandem: {:?} closed {got_closed}",
                    show(&want[..want.len().min(300)]),
                    show(&got[..got.len().min(300)])
                ));
            }
            raw_bytes += want.len();
            cases_run += 1;
        }
    }

    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // SCAN: same key sets whatever the cursors, with MATCH and COUNT.
    let mut setup = Vec::new();
    for i in 0..250 {
        setup.extend_from_slice(&cmdw(&format!("SET scan:{i} v")));
        if i % 5 == 0 {
            setup.extend_from_slice(&cmdw(&format!("HSET scanh:{i} f v")));
        }
    }
    assert_eq!(
        exchange(redis.addr, &setup, usize::MAX).0,
        exchange(ours.addr, &setup, usize::MAX).0
    );
    for extra in [
        "MATCH scan:*",
        "MATCH scan:1? COUNT 3",
        "MATCH scan[h]:*5 COUNT 1000",
        "MATCH *:2[0-4]? COUNT 7",
        "MATCH nothing*",
        "MATCH scan* TYPE hash",
        "MATCH scan* TYPE string COUNT 50",
    ] {
        let (want, _) = full_scan(redis.addr, extra);
        let (got, calls) = full_scan(ours.addr, extra);
        assert_eq!(got, want, "SCAN {extra}");
        println!("SCAN {extra}: {} keys, {calls} calls on tandem", got.len());
    }

    // INFO: both well-formed; ours has what clients and HAProxy look for.
    let (info, _) = exchange(ours.addr, &cmdw("INFO"), usize::MAX);
    let text = show(&bulk_payload(&info).expect("INFO is a bulk"));
    for line in [
        "role:master",
        "redis_version:",
        "# Keyspace",
        "connected_clients:",
    ] {
        assert!(text.contains(line), "INFO lacks {line}: {text}");
    }
    let (rinfo, _) = exchange(redis.addr, &cmdw("INFO"), usize::MAX);
    assert!(show(&rinfo).contains("role:master"));

    println!(
        "differential: {cases_run} sequences, {compared} commands compared reply by reply, \
         {raw_bytes} raw reply bytes identical"
    );
}

#[test]
fn auth_replies_match_redis_server() {
    let Some(binary) = require_tool("redis-server") else {
        return;
    };
    let redis = start_redis(&binary, &["--requirepass", "s3cret"]);
    let ours = start_ours(
        commands::CommandConfig {
            requirepass: Some(b"s3cret".to_vec()),
            ..commands::CommandConfig::default()
        },
        true,
    );
    let steps = vec![
        e("GET a"),
        e("SET a b"),
        e("PING"),
        e("FOO"),
        e("GET"),
        e("AUTH wrong"),
        e("AUTH default wrong"),
        e("AUTH other s3cret"),
        e("AUTH a b c"),
        e("HELLO"),
        e("HELLO 2"),
        e("HELLO 2 AUTH default wrong"),
        e("HELLO 2 AUTH other s3cret"),
        e("GET a"),
        e("AUTH s3cret"),
        e("GET a"),
        e("AUTH default s3cret"),
        e("SET auth:a b"),
        e("GET auth:a"),
    ];
    // HELLO 3 with AUTH on a new connection authenticates and switches in one step.
    let resp3_steps = vec![
        e("GET auth:a"),
        e("HELLO 3 AUTH default wrong"),
        e("HELLO 3"),
        (cmdw("HELLO 3 AUTH default s3cret SETNAME app"), Cmp::Hello),
        e("GET auth:a"),
        e("GET auth:none"),
        e("CLIENT GETNAME"),
    ];
    let mut failures = Vec::new();
    let mut n = compare_case(
        redis.addr,
        ours.addr,
        "auth",
        &steps,
        usize::MAX,
        &mut failures,
    );
    n += compare_case(
        redis.addr,
        ours.addr,
        "auth resp3",
        &resp3_steps,
        usize::MAX,
        &mut failures,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Pre-AUTH bounds: more than 10 arguments or a bulk above 16 KiB close the connection.
    for raw in [&b"*11\r\n"[..], b"*1\r\n$16385\r\n", b"QUIT\r\n"] {
        let want = exchange(redis.addr, raw, usize::MAX);
        let got = exchange(ours.addr, raw, usize::MAX);
        assert_eq!(show(&got.0), show(&want.0));
        assert_eq!(got.1, want.1);
    }
    println!("auth differential: {n} commands + 3 raw streams identical");
}
