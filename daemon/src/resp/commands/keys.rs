//! Key and expiry commands: DEL, EXISTS, EXPIRE and its variants, PERSIST, TTL, SCAN, TYPE,
//! KEYS, EXPIRETIME.

use super::{
    cstr, error_sanitized, expire_ms, expire_time_error, glob_match, int_arg, is, scan_cursor,
    Exec, ExpireError, Outcome, NOT_INTEGER, SYNTAX,
};
use crate::engine::store::{Entry, Value};
use crate::resp;

impl Exec<'_, '_> {
    /// Redis's `getExpireMillisecondsOrReply`: the absolute expiry of an EX/PX/EXAT/PXAT
    /// argument, or `None` with the error sent.
    pub(super) fn expire_arg(
        &mut self,
        arg: &[u8],
        seconds: bool,
        relative: bool,
        name: &str,
    ) -> Option<u64> {
        match expire_ms(arg, seconds, relative, self.now()) {
            Ok(at) => Some(at),
            Err(ExpireError::NotInteger) => {
                resp::error(self.out, NOT_INTEGER);
                None
            }
            Err(ExpireError::Invalid) => {
                expire_time_error(name, self.out);
                None
            }
        }
    }

    pub(super) fn del(&mut self) -> Outcome {
        let now = self.now();
        let mut n = 0;
        for key in self.args.iter().skip(1) {
            if let Some(rec) = self.store.delete(key, now) {
                self.writes.push(rec);
                n += 1;
            }
        }
        resp::integer(self.out, n);
        Outcome::Reply
    }

    pub(super) fn exists(&mut self) -> Outcome {
        let now = self.now();
        let mut n = 0;
        for key in self.args.iter().skip(1) {
            if self.store.get(key, now).is_some() {
                n += 1;
            }
        }
        resp::integer(self.out, n);
        Outcome::Reply
    }

    pub(super) fn expire(&mut self, unit_ms: i64, absolute: bool, name: &str) -> Outcome {
        const NX: u8 = 1;
        const XX: u8 = 2;
        const GT: u8 = 4;
        const LT: u8 = 8;
        let mut flags = 0u8;
        for opt in self.args.iter().skip(3) {
            flags |= if is(opt, "nx") {
                NX
            } else if is(opt, "xx") {
                XX
            } else if is(opt, "gt") {
                GT
            } else if is(opt, "lt") {
                LT
            } else {
                let mut text = b"ERR Unsupported option ".to_vec();
                text.extend_from_slice(cstr(opt));
                error_sanitized(self.out, &text);
                return Outcome::Reply;
            };
        }
        if flags & NX != 0 && flags & (XX | GT | LT) != 0 {
            return self
                .err(b"ERR NX and XX, GT or LT options at the same time are not compatible");
        }
        if flags & GT != 0 && flags & LT != 0 {
            return self.err(b"ERR GT and LT options at the same time are not compatible");
        }
        let Some(mut when) = int_arg(self.arg(2)) else {
            return self.err(NOT_INTEGER);
        };
        let now = self.now();
        if unit_ms == 1000 {
            match when.checked_mul(1000) {
                Some(w) => when = w,
                None => {
                    expire_time_error(name, self.out);
                    return Outcome::Reply;
                }
            }
        }
        let base = if absolute { 0 } else { now as i64 };
        let Some(when) = when.checked_add(base) else {
            expire_time_error(name, self.out);
            return Outcome::Reply;
        };
        let key = self.args.arg(1);
        let current = match self.store.get(key, now) {
            None => {
                resp::integer(self.out, 0);
                return Outcome::Reply;
            }
            Some(e) => e.expires_at_ms,
        };
        let current = if current == 0 { -1 } else { current as i64 };
        let refused = (flags & NX != 0 && current != -1)
            || (flags & XX != 0 && current == -1)
            || (flags & GT != 0 && (when <= current || current == -1))
            || (flags & LT != 0 && current != -1 && when >= current);
        if refused {
            resp::integer(self.out, 0);
            return Outcome::Reply;
        }
        // A time not in the future deletes the key (set_expiry does it; 1 ms is the floor).
        let at = u64::try_from(when).unwrap_or(0).max(1);
        let rec = self.store.set_expiry(key, at, now);
        self.writes.extend(rec);
        resp::integer(self.out, 1);
        Outcome::Reply
    }

    pub(super) fn persist(&mut self) -> Outcome {
        let now = self.now();
        let key = self.args.arg(1);
        let has_ttl = self
            .store
            .get(key, now)
            .is_some_and(|e| e.expires_at_ms != 0);
        if !has_ttl {
            resp::integer(self.out, 0);
            return Outcome::Reply;
        }
        self.writes.extend(self.store.set_expiry(key, 0, now));
        resp::integer(self.out, 1);
        Outcome::Reply
    }

