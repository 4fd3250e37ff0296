//! Transactions and scripts: EXEC runs a MULTI's queued commands as one write (WATCH is
//! checked first); EVAL, EVALSHA and SCRIPT run the known scripts natively.

use super::{
    execute, int_arg, is, store_error, unknown_script, unknown_subcommand, Client, Env, Exec,
    Outcome, NOT_INTEGER, OVERFLOW, WRONGTYPE,
};
use crate::engine::store::{Expiry, IncrError, Store};
use crate::resp;
use crate::resp::scripts::Script;
use crate::resp::{scripts, Args};

/// EXEC: runs the queued commands back to back (nothing else runs on this node in between:
/// the loop is single-threaded) and answers their replies as one array. Their records go to
/// replication together, as one write: in synchronous mode the reply is held until the peers
/// hold all of them.
pub(super) fn exec(
    client: &mut Client,
    store: &mut Store,
    env: &Env<'_>,
    out: &mut Vec<u8>,
) -> Outcome {
    let Some(multi) = client.multi.take() else {
        resp::error(out, b"ERR EXEC without MULTI");
        return Outcome::Reply;
    };
    let watched = std::mem::take(&mut client.watched);
    if multi.failed {
        resp::error(
            out,
            b"EXECABORT Transaction discarded because of previous errors.",
        );
        return Outcome::Reply;
    }
    // A watched key changed since WATCH (by this client, another, a replicated write from a
    // peer, or its expiry): the transaction does not run.
    if watched
        .iter()
        .any(|(key, rev)| store.revision(key, env.now_ms) != *rev)
    {
        resp::null_array(out, client.protocol);
        return Outcome::Reply;
    }
    resp::array_header(out, multi.queued.len());
    let mut writes = Vec::new();
    for (src, ranges) in &multi.queued {
        match execute(&Args::new(src, ranges), client, store, env, out) {
            Outcome::Write(records) => writes.extend(records),
            Outcome::Close => return Outcome::Close,
            Outcome::Reply | Outcome::Quit => {}
        }
    }
    if writes.is_empty() {
        Outcome::Reply
    } else {
        Outcome::Write(writes)
    }
}

