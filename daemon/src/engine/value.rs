//! Stored values and how two states of one key merge (the convergent data types).
//!
//! A key's state is its **base**, the [`Stamp`] of the last whole-key write (SET, DEL, an
//! expiry that deleted it), and what that write left, plus, for hashes and counters, the
//! smaller writes made since:
//! - a string ([`Value::Str`]): the base write's bytes;
//! - a hash ([`Value::Hash`]): fields, each with the stamp of its own last write (HSET) or
//!   delete (HDEL leaves the field as a tombstone, `value: None`), all newer than the base,
//!   and for a field HINCRBY counts in, per node the sum of that node's increments since;
//! - a counter ([`Value::Counter`]): the base's integer plus, per node, the sum of that
//!   node's increments since the base and the version of its latest.
//!
//! # The merge rule (a join: any order, any repetition, gives one state)
//! [`join`] of two states of one key:
//! 1. The base is the greater of the two bases.
//! 2. Hash fields of both sides newer than that base survive, per field name the newer
//!    write. If any survives (live or tombstone), the key is a hash of those fields: field
//!    writes made after a whole-key write are kept, so concurrent HSETs of distinct fields on
//!    two nodes all survive, and a `DEL` or `SET` removes exactly the fields written before it
//!    (by version). A hash whose fields are all tombstones reads as missing.
//! 3. Otherwise the base write decides: the side with the greater base, or at equal bases
//!    (the same write seen twice) the more refined state: counter > string > deleted. Two
//!    counters on one base add their parts, per node the later one (greater version).
//!    Increments made on a node that had not yet seen a newer `SET`/`DEL` of the key are
//!    ordered before that write: it replaces them.
//! 4. The expiry is a last-writer-wins register of its own, merged apart from the rest: the
//!    greater expiry stamp wins (a whole-key write stamps it with its base; EXPIRE on a hash
//!    or counter with a stamp of its own, so it neither drops nor is dropped by concurrent
//!    field writes or increments).
//!
//! Stamps are unique per write (a node's Lamport clock with its id), so equal stamps mean
//! the same write.
//!
//! # Replicated encoding (wire format version 2, inside an entry's value)
//! One tag byte, then (integers big-endian):
//! - `0x00` string: expiry stamp `u64 version, u16 origin`, then the bytes. Its base is the
//!   entry's own (version, origin).
//! - `0x01` hash: base `u64 version, u16 origin`, expiry stamp `u64, u16`, then per field
//!   `u8 flags (0x01 = live, 0x03 = live counter), u64 version, u16 origin, u32 name_len,
//!   name` and, if live, `u32 value_len, value`, or if a counter `i64 base value, u16 part
//!   count` and its parts as a counter's. A local HSET/HDEL/HINCRBY sends only the field it
//!   wrote; a state transfer sends them all; both merge by the same [`join`].
//! - `0x02` counter: base `u64, u16`, expiry stamp `u64, u16`, `i64 base value`, then per node
//!   in increasing node order `u16 node, u64 version, i64 sum`.
//!
//! The entry's (version, origin) is the write's own stamp (for a hash or counter the newest
//! stamp inside), which moves the receiver's Lamport clock.

use std::borrow::Cow;
use std::collections::HashMap;

use tandem_core::NodeId;

/// Bytes charged per hash field besides its name and value bytes.
pub(crate) const FIELD_OVERHEAD: usize = 16;
/// Bytes charged per counter part.
pub(crate) const PART_OVERHEAD: usize = 24;
/// Field tombstones one hash keeps at most; past it the oldest go first. A field write older
/// than an evicted tombstone could come back, as with key tombstones.
pub(crate) const MAX_FIELD_TOMBSTONES: usize = 1024;

pub const TAG_STRING: u8 = 0x00;
pub(crate) const TAG_HASH: u8 = 0x01;
pub(crate) const TAG_COUNTER: u8 = 0x02;
const FIELD_LIVE: u8 = 0x01;
/// With [`FIELD_LIVE`]: the field is a counter (HINCRBY), sent as its base and parts.
const FIELD_COUNTER: u8 = 0x02;
const COUNTING: u8 = FIELD_LIVE | FIELD_COUNTER;
const STAMP_LEN: usize = 10;
const PART_LEN: usize = 18;

/// A write's place in the convergence order: Lamport version, then the origin node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub version: u64,
    pub origin: NodeId,
}

impl Stamp {
    /// Before every write: the base of a key never written.
    pub const ZERO: Stamp = Stamp {
        version: 0,
        origin: NodeId(0),
    };

    pub fn new(version: u64, origin: NodeId) -> Stamp {
        Stamp { version, origin }
    }
}

/// Why a replicated value does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// One hash field: its last write, or its delete (`value: None`, a tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub stamp: Stamp,
    pub value: Option<Vec<u8>>,
    /// A field HINCRBY counts in: per-node shares on the integer the field's last write
    /// (`stamp`) left, as a key's counter on its base. `value` is then its total in decimal.
    pub counter: Option<Counter>,
}

