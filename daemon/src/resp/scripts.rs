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
}

impl Script {
    /// Keys and arguments the script reads (`numkeys` and the arguments after the keys).
    pub fn arity(self) -> (usize, usize) {
        match self {
            Script::CompareAndDelete => (1, 1),
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
}