impl Exec<'_, '_> {
    /// EVAL script numkeys key.. arg.. / EVALSHA sha1 numkeys ..: a script tandem knows
    /// ([`scripts`]) runs natively; any other is refused (EVALSHA: Redis's NOSCRIPT, on
    /// which clients retry with EVAL and get the explanation).
    pub(super) fn eval(&mut self, by_sha: bool) -> Outcome {
        let Some(numkeys) = int_arg(self.args.arg(2)) else {
            return self.err(b"ERR value is not an integer or out of range");
        };
        // Arity -3: at least the script, numkeys and the command name.
        let rest = self.args.len() - 3;
        if numkeys < 0 {
            return self.err(b"ERR Number of keys can't be negative");
        }
        let numkeys = usize::try_from(numkeys).unwrap_or(usize::MAX);
        if numkeys > rest {
            return self.err(b"ERR Number of keys can't be greater than number of args");
        }
        let body = self.args.arg(1);
        let found = if by_sha {
            scripts::by_sha(body)
        } else {
            scripts::by_text(body)
        };
        let Some(script) = found else {
            if by_sha {
                return self.err(b"NOSCRIPT No matching script. Please use EVAL.");
            }
            return self.err(&unknown_script(body));
        };
        let (want_keys, want_args) = script.arity();
        if numkeys < want_keys || rest - numkeys < want_args {
            let text =
                format!("ERR this script reads {want_keys} key(s) and {want_args} argument(s)");
            return self.err(text.as_bytes());
        }
        let key = self.args.arg(3);
        let argv = |i: usize| self.args.arg(3 + numkeys + i);
        match script {
            Script::CompareAndDelete => {
                let token = argv(0);
                match self.string_of(key) {
                    Err(()) => return self.err(WRONGTYPE),
                    Ok(Some(v)) if v == token => {
                        let now = self.now();
                        self.writes.extend(self.store.delete(key, now));
                        resp::integer(self.out, 1);
                    }
                    Ok(_) => resp::integer(self.out, 0),
                }
            }
            Script::IncrExpire => {
                let (Some(seconds), Some(amount)) = (int_arg(argv(0)), int_arg(argv(1))) else {
                    return self.err(NOT_INTEGER);
                };
                let Some(count) = self.script_incr(key, amount) else {
                    return Outcome::Reply;
                };
                if count == amount {
                    // Not 0, which would mean "no expiry": a time past deletes, as in Redis.
                    let at = self
                        .now()
                        .saturating_add_signed(seconds.saturating_mul(1000))
                        .max(1);
                    let now = self.now();
                    self.writes.extend(self.store.set_expiry(key, at, now));
                }
                resp::integer(self.out, count);
            }
            Script::WindowHit => {
                let window_ms = match int_arg(argv(0)) {
                    Some(ms) if ms > 0 => ms,
                    _ => return self.err(b"ERR invalid expire time in 'set' command"),
                };
                let left = self.pttl_of(key);
                let reply = if left <= 0 {
                    if self.string_of(key).is_err() || self.key_too_long(key) {
                        return Outcome::Reply;
                    }
                    let now = self.now();
                    let at = Expiry::At(now.saturating_add(window_ms.unsigned_abs()));
                    match self.store.set_string(key, b"1", at, now) {
                        Ok(rec) => self.writes.push(rec),
                        Err(e) => {
                            store_error(e, self.store.limits().max_value_bytes, self.out);
                            return Outcome::Reply;
                        }
                    }
                    (1, window_ms)
                } else {
                    let Some(count) = self.script_incr(key, 1) else {
                        return Outcome::Reply;
                    };
                    (count, left)
                };
                resp::array_header(self.out, 2);
                resp::integer(self.out, reply.0);
                resp::integer(self.out, reply.1);
            }
            Script::WindowRead => {
                let Ok(count) = self.string_of(key) else {
                    return self.err(WRONGTYPE);
                };
                let left = self.pttl_of(key);
                resp::array_header(self.out, 2);
                match count {
                    Some(v) => resp::bulk(self.out, &v),
                    // Lua's `false` (GET of a missing key) in a table answers as a null.
                    None => self.null(),
                }
                resp::integer(self.out, left);
            }
        }
        Outcome::Reply
    }

    /// INCRBY inside a script: the new count, or `None` with the error sent.
    pub(super) fn script_incr(&mut self, key: &[u8], by: i64) -> Option<i64> {
        if self.string_of(key).is_err() {
            self.err(WRONGTYPE);
            return None;
        }
        if self.key_too_long(key) {
            return None;
        }
        let now = self.now();
        match self.store.incr(key, by, now) {
            Ok((n, rec)) => {
                self.writes.push(rec);
                Some(n)
            }
            Err(IncrError::NotInteger) => {
                self.err(NOT_INTEGER);
                None
            }
            Err(IncrError::Overflow) => {
                self.err(OVERFLOW);
                None
            }
            Err(IncrError::Store(e)) => {
                store_error(e, self.store.limits().max_value_bytes, self.out);
                None
            }
        }
    }

    /// SCRIPT LOAD | EXISTS | FLUSH: the known scripts are built in, so LOAD only names a
    /// known one (and refuses others at once, not at their first EVALSHA) and FLUSH has
    /// nothing to drop.
    pub(super) fn script(&mut self) -> Outcome {
        let sub = self.args.arg(1);
        let argc = self.args.len();
        if is(sub, "load") && argc == 3 {
            let body = self.args.arg(2);
            if scripts::by_text(body).is_none() {
                return self.err(&unknown_script(body));
            }
            resp::bulk(self.out, &scripts::sha1_hex(body));
        } else if is(sub, "exists") && argc >= 3 {
            resp::array_header(self.out, argc - 2);
            for sha in self.args.iter().skip(2) {
                resp::integer(self.out, i64::from(scripts::by_sha(sha).is_some()));
            }
        } else if is(sub, "flush") && argc <= 3 {
            resp::simple(self.out, b"OK");
        } else {
            unknown_subcommand(self.out, sub, "SCRIPT");
        }
        Outcome::Reply
    }
}