impl Field {
    /// A field written whole (HSET) or deleted (`value: None`).
    pub fn new(name: &[u8], stamp: Stamp, value: Option<&[u8]>) -> Field {
        Field {
            name: name.to_vec(),
            stamp,
            value: value.map(<[u8]>::to_vec),
            counter: None,
        }
    }

    /// A field counting in `counter` on the write `stamp`.
    pub(crate) fn counting(name: &[u8], stamp: Stamp, counter: Counter) -> Field {
        Field {
            name: name.to_vec(),
            stamp,
            value: Some(counter.total().to_string().into_bytes()),
            counter: Some(counter),
        }
    }

    /// Its newest stamp: its write's, or a later increment's.
    fn top(&self) -> Stamp {
        self.counter
            .iter()
            .flat_map(|c| &c.parts)
            .map(|p| Stamp::new(p.version, p.node))
            .fold(self.stamp, Stamp::max)
    }

    /// Whether it outlives a whole-key write `base`: written after it, or counting on it
    /// (HINCRBY of a field the key did not hold after that write).
    fn survives(&self, base: Stamp) -> bool {
        self.stamp > base || (self.stamp == base && self.counter.is_some())
    }
}

/// A hash: fields in first-write order, names unique, every stamp newer than the key's base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hash {
    pub fields: Vec<Field>,
}

/// One node's share of a counter since its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub node: NodeId,
    /// Version of this node's latest increment.
    pub version: u64,
    pub sum: i64,
}

/// A PN-counter on a base value: reads as `base + sum of parts`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub base: i64,
    /// At most one per node, in node id order.
    pub parts: Vec<Part>,
}

impl Counter {
    /// The counter's value. Concurrent increments on two nodes can pass the i64 range
    /// together although each passed the overflow check alone: the value then saturates.
    pub fn total(&self) -> i64 {
        let t = self
            .parts
            .iter()
            .fold(i128::from(self.base), |acc, p| acc + i128::from(p.sum));
        i64::try_from(t).unwrap_or(if t < 0 { i64::MIN } else { i64::MAX })
    }
}

/// A stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(Vec<u8>),
    Hash(Hash),
    Counter(Counter),
}

