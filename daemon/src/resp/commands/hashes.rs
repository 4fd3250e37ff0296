//! Hash commands: HSET, HGET, HMGET, HGETALL, HDEL, HLEN, HEXISTS, HKEYS, HVALS, HINCRBY,
//! HSETNX.

use super::{
    arity_error, int_arg, store_error, Exec, Outcome, WrongType, HASH_NOT_INTEGER, NOT_INTEGER,
    OVERFLOW, WRONGTYPE,
};
use crate::engine::store::{Entry, IncrError, Value};
use crate::resp;

impl Exec<'_, '_> {
    /// The key's value if it is a hash (`Ok(None)` if missing); `Err` (WRONGTYPE sent) for
    /// a string.
    pub(super) fn hash_of(&mut self, key: &[u8]) -> Result<Option<&Value>, WrongType> {
        let now = self.now();
        match self.store.get(key, now) {
            None => Ok(None),
            Some(Entry {
                value: v @ Value::Hash(_),
                ..
            }) => Ok(Some(v)),
            Some(_) => {
                resp::error(self.out, WRONGTYPE);
                Err(WrongType)
            }
        }
    }

    /// A read of a hash (a missing key reads as an empty hash).
    pub(super) fn hash_read(
        &mut self,
        reply: impl FnOnce(&Value, &mut Vec<u8>, resp::Protocol),
    ) -> Outcome {
        let empty = Value::Hash(crate::engine::store::Hash { fields: Vec::new() });
        let key = self.args.arg(1);
        let now = self.now();
        match self.store.get(key, now) {
            None => reply(&empty, self.out, self.proto),
            Some(Entry {
                value: v @ Value::Hash(_),
                ..
            }) => reply(v, self.out, self.proto),
            Some(_) => resp::error(self.out, WRONGTYPE),
        }
        Outcome::Reply
    }

    /// HSET and HMSET.
    pub(super) fn hset(&mut self, name: &str) -> Outcome {
        if self.args.len() % 2 == 1 {
            arity_error(name, self.out);
            return Outcome::Reply;
        }
        let key = self.args.arg(1);
        if self.hash_of(key).is_err() || self.key_too_long(key) {
            return Outcome::Reply;
        }
        let args = *self.args;
        let pairs = (2..args.len())
            .step_by(2)
            .map(move |i| (args.arg(i), args.arg(i + 1)));
        let now = self.now();
        match self.store.hset(key, pairs, now) {
            Ok((added, rec)) => {
                self.writes.push(rec);
                if name == "hmset" {
                    resp::simple(self.out, b"OK");
                } else {
                    resp::integer(self.out, added as i64);
                }
            }
            Err(e) => store_error(e, self.store.limits().max_value_bytes, self.out),
        }
        Outcome::Reply
    }

    pub(super) fn hsetnx(&mut self) -> Outcome {
        let (key, field) = (self.args.arg(1), self.args.arg(2));
        match self.hash_of(key) {
            Err(WrongType) => return Outcome::Reply,
            Ok(Some(h)) if h.hash_field(field).is_some() => {
                resp::integer(self.out, 0);
                return Outcome::Reply;
            }
            Ok(_) => {}
        }
        if self.key_too_long(key) {
            return Outcome::Reply;
        }
        let now = self.now();
        let pair = [(field, self.args.arg(3))];
        match self.store.hset(key, pair.into_iter(), now) {
            Ok((_, rec)) => {
                self.writes.push(rec);
                resp::integer(self.out, 1);
            }
            Err(e) => store_error(e, self.store.limits().max_value_bytes, self.out),
        }
        Outcome::Reply
    }

    /// HINCRBY: a convergent counter in the field ([`Store::hincr`]), as INCR on a key.
    pub(super) fn hincrby(&mut self) -> Outcome {
        let Some(incr) = int_arg(self.arg(3)) else {
            return self.err(NOT_INTEGER);
        };
        let (key, field) = (self.args.arg(1), self.args.arg(2));
        if self.hash_of(key).is_err() || self.key_too_long(key) {
            return Outcome::Reply;
        }
        let now = self.now();
        match self.store.hincr(key, field, incr, now) {
            Ok((n, rec)) => {
                self.writes.push(rec);
                resp::integer(self.out, n);
            }
            Err(IncrError::NotInteger) => resp::error(self.out, HASH_NOT_INTEGER),
            Err(IncrError::Overflow) => resp::error(self.out, OVERFLOW),
            Err(IncrError::Store(e)) => {
                store_error(e, self.store.limits().max_value_bytes, self.out)
            }
        }
        Outcome::Reply
    }

    pub(super) fn hget(&mut self) -> Outcome {
        let field = self.args.arg(2);
        let value = match self.hash_of(self.args.arg(1)) {
            Err(WrongType) => return Outcome::Reply,
            Ok(h) => h.and_then(|h| h.hash_field(field)).map(<[u8]>::to_vec),
        };
        match value {
            Some(v) => resp::bulk(self.out, &v),
            None => self.null(),
        }
        Outcome::Reply
    }

    pub(super) fn hmget(&mut self) -> Outcome {
        let args = *self.args;
        let n = args.len() - 2;
        let values: Vec<Option<Vec<u8>>> = match self.hash_of(args.arg(1)) {
            Err(WrongType) => return Outcome::Reply,
            Ok(h) => (2..args.len())
                .map(|i| {
                    h.and_then(|h| h.hash_field(args.arg(i)))
                        .map(<[u8]>::to_vec)
                })
                .collect(),
        };
        resp::array_header(self.out, n);
        for v in &values {
            match v {
                Some(v) => resp::bulk(self.out, v),
                None => self.null(),
            }
        }
        Outcome::Reply
    }

    /// HGETALL, HKEYS, HVALS.
    pub(super) fn hash_list(&mut self, names: bool, values: bool) -> Outcome {
        let limit = self.env.config.max_reply_bytes;
        let mut close = false;
        let outcome = self.hash_read(|h, out, proto| {
            let size: usize = h
                .hash_fields()
                .map(|(f, v)| resp::bulk_size(f.len()) + resp::bulk_size(v.len()))
                .sum();
            if size > limit {
                close = true;
                return;
            }
            let n = h.hash_fields().count();
            if names && values {
                resp::map_header(out, proto, n);
            } else {
                resp::array_header(out, n);
            }
            for (f, v) in h.hash_fields() {
                if names {
                    resp::bulk(out, f);
                }
                if values {
                    resp::bulk(out, v);
                }
            }
        });
        if close {
            return Outcome::Close;
        }
        outcome
    }

    pub(super) fn hgetall(&mut self) -> Outcome {
        self.hash_list(true, true)
    }

    pub(super) fn hdel(&mut self) -> Outcome {
        let key = self.args.arg(1);
        if self.hash_of(key).is_err() {
            return Outcome::Reply;
        }
        let now = self.now();
        let (removed, rec) = self.store.hdel(key, self.args.iter().skip(2), now);
        self.writes.extend(rec);
        resp::integer(self.out, removed as i64);
        Outcome::Reply
    }
}
