//! Counter commands on a key (INCR, DECR, INCRBY, DECRBY): convergent counters
//! (see [`crate::engine::value`]).

use super::{int_arg, store_error, Exec, Outcome, NOT_INTEGER, OVERFLOW, WRONGTYPE};
use crate::engine::store::IncrError;
use crate::resp;

impl Exec<'_, '_> {
    /// INCR, DECR (`by` given) and INCRBY (`by` from the argument).
    pub(super) fn incr(&mut self, by: Option<i64>) -> Outcome {
        let by = match by {
            Some(n) => n,
            None => match int_arg(self.arg(2)) {
                Some(n) => n,
                None => return self.err(NOT_INTEGER),
            },
        };
        self.incr_by(by)
    }

    pub(super) fn decrby(&mut self) -> Outcome {
        match int_arg(self.arg(2)) {
            None => self.err(NOT_INTEGER),
            Some(i64::MIN) => self.err(b"ERR decrement would overflow"),
            Some(n) => self.incr_by(-n),
        }
    }

    pub(super) fn incr_by(&mut self, by: i64) -> Outcome {
        let key = self.args.arg(1);
        if self.string_of(key).is_err() {
            return self.err(WRONGTYPE);
        }
        if self.key_too_long(key) {
            return Outcome::Reply;
        }
        let now = self.now();
        match self.store.incr(key, by, now) {
            Ok((n, rec)) => {
                self.writes.push(rec);
                resp::integer(self.out, n);
            }
            Err(IncrError::NotInteger) => resp::error(self.out, NOT_INTEGER),
            Err(IncrError::Overflow) => resp::error(self.out, OVERFLOW),
            Err(IncrError::Store(e)) => {
                store_error(e, self.store.limits().max_value_bytes, self.out)
            }
        }
        Outcome::Reply
    }
}