impl Value {
    /// The value as a Redis string (a counter reads as its decimal value); `None` for a hash.
    pub fn string(&self) -> Option<Cow<'_, [u8]>> {
        match self {
            Value::Str(v) => Some(Cow::Borrowed(v)),
            Value::Counter(c) => Some(Cow::Owned(c.total().to_string().into_bytes())),
            Value::Hash(_) => None,
        }
    }

    /// A hash's live fields in order (nothing for a string or counter).
    pub fn hash_fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let h: &[Field] = match self {
            Value::Hash(h) => &h.fields,
            _ => &[],
        };
        h.iter()
            .filter_map(|f| Some((f.name.as_slice(), f.value.as_deref()?)))
    }

    /// A live field's value.
    pub fn hash_field(&self, name: &[u8]) -> Option<&[u8]> {
        match self {
            Value::Hash(h) => h.fields.iter().find(|f| f.name == name)?.value.as_deref(),
            _ => None,
        }
    }

    /// A hash whose fields are all tombstones: kept for merging, reads as missing.
    pub(crate) fn is_husk(&self) -> bool {
        matches!(self, Value::Hash(h) if h.fields.iter().all(|f| f.value.is_none()))
    }

    /// Bytes charged for this value (field tombstones included).
    pub(crate) fn charge(&self) -> usize {
        match self {
            Value::Str(v) => v.len(),
            Value::Hash(h) => h
                .fields
                .iter()
                .map(|f| {
                    f.name.len()
                        + f.value.as_ref().map_or(0, Vec::len)
                        + FIELD_OVERHEAD
                        + f.counter
                            .as_ref()
                            .map_or(0, |c| c.parts.len() * PART_OVERHEAD)
                })
                .sum(),
            Value::Counter(c) => 8 + c.parts.len() * PART_OVERHEAD,
        }
    }

    /// The bytes `--max-value-bytes` bounds: a string's, or a hash's names and values
    /// (tombstones' names included).
    pub(crate) fn data_len(&self) -> usize {
        match self {
            Value::Str(v) => v.len(),
            Value::Hash(h) => h
                .fields
                .iter()
                .map(|f| f.name.len() + f.value.as_ref().map_or(0, Vec::len))
                .sum(),
            Value::Counter(_) => 0,
        }
    }

    /// The newest stamp among the value's own writes, or `floor` if greater.
    pub fn top(&self, floor: Stamp) -> Stamp {
        match self {
            Value::Str(_) => floor,
            Value::Hash(h) => h.fields.iter().map(Field::top).fold(floor, Stamp::max),
            Value::Counter(c) => c
                .parts
                .iter()
                .map(|p| Stamp::new(p.version, p.node))
                .fold(floor, Stamp::max),
        }
    }

    /// Length of [`Value::encode`]'s output.
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Value::Str(v) => 1 + STAMP_LEN + v.len(),
            Value::Hash(h) => {
                1 + 2 * STAMP_LEN
                    + h.fields
                        .iter()
                        .map(|f| {
                            1 + STAMP_LEN
                                + 4
                                + f.name.len()
                                + match (&f.counter, &f.value) {
                                    (Some(c), _) => 8 + 2 + c.parts.len() * PART_LEN,
                                    (None, Some(v)) => 4 + v.len(),
                                    (None, None) => 0,
                                }
                        })
                        .sum::<usize>()
            }
            Value::Counter(c) => 1 + 2 * STAMP_LEN + 8 + c.parts.len() * PART_LEN,
        }
    }

    /// The replicated encoding (module docs) of this value on `base` with its expiry stamp.
    pub fn encode(&self, base: Stamp, expiry: Stamp) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        match self {
            Value::Str(v) => {
                out.push(TAG_STRING);
                put_stamp(&mut out, expiry);
                out.extend_from_slice(v);
            }
            Value::Hash(h) => {
                out.push(TAG_HASH);
                put_stamp(&mut out, base);
                put_stamp(&mut out, expiry);
                for f in &h.fields {
                    let flags = match (&f.counter, &f.value) {
                        (Some(_), _) => FIELD_LIVE | FIELD_COUNTER,
                        (None, Some(_)) => FIELD_LIVE,
                        (None, None) => 0,
                    };
                    out.push(flags);
                    put_stamp(&mut out, f.stamp);
                    put_chunk(&mut out, &f.name);
                    match (&f.counter, &f.value) {
                        (Some(c), _) => {
                            out.extend_from_slice(&c.base.to_be_bytes());
                            // At most one part per node id: fits in a u16.
                            out.extend_from_slice(&(c.parts.len() as u16).to_be_bytes());
                            put_parts(&mut out, &c.parts);
                        }
                        (None, Some(v)) => put_chunk(&mut out, v),
                        (None, None) => {}
                    }
                }
            }
            Value::Counter(c) => {
                out.push(TAG_COUNTER);
                put_stamp(&mut out, base);
                put_stamp(&mut out, expiry);
                out.extend_from_slice(&c.base.to_be_bytes());
                put_parts(&mut out, &c.parts);
            }
        }
        out
    }

    /// Decodes the replicated encoding of an entry stamped `stamp`: (base, expiry stamp,
    /// value). Allocates only as the bytes present allow; refuses duplicate names, counter
    /// nodes out of increasing order, and node id 0.
    pub fn decode(bytes: &[u8], stamp: Stamp) -> Result<(Stamp, Stamp, Value), Malformed> {
        let (&tag, rest) = bytes.split_first().ok_or(Malformed)?;
        match tag {
            TAG_STRING => {
                let (expiry, rest) = take_stamp(rest)?;
                Ok((stamp, expiry, Value::Str(rest.to_vec())))
            }
            TAG_HASH => {
                let (base, rest) = take_stamp(rest)?;
                let (expiry, mut rest) = take_stamp(rest)?;
                let mut fields: Vec<Field> = Vec::new();
                let mut names: HashMap<&[u8], ()> = HashMap::new();
                while !rest.is_empty() {
                    let (&flags, r) = rest.split_first().ok_or(Malformed)?;
                    let (fstamp, r) = take_stamp(r)?;
                    let (name, r) = take_chunk(r)?;
                    let (field, r) = match flags {
                        FIELD_LIVE => {
                            let (v, r) = take_chunk(r)?;
                            (Field::new(name, fstamp, Some(v)), r)
                        }
                        0 => (Field::new(name, fstamp, None), r),
                        COUNTING => {
                            let (b, r) = r.split_first_chunk::<8>().ok_or(Malformed)?;
                            let (n, r) = r.split_first_chunk::<2>().ok_or(Malformed)?;
                            let n = usize::from(u16::from_be_bytes(*n));
                            let len = n.checked_mul(PART_LEN).ok_or(Malformed)?;
                            if r.len() < len {
                                return Err(Malformed);
                            }
                            let (p, r) = r.split_at(len);
                            let counter = Counter {
                                base: i64::from_be_bytes(*b),
                                parts: take_parts(p)?,
                            };
                            (Field::counting(name, fstamp, counter), r)
                        }
                        _ => return Err(Malformed),
                    };
                    rest = r;
                    if names.insert(name, ()).is_some() {
                        return Err(Malformed);
                    }
                    fields.push(field);
                }
                Ok((base, expiry, Value::Hash(Hash { fields })))
            }
            TAG_COUNTER => {
                let (base, rest) = take_stamp(rest)?;
                let (expiry, rest) = take_stamp(rest)?;
                let (b, rest) = rest.split_first_chunk::<8>().ok_or(Malformed)?;
                let counter = Counter {
                    base: i64::from_be_bytes(*b),
                    parts: take_parts(rest)?,
                };
                Ok((base, expiry, Value::Counter(counter)))
            }
            _ => Err(Malformed),
        }
    }
}

