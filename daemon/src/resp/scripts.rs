//! The scripts tandem runs. tandem embeds no Lua interpreter: a few scripts that session and
//! lock libraries send are recognised by their exact text (its SHA1, as Redis names scripts)
//! and run as one native step, atomic on the node like any command and replicated as the
//! writes they make. Any other script is refused with an error that says so (README,
//! "Scripts"), never run approximately.
//!
//! Panics: never.

use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};

/// A script tandem knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// `GET KEYS[1]`; if it equals `ARGV[1]`, `DEL KEYS[1]` (1), else 0: releasing a lock only
    /// its holder may release (php-redis's session lock).
    CompareAndDelete,
    /// `INCRBY KEYS[1] ARGV[2]`; if that made it equal to `ARGV[2]` (a new window),
    /// `EXPIRE KEYS[1] ARGV[1]`; answers the count (limits' fixed window: Flask-Limiter).
    IncrExpire,
    /// If `PTTL KEYS[1]` <= 0, `SET KEYS[1] 1 PX ARGV[1]` and answer `{1, ARGV[1]}`, else
    /// `INCR KEYS[1]` and answer `{count, pttl}` (rate-limit-redis's hit).
    WindowHit,
    /// Answers `{GET KEYS[1], PTTL KEYS[1]}` (rate-limit-redis's read).
    WindowRead,
}

impl Script {
    /// Keys and arguments the script reads (`numkeys` and the arguments after the keys).
    pub fn arity(self) -> (usize, usize) {
        match self {
            Script::CompareAndDelete | Script::WindowHit => (1, 1),
            Script::IncrExpire => (1, 2),
            Script::WindowRead => (1, 0),
        }
    }
}

/// Each known script's exact text (its SHA1 is what EVALSHA names), and who sends it.
const KNOWN: &[(&str, Script)] = &[
    // php-redis 5.3 `redis_session.c`, session.save_handler = redis with locking on.
    (
        "if redis.call(\"get\",KEYS[1]) == ARGV[1] then return redis.call(\"del\",KEYS[1]) else return 0 end",
        Script::CompareAndDelete,
    ),
    // limits 5.x `resources/redis/lua_scripts/incr_expire.lua` (Flask-Limiter 4, its default
    // fixed-window strategy).
    (
        "local current\nlocal amount = tonumber(ARGV[2])\ncurrent = redis.call(\"incrby\", KEYS[1], amount)\n\nif tonumber(current) == amount then\n    redis.call(\"expire\", KEYS[1], ARGV[1])\nend\n\nreturn current\n",
        Script::IncrExpire,
    ),
    // rate-limit-redis 6.0 `scripts.increment` and `scripts.get` (express-rate-limit), after
    // its own whitespace trimming (the trailing spaces after INCR are in what it sends).
    (
        "local windowMs = tonumber(ARGV[1])\nlocal timeToExpire = redis.call(\"PTTL\", KEYS[1])\nif timeToExpire <= 0 then\nredis.call(\"SET\", KEYS[1], 1, \"PX\", windowMs)\nreturn { 1, windowMs }\nend\nlocal totalHits = redis.call(\"INCR\", KEYS[1])        \nreturn { totalHits, timeToExpire }",
        Script::WindowHit,
    ),
    (
        "local totalHits = redis.call(\"GET\", KEYS[1])\nlocal timeToExpire = redis.call(\"PTTL\", KEYS[1])\nreturn { totalHits, timeToExpire }",
        Script::WindowRead,
    ),
];

/// The script whose text is `text`.
pub fn by_text(text: &[u8]) -> Option<Script> {
    KNOWN
        .iter()
        .find(|(t, _)| t.as_bytes() == text)
        .map(|&(_, s)| s)
}

/// The script whose SHA1 (40 hex digits, either case) is `sha`.
pub fn by_sha(sha: &[u8]) -> Option<Script> {
    KNOWN
        .iter()
        .find(|(t, _)| sha1_hex(t.as_bytes()).eq_ignore_ascii_case(sha))
        .map(|&(_, s)| s)
}

/// SHA1 of `text` in lowercase hex, as SCRIPT LOAD answers.
pub fn sha1_hex(text: &[u8]) -> [u8; 40] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = digest(&SHA1_FOR_LEGACY_USE_ONLY, text);
    let mut out = [0u8; 40];
    for (pair, b) in out.chunks_exact_mut(2).zip(d.as_ref()) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_redis_unlock_is_known_by_text_and_by_the_sha_it_sends() {
        // The SHA1 php-redis sends in EVALSHA (captured from its traffic to redis-server).
        let sha = b"b70c2384248f88e6b75b9f89241a180f856ad852";
        assert_eq!(&sha1_hex(KNOWN[0].0.as_bytes()), sha);
        assert_eq!(by_sha(sha), Some(Script::CompareAndDelete));
        assert_eq!(
            by_sha(b"B70C2384248F88E6B75B9F89241A180F856AD852"),
            Some(Script::CompareAndDelete)
        );
        assert_eq!(
            by_text(KNOWN[0].0.as_bytes()),
            Some(Script::CompareAndDelete)
        );
        // One byte off is another script.
        assert_eq!(by_text(&KNOWN[0].0.as_bytes()[1..]), None);
        assert_eq!(by_sha(&sha[..39]), None);
    }

    #[test]
    fn rate_limiter_scripts_are_known_by_the_shas_they_send() {
        // SHA1s of the files as shipped: limits 5.8.0's incr_expire.lua, rate-limit-redis
        // 6.0.1's two scripts after its trimming (computed with sha1sum / node's crypto).
        for (sha, script) in [
            (
                &b"628bd136a573a06b346879695681af12ccef300f"[..],
                Script::IncrExpire,
            ),
            (
                b"895b92e1712734e1b464999be23953485475357b",
                Script::WindowHit,
            ),
            (
                b"6aeb97ed6086dcdeafdc6fda3999a0d0e38ec96a",
                Script::WindowRead,
            ),
        ] {
            assert_eq!(by_sha(sha), Some(script));
        }
    }
}
