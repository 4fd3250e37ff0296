//! String commands: GET, SET and its variants, MGET, SETNX, GETSET, GETDEL, GETEX.

use super::{is, store_error, Exec, Outcome, SYNTAX, WRONGTYPE};
use crate::engine::store::Expiry;
use crate::resp;

impl Exec<'_, '_> {
    pub(super) fn string_of(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ()> {
        let now = self.now();
        match self.store.get(key, now) {
            None => Ok(None),
            Some(e) => e.value.string().map(|v| Some(v.into_owned())).ok_or(()),
        }
    }

    pub(super) fn get(&mut self) -> Outcome {
        let now = self.now();
        match self
            .store
            .get(self.args.arg(1), now)
            .map(|e| e.value.string())
        {
            None => self.null(),
            Some(Some(v)) => resp::bulk(self.out, &v),
            Some(None) => resp::error(self.out, WRONGTYPE),
        }
        Outcome::Reply
    }

    pub(super) fn set(&mut self) -> Outcome {
        const NX: u8 = 1;
        const XX: u8 = 2;
        const GET: u8 = 4;
        const KEEPTTL: u8 = 8;
        const EX: u8 = 16;
        const PX: u8 = 32;
        const EXAT: u8 = 64;
        const PXAT: u8 = 128;
        const ANY_TTL: u8 = KEEPTTL | EX | PX | EXAT | PXAT;
        let mut flags = 0u8;
        let mut expire: Option<(&[u8], u8)> = None;
        let argc = self.args.len();
        let mut j = 3;
        while j < argc {
            let opt = self.args.arg(j);
            let has_next = j + 1 < argc;
            if is(opt, "nx") && flags & XX == 0 {
                flags |= NX;
            } else if is(opt, "xx") && flags & NX == 0 {
                flags |= XX;
            } else if is(opt, "get") {
                flags |= GET;
            } else if is(opt, "keepttl") && flags & (ANY_TTL & !KEEPTTL) == 0 {
                flags |= KEEPTTL;
            } else if let Some(unit) = [("ex", EX), ("px", PX), ("exat", EXAT), ("pxat", PXAT)]
                .iter()
                .find(|(w, _)| is(opt, w))
                .map(|&(_, u)| u)
                .filter(|&u| flags & (ANY_TTL & !u) == 0 && has_next)
            {
                flags |= unit;
                expire = Some((self.args.arg(j + 1), unit));
                j += 1;
            } else {
                return self.err(SYNTAX);
            }
            j += 1;
        }
        let now = self.now();
        let expiry = match expire {
            None if flags & KEEPTTL != 0 => Expiry::Keep,
            None => Expiry::Never,
            Some((arg, unit)) => {
                let seconds = unit == EX || unit == EXAT;
                match self.expire_arg(arg, seconds, unit == EX || unit == PX, "set") {
                    Some(at) => Expiry::At(at),
                    None => return Outcome::Reply,
                }
            }
        };
        let key = self.args.arg(1);
        // The old value and existence are looked up only when an option needs them (a plain
        // SET is the hot path; `set_string` looks the key up once more itself).
        let old = if flags & GET != 0 {
            match self.string_of(key) {
                Ok(old) => old,
                Err(()) => return self.err(WRONGTYPE),
            }
        } else {
            None
        };
        let found = flags & (NX | XX) != 0 && self.store.get(key, now).is_some();
        let proto = self.proto;
        let get_reply = |out: &mut Vec<u8>| match &old {
            Some(v) => resp::bulk(out, v),
            None => resp::null(out, proto),
        };
        if (flags & NX != 0 && found) || (flags & XX != 0 && !found) {
            if flags & GET != 0 {
                get_reply(self.out);
            } else {
                self.null();
            }
            return Outcome::Reply;
        }
        if self.key_too_long(key) {
            return Outcome::Reply;
        }
        match self.store.set_string(key, self.args.arg(2), expiry, now) {
            Ok(rec) => self.writes.push(rec),
            Err(e) => {
                store_error(e, self.store.limits().max_value_bytes, self.out);
                return Outcome::Reply;
            }
        }
        if flags & GET != 0 {
            get_reply(self.out);
        } else {
            resp::simple(self.out, b"OK");
        }
        Outcome::Reply
    }

    pub(super) fn setex(&mut self, unit_ms: i64, name: &str) -> Outcome {
        let now = self.now();
        let arg = self.args.arg(2);
        let Some(at) = self.expire_arg(arg, unit_ms == 1000, true, name) else {
            return Outcome::Reply;
        };
        let key = self.args.arg(1);
        if self.key_too_long(key) {
            return Outcome::Reply;
        }
        match self
            .store
            .set_string(key, self.args.arg(3), Expiry::At(at), now)
        {
            Ok(rec) => {
                self.writes.push(rec);
                resp::simple(self.out, b"OK");
            }
            Err(e) => store_error(e, self.store.limits().max_value_bytes, self.out),
        }
        Outcome::Reply
    }

    pub(super) fn mget(&mut self) -> Outcome {
        let now = self.now();
        // Size the reply first: a huge one closes the connection instead of growing memory.
        let mut size = 16usize;
        for key in self.args.iter().skip(1) {
            size = size.saturating_add(
                match self.store.get(key, now).and_then(|e| e.value.string()) {
                    Some(v) => resp::bulk_size(v.len()),
                    None => 5,
                },
            );
        }
        if size > self.env.config.max_reply_bytes {
            return Outcome::Close;
        }
        resp::array_header(self.out, self.args.len() - 1);
        for key in self.args.iter().skip(1) {
            match self.store.get(key, now).and_then(|e| e.value.string()) {
                Some(v) => resp::bulk(self.out, &v),
                None => self.null(),
            }
        }
        Outcome::Reply
    }

    pub(super) fn setnx(&mut self) -> Outcome {
        let key = self.args.arg(1);
        let now = self.now();
        if self.store.get(key, now).is_some() {
            resp::integer(self.out, 0);
            return Outcome::Reply;
        }
        if self.key_too_long(key) {
            return Outcome::Reply;
        }
        match self
            .store
            .set_string(key, self.args.arg(2), Expiry::Never, now)
        {
            Ok(rec) => {
                self.writes.push(rec);
                resp::integer(self.out, 1);
            }
            Err(e) => store_error(e, self.store.limits().max_value_bytes, self.out),
        }
        Outcome::Reply
    }

    pub(super) fn getset(&mut self) -> Outcome {
        let key = self.args.arg(1);
        let Ok(old) = self.string_of(key) else {
            return self.err(WRONGTYPE);
        };
        if self.key_too_long(key) {
            return Outcome::Reply;
        }
        let now = self.now();
        match self
            .store
            .set_string(key, self.args.arg(2), Expiry::Never, now)
        {
            Ok(rec) => {
                self.writes.push(rec);
                match old {
                    Some(v) => resp::bulk(self.out, &v),
                    None => self.null(),
                }
            }
            Err(e) => store_error(e, self.store.limits().max_value_bytes, self.out),
        }
        Outcome::Reply
    }

    pub(super) fn getdel(&mut self) -> Outcome {
        let key = self.args.arg(1);
        match self.string_of(key) {
            Err(()) => return self.err(WRONGTYPE),
            Ok(None) => self.null(),
            Ok(Some(v)) => {
                let now = self.now();
                self.writes.extend(self.store.delete(key, now));
                resp::bulk(self.out, &v);
            }
        }
        Outcome::Reply
    }

    pub(super) fn getex(&mut self) -> Outcome {
        const EX: u8 = 1;
        const PX: u8 = 2;
        const EXAT: u8 = 4;
        const PXAT: u8 = 8;
        const PERSIST: u8 = 16;
        let mut flags = 0u8;
        let mut expire: Option<(&[u8], u8)> = None;
        let argc = self.args.len();
        let mut j = 2;
        while j < argc {
            let opt = self.args.arg(j);
            let has_next = j + 1 < argc;
            // Redis's option rules: a unit may repeat (the last wins), but not mix with
            // another unit or PERSIST.
            const UNITS: u8 = EX | PX | EXAT | PXAT;
            if let Some(unit) = [("ex", EX), ("px", PX), ("exat", EXAT), ("pxat", PXAT)]
                .iter()
                .find(|(w, _)| is(opt, w))
                .map(|&(_, u)| u)
                .filter(|&u| flags & ((UNITS | PERSIST) & !u) == 0 && has_next)
            {
                flags |= unit;
                expire = Some((self.args.arg(j + 1), unit));
                j += 1;
            } else if is(opt, "persist") && flags & UNITS == 0 {
                flags |= PERSIST;
            } else {
                return self.err(SYNTAX);
            }
            j += 1;
        }
        let key = self.args.arg(1);
        let value = match self.string_of(key) {
            Err(()) => return self.err(WRONGTYPE),
            Ok(None) => {
                self.null();
                return Outcome::Reply;
            }
            Ok(Some(v)) => v,
        };
        let now = self.now();
        let at = match expire {
            None => None,
            Some((arg, unit)) => {
                let seconds = unit == EX || unit == EXAT;
                match self.expire_arg(arg, seconds, unit == EX || unit == PX, "getex") {
                    Some(at) => Some(at),
                    None => return Outcome::Reply,
                }
            }
        };
        resp::bulk(self.out, &value);
        match at {
            // A time not in the future deletes the key (set_expiry does it).
            Some(at) => self
                .writes
                .extend(self.store.set_expiry(key, at.max(1), now)),
            None if flags & PERSIST != 0 => {
                let has_ttl = self
                    .store
                    .get(key, now)
                    .is_some_and(|e| e.expires_at_ms != 0);
                if has_ttl {
                    self.writes.extend(self.store.set_expiry(key, 0, now));
                }
            }
            None => {}
        }
        Outcome::Reply
    }
}