fn put_parts(out: &mut Vec<u8>, parts: &[Part]) {
    for p in parts {
        out.extend_from_slice(&p.node.0.to_be_bytes());
        out.extend_from_slice(&p.version.to_be_bytes());
        out.extend_from_slice(&p.sum.to_be_bytes());
    }
}

/// Counter parts filling all of `rest`: nodes in increasing order (one encoding per state,
/// no duplicates), none 0.
fn take_parts(mut rest: &[u8]) -> Result<Vec<Part>, Malformed> {
    let mut parts: Vec<Part> = Vec::new();
    while !rest.is_empty() {
        let (p, r) = rest.split_first_chunk::<PART_LEN>().ok_or(Malformed)?;
        rest = r;
        let (node, p) = p.split_first_chunk::<2>().ok_or(Malformed)?;
        let (version, sum) = p.split_first_chunk::<8>().ok_or(Malformed)?;
        let node = NodeId(u16::from_be_bytes(*node));
        let sum: [u8; 8] = sum.try_into().map_err(|_| Malformed)?;
        if node.0 == 0 || parts.last().is_some_and(|q| q.node >= node) {
            return Err(Malformed);
        }
        parts.push(Part {
            node,
            version: u64::from_be_bytes(*version),
            sum: i64::from_be_bytes(sum),
        });
    }
    Ok(parts)
}

fn put_stamp(out: &mut Vec<u8>, s: Stamp) {
    out.extend_from_slice(&s.version.to_be_bytes());
    out.extend_from_slice(&s.origin.0.to_be_bytes());
}

fn put_chunk(out: &mut Vec<u8>, b: &[u8]) {
    // Names and values are bounded by max_value_bytes, far below 4 GiB.
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn take_stamp(b: &[u8]) -> Result<(Stamp, &[u8]), Malformed> {
    let (v, rest) = b.split_first_chunk::<8>().ok_or(Malformed)?;
    let (o, rest) = rest.split_first_chunk::<2>().ok_or(Malformed)?;
    Ok((
        Stamp::new(u64::from_be_bytes(*v), NodeId(u16::from_be_bytes(*o))),
        rest,
    ))
}

fn take_chunk(b: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let (len, rest) = b.split_first_chunk::<4>().ok_or(Malformed)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(Malformed);
    }
    Ok(rest.split_at(len))
}

/// One key's whole state for [`join`]: its base, its expiry register and, unless deleted,
/// its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    pub base: Stamp,
    /// The write that last set the expiry (at least `base` when it is the key's own).
    pub expiry: Stamp,
    /// Absolute expiry, unix ms; 0 = never.
    pub expires_at_ms: u64,
    pub value: Option<Value>,
}

impl KeyState {
    /// A deleted key (or one never written: [`Stamp::ZERO`]).
    pub fn dead(base: Stamp) -> KeyState {
        KeyState {
            base,
            expiry: base,
            expires_at_ms: 0,
            value: None,
        }
    }

    /// The newest stamp in the state.
    pub fn top(&self) -> Stamp {
        let floor = self.base.max(self.expiry);
        match &self.value {
            Some(v) => v.top(floor),
            None => floor,
        }
    }

    /// At equal bases, which state knows more of the base write (module docs, rule 3).
    fn rank(&self) -> u8 {
        match &self.value {
            Some(Value::Counter(_)) => 2,
            Some(Value::Str(_)) => 1,
            _ => 0,
        }
    }