    pub(super) fn ttl(&mut self, unit_ms: i64) -> Outcome {
        let left = self.pttl_of(self.args.arg(1));
        let reply = if unit_ms == 1000 && left >= 0 {
            (left + 500) / 1000
        } else {
            left
        };
        resp::integer(self.out, reply);
        Outcome::Reply
    }

    /// PTTL's answer for `key`: milliseconds left, -1 without an expiry, -2 if missing.
    pub(super) fn pttl_of(&mut self, key: &[u8]) -> i64 {
        let now = self.now();
        match self.store.get(key, now) {
            None => -2,
            Some(e) if e.expires_at_ms == 0 => -1,
            Some(e) => i64::try_from(e.expires_at_ms.saturating_sub(now)).unwrap_or(i64::MAX),
        }
    }

    pub(super) fn scan(&mut self) -> Outcome {
        let Some(cursor) = scan_cursor(self.arg(1)) else {
            return self.err(b"ERR invalid cursor");
        };
        let mut count = 10usize;
        let mut pattern: Option<&[u8]> = None;
        let mut type_filter: Option<&[u8]> = None;
        let argc = self.args.len();
        let mut i = 2;
        while i < argc {
            let opt = self.args.arg(i);
            let has_next = i + 1 < argc;
            if is(opt, "count") && has_next {
                match int_arg(self.args.arg(i + 1)) {
                    None => return self.err(NOT_INTEGER),
                    Some(n) if n < 1 => return self.err(SYNTAX),
                    // COUNT is a hint; cap the work one call may do.
                    Some(n) => count = usize::try_from(n).unwrap_or(usize::MAX).min(100_000),
                }
            } else if is(opt, "match") && has_next {
                let p = self.args.arg(i + 1);
                pattern = (p != b"*").then_some(p);
            } else if is(opt, "type") && has_next {
                type_filter = Some(self.args.arg(i + 1));
            } else {
                return self.err(SYNTAX);
            }
            i += 2;
        }
        let now = self.now();
        let mut keys = Vec::new();
        let store = &*self.store;
        let next = store.scan(
            cursor,
            count,
            now,
            |k| pattern.is_none_or(|p| glob_match(p, k, false)),
            &mut keys,
        );
        if let Some(t) = type_filter {
            let want_hash = is(t, "hash");
            let want_string = is(t, "string");
            keys.retain(|k| {
                let is_hash = self
                    .store
                    .get(k, now)
                    .is_some_and(|e| matches!(e.value, Value::Hash(_)));
                (want_hash && is_hash) || (want_string && !is_hash)
            });
        }
        resp::array_header(self.out, 2);
        resp::bulk(self.out, next.to_string().as_bytes());
        resp::array_header(self.out, keys.len());
        for k in &keys {
            resp::bulk(self.out, k);
        }
        Outcome::Reply
    }

    pub(super) fn type_of(&mut self) -> Outcome {
        let now = self.now();
        let name: &[u8] = match self.store.get(self.args.arg(1), now) {
            None => b"none",
            Some(Entry {
                value: Value::Hash(_),
                ..
            }) => b"hash",
            Some(_) => b"string",
        };
        resp::simple(self.out, name);
        Outcome::Reply
    }

    /// KEYS: every live key matching the pattern (a walk of the whole store, as in Redis).
    pub(super) fn keys(&mut self) -> Outcome {
        let pattern = self.args.arg(1);
        let now = self.now();
        let mut keys = Vec::new();
        let mut cursor = 0;
        let mut size = 16usize;
        // Bounded: each step moves the cursor forward through the finite key space.
        loop {
            let before = keys.len();
            cursor = self.store.scan(
                cursor,
                1024,
                now,
                |k| pattern == b"*" || glob_match(pattern, k, false),
                &mut keys,
            );
            size = keys
                .iter()
                .skip(before)
                .fold(size, |acc, k| acc.saturating_add(resp::bulk_size(k.len())));
            if size > self.env.config.max_reply_bytes {
                return Outcome::Close;
            }
            if cursor == 0 {
                break;
            }
        }
        resp::array_header(self.out, keys.len());
        for k in &keys {
            resp::bulk(self.out, k);
        }
        Outcome::Reply
    }

    pub(super) fn expiretime(&mut self, ms: bool) -> Outcome {
        let now = self.now();
        let reply = match self.store.get(self.args.arg(1), now) {
            None => -2,
            Some(e) if e.expires_at_ms == 0 => -1,
            Some(e) if ms => e.expires_at_ms as i64,
            Some(e) => (e.expires_at_ms.saturating_add(500) / 1000) as i64,
        };
        resp::integer(self.out, reply);
        Outcome::Reply
    }
}