    /// Orders two states that disagree about one write (same base and kind: only a faulty
    /// peer sends that), so that even then the merge does not depend on the order.
    fn tie(&self) -> Tie<'_> {
        match &self.value {
            Some(Value::Str(v)) => Tie::Bytes(v),
            Some(Value::Counter(c)) => Tie::Int(c.base),
            _ => Tie::None,
        }
    }

    fn fields(&self) -> &[Field] {
        match &self.value {
            Some(Value::Hash(h)) => &h.fields,
            _ => &[],
        }
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Tie<'a> {
    None,
    Bytes(&'a [u8]),
    Int(i64),
}

/// The merge of two states of one key (module docs).
pub fn join(a: &KeyState, b: &KeyState) -> KeyState {
    let base = a.base.max(b.base);
    let (expiry, expires_at_ms) = (a.expiry, a.expires_at_ms).max((b.expiry, b.expires_at_ms));
    let fields = join_fields(a.fields(), b.fields(), base);
    let value = if !fields.is_empty() {
        Some(Value::Hash(Hash { fields }))
    } else {
        let (hi, lo) = if (a.base, a.rank(), a.tie()) >= (b.base, b.rank(), b.tie()) {
            (a, b)
        } else {
            (b, a)
        };
        match (&hi.value, &lo.value) {
            (Some(Value::Counter(x)), Some(Value::Counter(y))) if hi.base == lo.base => {
                Some(Value::Counter(join_counters(x, y)))
            }
            (Some(Value::Hash(_)), _) => None,
            _ => hi.value.clone(),
        }
    };
    // A deleted key whose expiry register is newer than its base (an EXPIRE that came before
    // the fields it applies to, or raced a DEL) keeps the register as a hash of no fields,
    // which reads as missing.
    let value = match value {
        None if expiry > base => Some(Value::Hash(Hash { fields: Vec::new() })),
        v => v,
    };
    KeyState {
        base,
        expiry,
        expires_at_ms,
        value,
    }
}

/// Two counters on one base write: per node the later share. `x` is the one that wins a tie
/// of bases (only a faulty peer sends two counters on one write with different bases).
fn join_counters(x: &Counter, y: &Counter) -> Counter {
    let mut parts = x.parts.clone();
    for p in &y.parts {
        match parts.iter_mut().find(|q| q.node == p.node) {
            // The sum breaks a tie only between records that disagree about one
            // write (a faulty peer): the merge stays order-independent.
            Some(q) if (q.version, q.sum) < (p.version, p.sum) => *q = *p,
            Some(_) => {}
            None => parts.push(*p),
        }
    }
    // One order on every node, whatever the order of arrival.
    parts.sort_unstable_by_key(|p| p.node);
    Counter {
        base: x.base,
        parts,
    }
}

/// The merge of two states of one field: the newer write; for one write seen twice, the
/// more refined state (counting > written > deleted), two counters' shares joined.
fn join_field(g: &Field, f: &Field) -> Field {
    let rank = |f: &Field| (f.stamp, f.counter.is_some(), f.value.is_some());
    match (&g.counter, &f.counter) {
        (Some(x), Some(y)) if g.stamp == f.stamp => {
            let (x, y) = if x.base >= y.base { (x, y) } else { (y, x) };
            Field::counting(&g.name, g.stamp, join_counters(x, y))
        }
        _ if (rank(g), &g.value) < (rank(f), &f.value) => f.clone(),
        _ => g.clone(),
    }
}

/// Per name the newer of two field writes, only those newer than `base`; `a`'s order first.
/// Past [`MAX_FIELD_TOMBSTONES`] tombstones the oldest are dropped.
fn join_fields(a: &[Field], b: &[Field], base: Stamp) -> Vec<Field> {
    let mut out: Vec<Field> = a.iter().filter(|f| f.survives(base)).cloned().collect();
    if !b.is_empty() {
        let mut index: HashMap<Vec<u8>, usize> = out
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        // A deleted field written again goes to the end, as Redis appends a re-added field.
        let mut revived: Vec<usize> = Vec::new();
        for f in b.iter().filter(|f| f.survives(base)) {
            match index.get(&f.name) {
                Some(&i) => {
                    if let Some(g) = out.get_mut(i) {
                        let joined = join_field(g, f);
                        if g.value.is_none() && joined.value.is_some() {
                            revived.push(i);
                        }
                        *g = joined;
                    }
                }
                None => {
                    index.insert(f.name.clone(), out.len());
                    out.push(f.clone());
                }
            }
        }
        if !revived.is_empty() {
            let mut moved = Vec::with_capacity(revived.len());
            let mut kept = Vec::with_capacity(out.len());
            for (i, f) in out.into_iter().enumerate() {
                if revived.contains(&i) {
                    moved.push(f);
                } else {
                    kept.push(f);
                }
            }
            kept.extend(moved);
            out = kept;
        }
    }
    bound_tombstones(&mut out);
    out
}

/// Drops the oldest field tombstones past [`MAX_FIELD_TOMBSTONES`].
pub(crate) fn bound_tombstones(fields: &mut Vec<Field>) {
    let dead = fields.iter().filter(|f| f.value.is_none()).count();
    if dead <= MAX_FIELD_TOMBSTONES {
        return;
    }
    let mut stamps: Vec<Stamp> = fields
        .iter()
        .filter(|f| f.value.is_none())
        .map(|f| f.stamp)
        .collect();
    stamps.sort_unstable();
    // The newest MAX_FIELD_TOMBSTONES stay: drop those at or below the cut.
    if let Some(&cut) = stamps.get(dead - MAX_FIELD_TOMBSTONES - 1) {
        fields.retain(|f| f.value.is_some() || f.stamp > cut);
    }
}

/// Redis's `string2ll`: a decimal i64 with optional `-`, no `+`, no spaces, no leading zeros
/// (except "0" itself), no "-0", at most 20 characters.
pub(crate) fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > (i64::MAX as u64) + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string2ll_matches_redis() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"-1"), Some(-1));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"1a",
            b"-",
        ] {
            assert_eq!(string2ll(bad), None, "{:?}", bad);
        }
    }

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    /// A `hex value:NAME` block of docs/PROTOCOL.md.
    fn protocol_md_value(name: &str) -> Vec<u8> {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let fence = format!("```hex value:{name}\n");
        let start = doc.find(&fence).expect("vector in PROTOCOL.md") + fence.len();
        let len = doc[start..].find("```").expect("closed block");
        doc[start..start + len]
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).expect("hex"))
            .collect()
    }

    #[test]
    fn protocol_md_value_vectors() {
        let base = Stamp::new(5, A);
        let string = Value::Str(b"hello".to_vec());
        let hash = Value::Hash(Hash {
            fields: vec![
                Field::new(b"user", Stamp::new(0x11, B), Some(b"alice")),
                Field::new(b"cart", Stamp::new(0x12, B), None),
            ],
        });
        let parts = vec![
            Part {
                node: A,
                version: 7,
                sum: 3,
            },
            Part {
                node: B,
                version: 9,
                sum: -1,
            },
        ];
        let counter = Value::Counter(Counter {
            base: 10,
            parts: parts.clone(),
        });
        let shares = Counter { base: 0, parts };
        let hash_counter = Value::Hash(Hash {
            fields: vec![Field::counting(b"hits", base, shares)],
        });
        assert_eq!(hash_counter.hash_field(b"hits"), Some(&b"2"[..]));
        let s17 = Stamp::new(0x11, B);
        let cases = [
            ("string", string, s17, s17, s17),
            ("hash", hash, base, base, Stamp::new(0x12, B)),
            ("counter", counter.clone(), base, base, Stamp::new(9, B)),
            ("hash-counter", hash_counter, base, base, Stamp::new(9, B)),
        ];
        for (name, value, base, expiry, entry) in cases {
            let bytes = protocol_md_value(name);
            assert_eq!(value.encode(base, expiry), bytes, "{name}");
            assert_eq!(value.encoded_len(), bytes.len(), "{name}");
            assert_eq!(
                Value::decode(&bytes, entry),
                Ok((base, expiry, value)),
                "{name}"
            );
        }
        assert_eq!(counter.string().as_deref(), Some(&b"12"[..]));
    }

    #[test]
    fn decode_refuses_garbage() {
        let stamp = Stamp::new(1, A);
        let head = |tag: u8| {
            let mut v = vec![tag];
            v.extend_from_slice(&[0; 20]);
            v
        };
        let mut dup_field = head(TAG_HASH);
        for _ in 0..2 {
            dup_field.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, b'f']);
        }
        let mut bad_flags = head(TAG_HASH);
        bad_flags.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]);
        let mut cut_value = head(TAG_HASH);
        cut_value.extend_from_slice(&[
            1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, b'x',
        ]);
        let mut huge_len = head(TAG_HASH);
        huge_len.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        let mut counter = head(TAG_COUNTER);
        counter.extend_from_slice(&[0; 8]);
        let mut node0 = counter.clone();
        node0.extend_from_slice(&[0; PART_LEN]);
        let mut dup_node = counter.clone();
        for _ in 0..2 {
            dup_node.extend_from_slice(&[0, 1]);
            dup_node.extend_from_slice(&[0; 16]);
        }
        let mut short_part = counter.clone();
        short_part.extend_from_slice(&[0, 1, 0]);
        // A counting field claiming more parts than follow, and one with node 0.
        let mut many_parts = head(TAG_HASH);
        many_parts.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, b'f']);
        many_parts.extend_from_slice(&[0; 8]);
        many_parts.extend_from_slice(&[0xff, 0xff]);
        many_parts.extend_from_slice(&[0, 1]);
        many_parts.extend_from_slice(&[0; 16]);
        let mut field_node0 = head(TAG_HASH);
        field_node0.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, b'f']);
        field_node0.extend_from_slice(&[0; 8]);
        field_node0.extend_from_slice(&[0, 1]);
        field_node0.extend_from_slice(&[0; PART_LEN]);
        for bad in [
            &b""[..],
            b"\x03",
            b"\x00\x00",
            &head(TAG_HASH)[..15],
            &counter[..25],
            &dup_field,
            &bad_flags,
            &cut_value,
            &huge_len,
            &node0,
            &dup_node,
            &short_part,
            &many_parts,
            &field_node0,
        ] {
            assert_eq!(Value::decode(bad, stamp), Err(Malformed), "{bad:?}");
        }
        assert!(Value::decode(&head(TAG_HASH), stamp).is_ok());
        assert!(Value::decode(&counter, stamp).is_ok());
    }

    fn st(base: Stamp, value: Option<Value>) -> KeyState {
        KeyState {
            value,
            ..KeyState::dead(base)
        }
    }

    fn fields(pairs: &[(&str, u64, NodeId, Option<&str>)]) -> Value {
        Value::Hash(Hash {
            fields: pairs
                .iter()
                .map(|&(n, v, o, val)| {
                    Field::new(n.as_bytes(), Stamp::new(v, o), val.map(str::as_bytes))
                })
                .collect(),
        })
    }

    #[test]
    fn whole_key_writes_order_against_field_writes_by_version() {
        // A hash with fields at versions 3 (A) and 6 (B); a DEL at version 5 (A).
        let hash = st(
            Stamp::ZERO,
            Some(fields(&[
                ("old", 3, A, Some("x")),
                ("new", 6, B, Some("y")),
            ])),
        );
        let del = KeyState::dead(Stamp::new(5, A));
        let merged = join(&hash, &del);
        assert_eq!(merged, join(&del, &hash));
        assert_eq!(merged.base, Stamp::new(5, A));
        let v = merged.value.expect("a field survives");
        assert_eq!(
            v.hash_fields().collect::<Vec<_>>(),
            vec![(&b"new"[..], &b"y"[..])]
        );
        // A SET at version 7 replaces everything; idempotent.
        let set = st(Stamp::new(7, A), Some(Value::Str(b"s".to_vec())));
        let after = join(&join(&hash, &del), &set);
        assert_eq!(after.value, Some(Value::Str(b"s".to_vec())));
        assert_eq!(join(&after, &set), after);
    }

    #[test]
    fn counters_add_shares_and_a_newer_set_replaces_them() {
        let share = |node, version, sum| {
            st(
                Stamp::ZERO,
                Some(Value::Counter(Counter {
                    base: 0,
                    parts: vec![Part { node, version, sum }],
                })),
            )
        };
        let (a1, a2, b1) = (share(A, 1, 5), share(A, 3, 7), share(B, 2, -2));
        let all = join(&join(&a1, &b1), &a2);
        assert_eq!(all, join(&a2, &join(&b1, &a1)));
        let total = |s: &KeyState| {
            s.value
                .as_ref()
                .and_then(Value::string)
                .map(|v| v.into_owned())
        };
        assert_eq!(total(&all), Some(b"5".to_vec()));
        let set = st(Stamp::new(2, A), Some(Value::Str(b"100".to_vec())));
        assert_eq!(total(&join(&all, &set)), Some(b"100".to_vec()));
    }

    #[test]
    fn field_counters_add_shares_and_a_newer_field_write_replaces_them() {
        let base = Stamp::new(4, A);
        let share = |node, version, sum, on: Stamp, from: i64| {
            st(
                base,
                Some(Value::Hash(Hash {
                    fields: vec![Field::counting(
                        b"n",
                        on,
                        Counter {
                            base: from,
                            parts: vec![Part { node, version, sum }],
                        },
                    )],
                })),
            )
        };
        let read = |s: &KeyState| {
            s.value
                .as_ref()
                .and_then(|v| v.hash_field(b"n"))
                .map(<[u8]>::to_vec)
        };
        // Counting on the key's base (the field was missing): the shares survive it and add.
        let (a1, a2, b1) = (
            share(A, 5, 2, base, 0),
            share(A, 8, 7, base, 0),
            share(B, 6, -3, base, 0),
        );
        let all = join(&join(&a1, &b1), &a2);
        assert_eq!(all, join(&a2, &join(&b1, &a1)));
        assert_eq!(join(&all, &all), all);
        assert_eq!(read(&all), Some(b"4".to_vec()));
        assert_eq!(all.top(), Stamp::new(8, A));
        // On a field HSET to 10 at (5, B): the same write seen plain and counting joins to
        // the count; an older count (on the key's base) is replaced by that HSET.
        let hset = st(
            base,
            Some(Value::Hash(Hash {
                fields: vec![Field::new(b"n", Stamp::new(5, B), Some(b"10"))],
            })),
        );
        let on_hset = share(A, 9, 5, Stamp::new(5, B), 10);
        assert_eq!(read(&join(&hset, &on_hset)), Some(b"15".to_vec()));
        assert_eq!(join(&hset, &on_hset), join(&on_hset, &hset));
        assert_eq!(read(&join(&all, &hset)), Some(b"10".to_vec()));
        assert_eq!(
            read(&join(&join(&all, &hset), &on_hset)),
            Some(b"15".to_vec())
        );
        // A DEL after the base removes the counting field with every field before it.
        let del = KeyState::dead(Stamp::new(20, B));
        assert_eq!(join(&all, &del).value, None);
    }

    #[test]
    fn field_tombstones_are_bounded() {
        let mut f: Vec<Field> = (0..MAX_FIELD_TOMBSTONES as u64 + 10)
            .map(|i| Field::new(&i.to_be_bytes(), Stamp::new(i + 1, A), None))
            .collect();
        f.push(Field::new(b"live", Stamp::new(1, B), Some(b"")));
        bound_tombstones(&mut f);
        assert_eq!(f.len(), MAX_FIELD_TOMBSTONES + 1);
        assert!(f.iter().any(|g| g.name == b"live"));
        assert!(f
            .iter()
            .filter(|g| g.value.is_none())
            .all(|g| g.stamp.version > 10));
    }
}

/// The value fuzz target's body, shared with the test that replays its seed corpus.
#[doc(hidden)]
pub mod fuzzing {
    use super::{join, KeyState, Stamp, Value};
    use crate::engine::store::{Limits, Store};
    use tandem_core::frame::{EntryRepr, Op};
    use tandem_core::NodeId;

    /// `data` = two byte counts (u16 BE) then two encoded values (the rest goes to the second).
    /// Decoding never panics; values that decode round-trip through the encoding; their merge
    /// is commutative (up to the order of hash fields) and idempotent; a store takes them (as replicated entries) without
    /// panicking and both orders of arrival leave the same state.
    pub fn check(data: &[u8]) {
        let Some((n, rest)) = data.split_first_chunk::<2>() else {
            return;
        };
        let n = usize::from(u16::from_be_bytes(*n)).min(rest.len());
        let (x, y) = rest.split_at(n);
        let stamps = [Stamp::new(7, NodeId(1)), Stamp::new(9, NodeId(2))];
        let states: Vec<KeyState> = [x, y]
            .iter()
            .zip(stamps)
            .filter_map(|(b, s)| {
                let (base, expiry, value) = Value::decode(b, s).ok()?;
                let again = value.encode(base, expiry);
                assert_eq!(again.len(), value.encoded_len());
                assert_eq!(Value::decode(&again, s), Ok((base, expiry, value.clone())));
                Some(KeyState {
                    base,
                    expiry,
                    expires_at_ms: 0,
                    value: Some(value),
                })
            })
            .collect();
        // Field order is the order of arrival: compare hashes as sets of fields.
        let norm = |mut s: KeyState| {
            if let Some(Value::Hash(h)) = &mut s.value {
                h.fields.sort_by(|a, b| a.name.cmp(&b.name));
            }
            s
        };
        if let [a, b] = states.as_slice() {
            let ab = join(a, b);
            assert_eq!(norm(ab.clone()), norm(join(b, a)), "join is commutative");
            assert_eq!(norm(join(&ab, a)), norm(ab.clone()), "join is idempotent");
            assert_eq!(norm(join(&ab, b)), norm(ab), "join is idempotent");
        }
        let entries: Vec<EntryRepr<'_>> = [x, y]
            .iter()
            .zip(stamps)
            .map(|(b, s)| EntryRepr {
                op: Op::Put,
                version: s.version,
                origin: s.origin,
                expires_at_ms: 0,
                key: b"k",
                total_len: u32::try_from(b.len()).unwrap_or(u32::MAX),
                offset: 0,
                value: b,
            })
            .collect();
        let mut dumps = Vec::new();
        for order in [[0, 1], [1, 0]] {
            let mut store = Store::new(NodeId(3), Limits::default());
            for i in order {
                if let Some(e) = entries.get(i) {
                    let _ = store.apply_remote(e, 0);
                }
            }
            dumps.push(store.record(b"k", 0).map(|r| (r.op, r.value.len())));
        }
        assert_eq!(dumps.first(), dumps.get(1), "arrival order does not matter");
        check_batch(data);
    }

    /// The same bytes as a transaction's batch entry: decoding never panics, what decodes
    /// encodes back to the same bytes, and a store takes it (whole or refused) without
    /// panicking.
    fn check_batch(data: &[u8]) {
        use crate::engine::store::{batch, unbatch, Replicate};
        if let Ok(records) = unbatch(data) {
            let records: Vec<Replicate> = records
                .iter()
                .map(|e| Replicate {
                    op: e.op,
                    key: e.key.to_vec(),
                    version: e.version,
                    origin: e.origin,
                    expires_at_ms: e.expires_at_ms,
                    value: e.value.to_vec(),
                })
                .collect();
            let again = batch(&records, NodeId(1)).map(|b| b.value);
            assert_eq!(again.as_deref(), Some(data), "a batch round-trips");
        }
        let mut store = Store::new(NodeId(3), Limits::default());
        let _ = store.apply_remote(
            &EntryRepr {
                op: Op::Batch,
                version: 9,
                origin: NodeId(2),
                expires_at_ms: 0,
                key: b"",
                total_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
                offset: 0,
                value: data,
            },
            0,
        );
    }
}
