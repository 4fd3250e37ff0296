//! The in-memory session store.
//!
//! Keys map to a string or a hash (field -> bytes, in insertion order, as Redis keeps small
//! hashes). Every entry carries a Lamport `version` and the `origin` node that took the write;
//! a deleted or expired key leaves a tombstone with the same pair.
//!
//! # Convergence rule
//! Every write carries a [`Stamp`] `(version, origin)`: local writes take
//! `version = clock + 1`, where `clock` is the greatest version this store has made or seen,
//! so a write made after seeing another one is ordered after it. A replicated record is the
//! part of a key's state one write changed (a SET the whole string, an HSET only the fields it
//! wrote, an INCR the counter's parts) and is merged into the stored state by
//! [`value::join`](crate::engine::value::join), which gives one state whatever the order of arrival
//! and however often a record is repeated: hashes merge per field, counters add each node's
//! increments, strings and whole-key writes go by last writer wins (the rule in full is in
//! [`crate::engine::value`]). Tombstones keep a late, older put from resurrecting a deleted key; they
//! are bounded in count and age ([`Limits::max_tombstones`], [`Limits::tombstone_ttl_ms`]),
//! and a put older than an evicted tombstone could resurrect the key, which is why the age
//! bound is long next to replication delays. A hash whose fields are all deleted (their
//! tombstones kept, at most [`MAX_FIELD_TOMBSTONES`]) reads as missing, and is aged out like
//! a key tombstone: dropped whole once it has been such a husk for the tombstone age bound
//! (it counts against the same count bound too).
//!
//! # Expiry
//! Expiry times are absolute unix milliseconds (0 = never), so both nodes expire a key at the
//! same instant up to their clock skew: a node whose clock runs ahead expires keys early.
//! Expired keys read as missing at once; [`Store::sweep`] frees them, bounded by a budget per
//! call, from a min-heap of (expiry, key hash) that is invalidated lazily (a popped item whose
//! key no longer expires then is skipped), so nothing scans the whole store on a timer.
//! Expiry is not replicated: each node expires by itself.
//!
//! # Bounds
//! [`Limits::max_sessions`] live keys and [`Limits::max_bytes`] of key + value bytes plus
//! [`ENTRY_OVERHEAD`] per key and [`FIELD_OVERHEAD`](crate::engine::value::FIELD_OVERHEAD) per hash field. A local write that would
//! pass either bound fails with [`StoreError::OutOfMemory`] and changes nothing; writes that do
//! not grow usage (deletes, shrinking overwrites) always pass.
//!
//! # Replicated value encoding
//! [`Replicate::value`] (and the value [`Store::apply_remote`] takes) is the encoding of
//! [`crate::engine::value`] (wire format version 2). A delete carries an empty value.
//!
//! Panics: never on any input, including malformed replicated values.

use std::cmp::Reverse;
use std::collections::hash_map::{Entry as MapEntry, RandomState};
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use smallvec::SmallVec;
use tandem_core::frame::{EntryRepr, Op, MAX_KEY_LEN, MAX_VALUE_LEN};
use tandem_core::NodeId;

use crate::engine::value::{join, string2ll};

/// Bytes charged per key besides its key and value bytes.
pub(crate) const ENTRY_OVERHEAD: usize = 64;
pub use crate::engine::value::Value;
pub(crate) use crate::engine::value::{Counter, Field, Hash, KeyState, Part, Stamp};

/// Store bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_bytes: usize,
    /// Largest encoded value (a hash grows by HSET; a string is bounded by the parser too).
    pub max_value_bytes: usize,
    pub max_tombstones: usize,
    pub tombstone_ttl_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_sessions: 1_000_000,
            max_bytes: 1 << 30,
            max_value_bytes: 1 << 20,
            max_tombstones: 100_000,
            tombstone_ttl_ms: 10 * 60 * 1000,
        }
    }
}

/// Why a write failed. In every case the store is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The write would pass `max_sessions` or `max_bytes` (refused).
    OutOfMemory,
    /// The new value would pass `max_value_bytes` (refused).
    ValueTooLarge,
    /// A replicated value that does not decode (malformed).
    Malformed,
}

/// Why an increment failed. The store is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncrError {
    /// The key holds a string that is not a base-10 64-bit integer.
    NotInteger,
    /// The result would pass the i64 range.
    Overflow,
    Store(StoreError),
}

/// A key's newest write and whether it reads as present ([`Store::revision`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revision {
    visible: bool,
    top: Stamp,
}

/// A live entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Value,
    /// The key's base: the last whole-key write.
    pub version: u64,
    pub origin: NodeId,
    /// The write that last set the expiry.
    pub expiry: Stamp,
    /// Absolute unix milliseconds; 0 = never.
    pub expires_at_ms: u64,
}

impl Entry {
    fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }

    pub fn base(&self) -> Stamp {
        Stamp::new(self.version, self.origin)
    }

    /// The newest write in the entry.
    pub fn top(&self) -> Stamp {
        self.value.top(self.base().max(self.expiry))
    }

    fn state(&self) -> KeyState {
        KeyState {
            base: self.base(),
            expiry: self.expiry,
            expires_at_ms: self.expires_at_ms,
            value: Some(self.value.clone()),
        }
    }

    /// Charged against `max_bytes` with its key.
    fn charge(&self, key: &[u8]) -> usize {
        key.len() + self.value.charge() + ENTRY_OVERHEAD
    }
}

/// A write to hand to replication: what one write changed in one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replicate {
    /// `Put` or `Delete` (the store never emits `Touch`; an expiry change is a `Put`).
    pub op: Op,
    pub key: Vec<u8>,
    pub version: u64,
    pub origin: NodeId,
    pub expires_at_ms: u64,
    /// Encoded value (module docs); empty for a delete.
    pub value: Vec<u8>,
}

impl Replicate {
    /// The record as one unchunked wire entry (the replication layer chunks large values).
    pub fn entry(&self) -> EntryRepr<'_> {
        EntryRepr {
            op: self.op,
            version: self.version,
            origin: self.origin,
            expires_at_ms: self.expires_at_ms,
            key: &self.key,
            total_len: u32::try_from(self.value.len()).unwrap_or(u32::MAX),
            offset: 0,
            value: &self.value,
        }
    }
}

/// The fixed part of a record inside a batch: op, version, origin, expiry, key length.
const BATCH_HEAD: usize = 1 + 8 + 2 + 8 + 2;

/// A transaction's records as one [`Op::Batch`] record, which a peer applies all together
/// or not at all (it arrives whole or not at all: its chunks are reassembled before it is
/// applied). Its value is `u16` the number of records, then each record in turn: `u8 op
/// (0x01 put, 0x02 delete), u64 version,
/// u16 origin, u64 expires_at_ms, u16 key_len, key, u32 value_len, value`; its key is empty,
/// its stamp the newest of the records'. `None` if the records do not fit one value
/// ([`MAX_VALUE_LEN`]): they then travel as consecutive records.
pub fn batch(records: &[Replicate], origin: NodeId) -> Option<Replicate> {
    let len: usize = 2 + records
        .iter()
        .map(|r| BATCH_HEAD + r.key.len() + 4 + r.value.len())
        .sum::<usize>();
    let count = u16::try_from(records.len()).ok()?;
    if len > MAX_VALUE_LEN as usize {
        return None;
    }
    let mut value = Vec::with_capacity(len);
    value.extend_from_slice(&count.to_be_bytes());
    for r in records {
        value.push(match r.op {
            Op::Delete => 0x02,
            _ => 0x01,
        });
        value.extend_from_slice(&r.version.to_be_bytes());
        value.extend_from_slice(&r.origin.0.to_be_bytes());
        value.extend_from_slice(&r.expires_at_ms.to_be_bytes());
        // Keys are at most MAX_KEY_LEN, values at most MAX_VALUE_LEN (checked above).
        value.extend_from_slice(&(r.key.len() as u16).to_be_bytes());
        value.extend_from_slice(&r.key);
        value.extend_from_slice(&(r.value.len() as u32).to_be_bytes());
        value.extend_from_slice(&r.value);
    }
    let version = records.iter().map(|r| r.version).max()?;
    Some(Replicate {
        op: Op::Batch,
        key: Vec::new(),
        version,
        origin,
        expires_at_ms: 0,
        value,
    })
}

/// The records of a batch's value, all of them or `Err` (nothing is applied from a batch
/// that does not decode whole). Allocates one item per record present.
pub(crate) fn unbatch(bytes: &[u8]) -> Result<Vec<EntryRepr<'_>>, StoreError> {
    let (count, mut bytes) = bytes
        .split_first_chunk::<2>()
        .ok_or(StoreError::Malformed)?;
    let count = usize::from(u16::from_be_bytes(*count));
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (head, rest) = bytes
            .split_first_chunk::<BATCH_HEAD>()
            .ok_or(StoreError::Malformed)?;
        let op = match head[0] {
            0x01 => Op::Put,
            0x02 => Op::Delete,
            _ => return Err(StoreError::Malformed),
        };
        let be64 = |b: &[u8]| b.try_into().map(u64::from_be_bytes);
        let version = be64(&head[1..9]).map_err(|_| StoreError::Malformed)?;
        let origin = NodeId(u16::from_be_bytes([head[9], head[10]]));
        let expires_at_ms = be64(&head[11..19]).map_err(|_| StoreError::Malformed)?;
        let key_len = usize::from(u16::from_be_bytes([head[19], head[20]]));
        if key_len > MAX_KEY_LEN || rest.len() < key_len {
            return Err(StoreError::Malformed);
        }
        let (key, rest) = rest.split_at(key_len);
        let (len, rest) = rest.split_first_chunk::<4>().ok_or(StoreError::Malformed)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len || (op == Op::Delete && len != 0) {
            return Err(StoreError::Malformed);
        }
        let (value, rest) = rest.split_at(len);
        out.push(EntryRepr {
            op,
            version,
            origin,
            expires_at_ms,
            key,
            total_len: u32::try_from(len).map_err(|_| StoreError::Malformed)?,
            offset: 0,
            value,
        });
        bytes = rest;
    }
    // Exactly the records announced: a value cut at a record boundary is refused too.
    if out.is_empty() || out.len() != count {
        return Err(StoreError::Malformed);
    }
    Ok(out)
}

/// How a replicated write was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It was newer and is now stored.
    Stored,
    /// The store already held an equal or newer version; nothing changed.
    Stale,
}

/// New expiry for [`Store::set_string`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No expiry (clears an existing one).
    Never,
    /// Keep the key's current expiry (Redis KEEPTTL).
    Keep,
    /// Absolute unix milliseconds, in the future.
    At(u64),
}

#[derive(Clone, Debug)]
enum Slot {
    Live(Entry),
    Dead { version: u64, origin: NodeId },
}

/// Keys with one 64-bit hash: almost always one, held inline in the map's own table, so a
/// lookup costs no pointer chase to a separate allocation.
type Bucket = SmallVec<[(Box<[u8]>, Slot); 1]>;

/// A key with its [`key_hash`], computed once per operation: every internal step of a write
/// (bounds check, install, tombstone) takes it instead of hashing the bytes again.
#[derive(Clone, Copy)]
struct Key<'a> {
    hash: u64,
    bytes: &'a [u8],
}

/// The buckets are keyed by [`key_hash`] already: hashing that again would be wasted work.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (u64 keys); fold anything else so it still works.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The session store. Lookups go through a hash map of key-hash buckets (O(1), the hot path
/// of every read and write); the key hashes are also kept ordered, so a SCAN or state
/// transfer cursor is just a hash value and stays valid while the store changes.
#[derive(Debug)]
pub struct Store {
    node: NodeId,
    limits: Limits,
    clock: u64,
    map: HashMap<u64, Bucket, BuildHasherDefault<PassThrough>>,
    /// Every key hash in `map`, in order (changes only when a bucket appears or goes).
    order: BTreeSet<u64>,
    /// Key of [`key_hash`], random per store.
    seed: RandomState,
    live: usize,
    /// Live keys with an expiry (INFO's `expires=`).
    expiring: usize,
    tombstones: usize,
    /// Hashes whose fields are all tombstones (kept for merging, not counted as live).
    husks: usize,
    bytes: usize,
    /// (expires_at_ms, key hash), lazily invalidated.
    expiry: BinaryHeap<Reverse<(u64, u64)>>,
    /// (deleted_at_ms, key hash, version, origin), oldest first, lazily invalidated.
    tomb_queue: VecDeque<(u64, u64, u64, NodeId)>,
    /// Tests only: fold every key hash into this many values, so buckets hold many keys.
    #[cfg(test)]
    crowd: Option<u64>,
}

/// The key hash that orders the store: SipHash under a key drawn at random per store, so a
/// client cannot choose keys that collide (the buckets use this hash as is). Cursor 0 means
/// "start", so hashes are >= 1. Cursors are meaningful within one process only.
fn key_hash(seed: &RandomState, key: &[u8]) -> u64 {
    let mut h = seed.build_hasher();
    h.write(key);
    h.finish().max(1)
}

fn entry_charge(key: &[u8], value: &Value) -> usize {
    key.len() + value.charge() + ENTRY_OVERHEAD
}

/// The record of a write `write` stamped `stamp` to `key`. A string's entry carries its base
/// (the encoding has no other place for it); a hash's or counter's the write's own stamp.
fn record(key: &[u8], stamp: Stamp, write: &KeyState) -> Replicate {
    let stamp = match write.value {
        Some(Value::Str(_)) => write.base,
        _ => stamp,
    };
    match &write.value {
        Some(v) => Replicate {
            op: Op::Put,
            key: key.to_vec(),
            version: stamp.version,
            origin: stamp.origin,
            expires_at_ms: write.expires_at_ms,
            value: v.encode(write.base, write.expiry),
        },
        None => Replicate {
            op: Op::Delete,
            key: key.to_vec(),
            version: write.base.version,
            origin: write.base.origin,
            expires_at_ms: 0,
            value: Vec::new(),
        },
    }
}

/// Most keys [`Store::presize`] makes room for (4 Mi: 4 MiB of control bytes up front).
const MAX_PRESIZED_KEYS: usize = 1 << 22;

impl Store {
    pub fn new(node: NodeId, limits: Limits) -> Store {
        Store {
            node,
            limits,
            clock: 0,
            map: HashMap::default(),
            order: BTreeSet::new(),
            seed: RandomState::new(),
            live: 0,
            expiring: 0,
            tombstones: 0,
            husks: 0,
            bytes: 0,
            expiry: BinaryHeap::new(),
            tomb_queue: VecDeque::new(),
            #[cfg(test)]
            crowd: None,
        }
    }

    /// Sizes the key map for the configured bound now, so that it never grows while the
    /// daemon runs: growing rehashes every key inside one insert (5.9 ms at 28,672 keys and
    /// 9.9 ms at 57,344 on the test VM), which on `fast` was a false suspicion or death of this
    /// node in the middle of a state transfer. Only the control bytes (one per slot) are
    /// touched now; the slots themselves as they fill. Above [`MAX_PRESIZED_KEYS`] the map
    /// still grows.
    pub(crate) fn presize(&mut self) {
        let want = self
            .limits
            .max_sessions
            .saturating_add(self.limits.max_tombstones)
            .min(MAX_PRESIZED_KEYS);
        self.map.reserve(want.saturating_sub(self.map.len()));
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Live keys (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Bytes charged against `max_bytes`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn tombstones(&self) -> usize {
        self.tombstones
    }

    /// Live keys with an expiry (expired ones not yet swept included).
    pub(crate) fn expiring(&self) -> usize {
        self.expiring
    }

    /// The Lamport clock: the greatest version made or seen.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    fn key<'a>(&self, bytes: &'a [u8]) -> Key<'a> {
        let hash = key_hash(&self.seed, bytes);
        #[cfg(test)]
        let hash = self.crowd.map_or(hash, |n| hash % n.max(1) + 1);
        Key { hash, bytes }
    }

    fn slot(&self, key: Key<'_>) -> Option<&Slot> {
        self.map
            .get(&key.hash)?
            .iter()
            .find(|(k, _)| &**k == key.bytes)
            .map(|(_, s)| s)
    }

    /// The live, unexpired entry of `key`. An expired one is turned into a tombstone here.
    pub fn get(&mut self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        let key = self.key(key);
        self.live_entry(key, now_ms)
    }

    /// [`Store::get`] for a hashed key.
    fn live_entry(&mut self, key: Key<'_>, now_ms: u64) -> Option<&Entry> {
        self.entry(key, now_ms).filter(|e| !e.value.is_husk())
    }

    /// The unexpired entry of `key`, a hash of tombstones only included. An expired one is
    /// turned into a tombstone here. The second lookup finds the bucket in cache.
    fn entry(&mut self, key: Key<'_>, now_ms: u64) -> Option<&Entry> {
        let expired = match self.slot(key)? {
            Slot::Live(e) => e.expired(now_ms),
            Slot::Dead { .. } => return None,
        };
        if expired {
            self.kill(key, None, now_ms);
            return None;
        }
        match self.slot(key)? {
            Slot::Live(e) => Some(e),
            Slot::Dead { .. } => None,
        }
    }

    /// The whole state of `key` (an expired entry becomes a tombstone first).
    fn state(&mut self, key: Key<'_>, now_ms: u64) -> KeyState {
        self.entry(key, now_ms);
        match self.slot(key) {
            Some(Slot::Live(e)) => e.state(),
            Some(Slot::Dead { version, origin }) => KeyState::dead(Stamp::new(*version, *origin)),
            None => KeyState::dead(Stamp::ZERO),
        }
    }

    /// The stamp the next local write takes.
    fn next_stamp(&self) -> Stamp {
        Stamp::new(self.clock.saturating_add(1), self.node)
    }

    /// Stores a string, replacing any value of any type.
    pub fn set_string(
        &mut self,
        key: &[u8],
        value: &[u8],
        expiry: Expiry,
        now_ms: u64,
    ) -> Result<Replicate, StoreError> {
        let key = self.key(key);
        let expires_at_ms = match expiry {
            Expiry::Never => 0,
            Expiry::Keep => self.live_entry(key, now_ms).map_or(0, |e| e.expires_at_ms),
            Expiry::At(t) => t,
        };
        let stamp = self.next_stamp();
        let write = KeyState {
            base: stamp,
            expiry: stamp,
            expires_at_ms,
            value: Some(Value::Str(value.to_vec())),
        };
        self.write_local(key, write, now_ms)
    }

    /// Sets fields of a hash (creating it); returns how many fields are new. Replicates only
    /// the fields written. The caller has checked that `key` holds no string.
    pub fn hset<'a>(
        &mut self,
        key: &[u8],
        pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        now_ms: u64,
    ) -> Result<(usize, Replicate), StoreError> {
        let key = self.key(key);
        let stamp = self.next_stamp();
        let cur = self.state(key, now_ms);
        let mut fields: Vec<Field> = Vec::new();
        let mut added = 0;
        for (f, v) in pairs {
            match fields.iter_mut().find(|g| g.name == f) {
                Some(g) => g.value = Some(v.to_vec()),
                None => {
                    added +=
                        usize::from(cur.value.as_ref().and_then(|c| c.hash_field(f)).is_none());
                    fields.push(Field::new(f, stamp, Some(v)));
                }
            }
        }
        let write = KeyState {
            base: cur.base,
            expiry: cur.expiry,
            expires_at_ms: cur.expires_at_ms,
            value: Some(Value::Hash(Hash { fields })),
        };
        Ok((added, self.write_local(key, write, now_ms)?))
    }

    /// Removes fields of a hash (each leaves a tombstone); returns how many existed.
    pub fn hdel<'a>(
        &mut self,
        key: &[u8],
        fields: impl Iterator<Item = &'a [u8]>,
        now_ms: u64,
    ) -> (usize, Option<Replicate>) {
        let key = self.key(key);
        let stamp = self.next_stamp();
        let cur = self.state(key, now_ms);
        let Some(value @ Value::Hash(_)) = &cur.value else {
            return (0, None);
        };
        let mut graves: Vec<Field> = Vec::new();
        for f in fields {
            if value.hash_field(f).is_some() && !graves.iter().any(|g| g.name == f) {
                graves.push(Field::new(f, stamp, None));
            }
        }
        if graves.is_empty() {
            return (0, None);
        }
        let removed = graves.len();
        let write = KeyState {
            base: cur.base,
            expiry: cur.expiry,
            expires_at_ms: cur.expires_at_ms,
            value: Some(Value::Hash(Hash { fields: graves })),
        };
        // Tombstones never grow the charge past the fields they replace: this cannot fail.
        (removed, self.write_local(key, write, now_ms).ok())
    }

    /// Adds `delta` to the integer in `key` (a missing key counts as 0, a string must hold a
    /// base-10 integer) and returns the new value. The key becomes a counter: this node's
    /// increments are kept apart from other nodes' and summed, so concurrent increments on
    /// several nodes all count. Keeps the expiry. The caller has checked `key` is no hash.
    pub fn incr(
        &mut self,
        key: &[u8],
        delta: i64,
        now_ms: u64,
    ) -> Result<(i64, Replicate), IncrError> {
        let key = self.key(key);
        let stamp = self.next_stamp();
        let cur = self.state(key, now_ms);
        let counter = match &cur.value {
            None => Counter {
                base: 0,
                parts: Vec::new(),
            },
            Some(Value::Str(v)) => Counter {
                base: string2ll(v).ok_or(IncrError::NotInteger)?,
                parts: Vec::new(),
            },
            Some(Value::Counter(c)) => c.clone(),
            // A hash of tombstones only reads as missing.
            Some(Value::Hash(_)) => Counter {
                base: 0,
                parts: Vec::new(),
            },
        };
        let (total, share) = self.share(&counter, delta, stamp)?;
        // Over a hash of tombstones only the counter is a new key (a whole-key write), else
        // it builds on the key's base, so that nodes incrementing one key at once share it.
        let (base, expiry, expires_at_ms) = match cur.value {
            Some(Value::Hash(_)) => (stamp, stamp, 0),
            _ => (cur.base, cur.expiry, cur.expires_at_ms),
        };
        let write = KeyState {
            base,
            expiry,
            expires_at_ms,
            value: Some(Value::Counter(share)),
        };
        let rec = self
            .write_local(key, write, now_ms)
            .map_err(IncrError::Store)?;
        Ok((total, rec))
    }

    /// `counter` plus `delta` made on this node at `stamp`: its new total, and this node's
    /// share as the write that replicates it (the merge sums it with the other shares).
    fn share(
        &self,
        counter: &Counter,
        delta: i64,
        stamp: Stamp,
    ) -> Result<(i64, Counter), IncrError> {
        let total = counter
            .total()
            .checked_add(delta)
            .ok_or(IncrError::Overflow)?;
        let mine = counter
            .parts
            .iter()
            .find(|p| p.node == self.node)
            .map_or(0, |p| p.sum);
        let sum = mine.checked_add(delta).ok_or(IncrError::Overflow)?;
        let share = Counter {
            base: counter.base,
            parts: vec![Part {
                node: self.node,
                version: stamp.version,
                sum,
            }],
        };
        Ok((total, share))
    }

    /// HINCRBY: adds `delta` to the integer in a hash field (a missing field counts as 0) and
    /// returns the new value. The field becomes a counter on its last write, with this node's
    /// increments kept apart from other nodes' and summed, as [`Store::incr`] does for a key:
    /// concurrent HINCRBYs of one field on several nodes all count. A missing field counts on
    /// its tombstone, or on the key's base if it has none, so that nodes incrementing it at
    /// once share that base. The caller has checked that `key` holds no string.
    pub fn hincr(
        &mut self,
        key: &[u8],
        field: &[u8],
        delta: i64,
        now_ms: u64,
    ) -> Result<(i64, Replicate), IncrError> {
        let key = self.key(key);
        let stamp = self.next_stamp();
        let cur = self.state(key, now_ms);
        let old = match &cur.value {
            Some(Value::Hash(h)) => h.fields.iter().find(|f| f.name == field),
            _ => None,
        };
        let (on, counter) = match old {
            None => (cur.base, Counter::default()),
            Some(f) => match (&f.counter, &f.value) {
                (Some(c), _) => (f.stamp, c.clone()),
                (None, Some(v)) => (
                    f.stamp,
                    Counter {
                        base: string2ll(v).ok_or(IncrError::NotInteger)?,
                        parts: Vec::new(),
                    },
                ),
                (None, None) => (f.stamp, Counter::default()),
            },
        };
        let (total, share) = self.share(&counter, delta, stamp)?;
        let write = KeyState {
            base: cur.base,
            expiry: cur.expiry,
            expires_at_ms: cur.expires_at_ms,
            value: Some(Value::Hash(Hash {
                fields: vec![Field::counting(field, on, share)],
            })),
        };
        let rec = self
            .write_local(key, write, now_ms)
            .map_err(IncrError::Store)?;
        Ok((total, rec))
    }

    /// What WATCH remembers of `key`: any write to it since, local or replicated, a change of
    /// its expiry, or its expiring, gives another revision.
    pub(crate) fn revision(&mut self, key: &[u8], now_ms: u64) -> Revision {
        let key = self.key(key);
        let state = self.state(key, now_ms);
        Revision {
            visible: state.value.as_ref().is_some_and(|v| !v.is_husk()),
            top: state.top(),
        }
    }

    /// Deletes a live key.
    pub fn delete(&mut self, key: &[u8], now_ms: u64) -> Option<Replicate> {
        let key = self.key(key);
        self.delete_key(key, now_ms)
    }

    fn delete_key(&mut self, key: Key<'_>, now_ms: u64) -> Option<Replicate> {
        self.live_entry(key, now_ms)?;
        let write = KeyState::dead(self.next_stamp());
        // A delete frees memory: the bounds pass.
        self.write_local(key, write, now_ms).ok()
    }

    /// Sets (`at_ms` > 0) or clears (`at_ms` == 0) a live key's expiry. A time not after
    /// `now_ms` deletes the key, as Redis does. The expiry has a stamp of its own, so it
    /// merges apart from concurrent field writes and increments.
    pub(crate) fn set_expiry(&mut self, key: &[u8], at_ms: u64, now_ms: u64) -> Option<Replicate> {
        let key = self.key(key);
        let entry = self.live_entry(key, now_ms)?;
        if at_ms != 0 && at_ms <= now_ms {
            return self.delete_key(key, now_ms);
        }
        let value = match &entry.value {
            Value::Str(v) => Value::Str(v.clone()),
            Value::Hash(_) => Value::Hash(Hash { fields: Vec::new() }),
            Value::Counter(c) => Value::Counter(Counter {
                base: c.base,
                parts: Vec::new(),
            }),
        };
        let write = KeyState {
            base: entry.base(),
            expiry: self.next_stamp(),
            expires_at_ms: at_ms,
            value: Some(value),
        };
        // Same value, so the size does not change and the bounds pass.
        self.write_local(key, write, now_ms).ok()
    }

    /// Merges a local write into `key` (it never exceeds the bounds or `max_value_bytes`, or
    /// nothing changes) and returns its record. The write's stamp is the next one.
    fn write_local(
        &mut self,
        key: Key<'_>,
        write: KeyState,
        now_ms: u64,
    ) -> Result<Replicate, StoreError> {
        let stamp = self.next_stamp();
        let cur = self.state(key, now_ms);
        let merged = join(&cur, &write);
        if merged.value.as_ref().is_some_and(|v| self.too_large(v)) {
            return Err(StoreError::ValueTooLarge);
        }
        self.store_state(key, &cur, merged, now_ms)?;
        self.clock = stamp.version;
        Ok(record(key.bytes, stamp, &write))
    }

    /// Whether a value passes `max_value_bytes` (a hash: its names and values), or its
    /// encoding the largest value the wire carries.
    fn too_large(&self, v: &Value) -> bool {
        v.data_len() > self.limits.max_value_bytes || v.encoded_len() > MAX_VALUE_LEN as usize
    }

    /// Replaces `key`'s state `cur` by `new` (already merged), within the bounds.
    fn store_state(
        &mut self,
        key: Key<'_>,
        cur: &KeyState,
        new: KeyState,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let Some(value) = new.value else {
            if cur.value.is_some() || cur.base != new.base {
                self.kill(key, Some((new.base.version, new.base.origin)), now_ms);
            }
            return Ok(());
        };
        if new.expires_at_ms != 0 && new.expires_at_ms <= now_ms {
            let top = value.top(new.base.max(new.expiry));
            self.kill(key, Some((top.version, top.origin)), now_ms);
            return Ok(());
        }
        self.check_bounds(key, &value)?;
        let entry = Entry {
            value,
            version: new.base.version,
            origin: new.base.origin,
            expiry: new.expiry,
            expires_at_ms: new.expires_at_ms,
        };
        // A husk ages out like a key tombstone: queued under its newest write, which any
        // later write to it changes (then the queued item is stale and skipped).
        let husk = entry.value.is_husk().then(|| entry.top());
        self.install(key, entry);
        if let Some(top) = husk {
            self.tomb_queue
                .push_back((now_ms, key.hash, top.version, top.origin));
            self.evict_tombstones(now_ms, usize::MAX);
        }
        Ok(())
    }

    fn check_bounds(&mut self, key: Key<'_>, value: &Value) -> Result<(), StoreError> {
        let new = entry_charge(key.bytes, value);
        let (old, visible) = match self.slot(key) {
            Some(Slot::Live(e)) => (e.charge(key.bytes), !e.value.is_husk()),
            _ => (0, false),
        };
        if !visible && !value.is_husk() && self.live >= self.limits.max_sessions {
            return Err(StoreError::OutOfMemory);
        }
        if new > old && self.bytes - old + new > self.limits.max_bytes {
            return Err(StoreError::OutOfMemory);
        }
        Ok(())
    }

    /// Counts a live entry in (`add`) or out of the totals.
    fn account(&mut self, key: &[u8], e: &Entry, add: bool) {
        let charge = e.charge(key);
        let husk = e.value.is_husk();
        let (live, husks, expiring) = (
            usize::from(!husk),
            usize::from(husk),
            usize::from(!husk && e.expires_at_ms != 0),
        );
        if add {
            self.bytes += charge;
            self.live += live;
            self.husks += husks;
            self.expiring += expiring;
        } else {
            self.bytes -= charge;
            self.live -= live;
            self.husks -= husks;
            self.expiring -= expiring;
        }
    }

    /// Puts a live entry in `key`'s slot, replacing whatever is there.
    fn install(&mut self, key: Key<'_>, entry: Entry) {
        let Key { hash, bytes: key } = key;
        if entry.expires_at_ms != 0 {
            self.expiry.push(Reverse((entry.expires_at_ms, hash)));
            self.compact_expiry();
        }
        self.account(key, &entry, true);
        let bucket = match self.map.entry(hash) {
            MapEntry::Occupied(o) => o.into_mut(),
            MapEntry::Vacant(v) => {
                self.order.insert(hash);
                v.insert(Bucket::new())
            }
        };
        let old = match bucket.iter_mut().find(|(k, _)| &**k == key) {
            Some((_, slot)) => Some(std::mem::replace(slot, Slot::Live(entry))),
            None => {
                bucket.push((key.into(), Slot::Live(entry)));
                None
            }
        };
        match old {
            Some(Slot::Live(e)) => self.account(key, &e, false),
            Some(Slot::Dead { .. }) => self.tombstones -= 1,
            None => {}
        }
    }

    /// Turns `key`'s slot into a tombstone stamped `stamp` (or the live entry's newest).
    fn kill(&mut self, key: Key<'_>, stamp: Option<(u64, NodeId)>, now_ms: u64) {
        let Key { hash, bytes: key } = key;
        let bucket = match self.map.entry(hash) {
            MapEntry::Occupied(o) => o.into_mut(),
            MapEntry::Vacant(v) => {
                self.order.insert(hash);
                v.insert(Bucket::new())
            }
        };
        let slot = match bucket.iter_mut().find(|(k, _)| &**k == key) {
            Some((_, slot)) => slot,
            None => {
                bucket.push((
                    key.into(),
                    Slot::Dead {
                        version: 0,
                        origin: NodeId(0),
                    },
                ));
                self.tombstones += 1;
                match bucket.last_mut() {
                    Some((_, slot)) => slot,
                    None => return,
                }
            }
        };
        // An expired entry's tombstone is newer than every write in it, so none of them can
        // bring it back.
        let (version, origin) = stamp.unwrap_or_else(|| match slot {
            Slot::Live(e) => {
                let top = e.top();
                (top.version, top.origin)
            }
            Slot::Dead { version, origin } => (*version, *origin),
        });
        let old = std::mem::replace(slot, Slot::Dead { version, origin });
        if let Slot::Live(e) = old {
            self.account(key, &e, false);
            self.tombstones += 1;
        }
        self.tomb_queue.push_back((now_ms, hash, version, origin));
        self.evict_tombstones(now_ms, usize::MAX);
    }

    /// Applies a replicated record by merging it into the key's state ([`crate::engine::value`]).
    /// A `Touch` (which this store never emits) sets the expiry of a live entry as a write
    /// of the expiry stamped like the entry.
    ///
    /// Errors leave the entries unchanged: `Malformed` (the value does not decode; the clock
    /// is untouched too), `ValueTooLarge` (the merged value would pass `max_value_bytes`) and
    /// `OutOfMemory` (it does not fit; the clock has advanced; the caller decides, e.g. log
    /// and count).
    pub(crate) fn apply_remote(
        &mut self,
        e: &EntryRepr<'_>,
        now_ms: u64,
    ) -> Result<Applied, StoreError> {
        if e.op == Op::Batch {
            return self.apply_batch(e, now_ms);
        }
        let stamp = Stamp::new(e.version, e.origin);
        let key = self.key(e.key);
        let write = match e.op {
            Op::Put => {
                let (base, expiry, value) =
                    Value::decode(e.value, stamp).map_err(|_| StoreError::Malformed)?;
                KeyState {
                    base,
                    expiry,
                    expires_at_ms: e.expires_at_ms,
                    value: Some(value),
                }
            }
            Op::Delete => KeyState::dead(stamp),
            // Unpacked above.
            Op::Batch => return Err(StoreError::Malformed),
            Op::Touch => match self.entry(key, now_ms) {
                Some(entry) => KeyState {
                    expiry: stamp,
                    expires_at_ms: e.expires_at_ms,
                    ..entry.state()
                },
                None => {
                    self.clock = self.clock.max(e.version);
                    return Ok(Applied::Stale);
                }
            },
        };
        self.clock = self.clock.max(e.version).max(write.top().version);
        let cur = self.state(key, now_ms);
        let merged = join(&cur, &write);
        if merged == cur {
            return Ok(Applied::Stale);
        }
        if merged.value.as_ref().is_some_and(|v| self.too_large(v)) {
            return Err(StoreError::ValueTooLarge);
        }
        self.store_state(key, &cur, merged, now_ms)?;
        Ok(Applied::Stored)
    }

    /// A transaction's records ([`batch`]): decoded whole first, so a batch that does not
    /// decode changes nothing; then each is merged in order. A record over this node's
    /// memory bounds is refused as a single write would be (the others still apply), and the
    /// first such error is returned.
    fn apply_batch(&mut self, e: &EntryRepr<'_>, now_ms: u64) -> Result<Applied, StoreError> {
        let records = unbatch(e.value)?;
        let mut result = Ok(Applied::Stale);
        for r in &records {
            match self.apply_remote(r, now_ms) {
                Ok(Applied::Stored) if result.is_ok() => result = Ok(Applied::Stored),
                Ok(_) => {}
                Err(err) if result.is_ok() => result = Err(err),
                Err(_) => {}
            }
        }
        result
    }

    /// The current state of `key` as a replication record: a `Put` for a live entry, a
    /// `Delete` for a tombstone, `None` if the store knows nothing of it. Used by state
    /// transfer; expired entries are reported as deletes.
    pub fn record(&self, key: &[u8], now_ms: u64) -> Option<Replicate> {
        let slot = self.slot(self.key(key))?;
        Some(record_of(key, slot, now_ms))
    }

    /// One chunk of a full state transfer: up to `max_entries` records (live entries and
    /// tombstones) in key-hash order from `cursor` (0 = start); returns the next cursor, 0 when
    /// done. A key present for the whole transfer is sent at least once, whatever changes in
    /// between (changes are replicated by the normal stream anyway).
    pub(crate) fn sync_chunk(
        &self,
        cursor: u64,
        max_entries: usize,
        now_ms: u64,
        out: &mut Vec<Replicate>,
    ) -> u64 {
        let mut taken = 0;
        for (&hash, bucket) in self.ordered(cursor) {
            if taken >= max_entries.max(1) {
                return hash;
            }
            for (k, slot) in bucket {
                out.push(record_of(k, slot, now_ms));
                taken += 1;
            }
        }
        0
    }

    /// SCAN: live keys in key-hash order from `cursor`, visiting about `count` keys and
    /// keeping those `filter` accepts; returns the next cursor (0 when done).
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        now_ms: u64,
        mut filter: impl FnMut(&[u8]) -> bool,
        out: &mut Vec<Vec<u8>>,
    ) -> u64 {
        let mut visited = 0;
        for (&hash, bucket) in self.ordered(cursor) {
            if visited >= count.max(1) {
                return hash;
            }
            for (k, slot) in bucket {
                if let Slot::Live(e) = slot {
                    visited += 1;
                    if !e.expired(now_ms) && !e.value.is_husk() && filter(k) {
                        out.push(k.to_vec());
                    }
                }
            }
        }
        0
    }

    /// Frees expired entries and aged tombstones, doing at most about `budget` units of work.
    /// Returns when it should next be called (unix ms), or `None` if nothing is due ever.
    pub fn sweep(&mut self, now_ms: u64, budget: usize) -> Option<u64> {
        let mut work = 0;
        while work < budget {
            match self.expiry.peek() {
                Some(&Reverse((at, hash))) if at <= now_ms => {
                    self.expiry.pop();
                    work += 1;
                    let due: Vec<Box<[u8]>> = self
                        .map
                        .get(&hash)
                        .into_iter()
                        .flatten()
                        .filter(|(_, s)| matches!(s, Slot::Live(e) if e.expired(now_ms)))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in due {
                        self.kill(Key { hash, bytes: &k }, None, now_ms);
                    }
                }
                _ => break,
            }
        }
        self.evict_tombstones(now_ms, budget.saturating_sub(work));
        let next_expiry = self.expiry.peek().map(|Reverse((at, _))| *at);
        let next_tomb = self
            .tomb_queue
            .front()
            .map(|(at, ..)| at.saturating_add(self.limits.tombstone_ttl_ms));
        match (next_expiry, next_tomb) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops tombstones past the age bound, and the oldest ones past the count bound.
    fn evict_tombstones(&mut self, now_ms: u64, budget: usize) {
        let mut work = 0;
        while work < budget {
            let Some(&(at, hash, version, origin)) = self.tomb_queue.front() else {
                break;
            };
            let aged = at.saturating_add(self.limits.tombstone_ttl_ms) <= now_ms;
            if !aged && self.tombstones + self.husks <= self.limits.max_tombstones {
                break;
            }
            self.tomb_queue.pop_front();
            work += 1;
            let Some(bucket) = self.map.get_mut(&hash) else {
                continue;
            };
            let Some(i) = bucket
                .iter()
                .position(|(_, s)| queued(s, Stamp::new(version, origin)))
            else {
                continue;
            };
            let (key, slot) = bucket.remove(i);
            let now_empty = bucket.is_empty();
            match slot {
                Slot::Dead { .. } => self.tombstones -= 1,
                Slot::Live(e) => self.account(&key, &e, false),
            }
            if now_empty {
                self.map.remove(&hash);
                self.order.remove(&hash);
            }
        }
        // Stale queue items (tombstones since overwritten) are dropped when they reach the
        // front; bound the queue itself too.
        if self.tomb_queue.len() > 2 * self.limits.max_tombstones.max(self.tombstones) + 1024 {
            self.tomb_queue.retain(|&(_, hash, version, origin)| {
                self.map.get(&hash).is_some_and(|b| {
                    b.iter()
                        .any(|(_, s)| queued(s, Stamp::new(version, origin)))
                })
            });
        }
    }

    /// Buckets in key-hash order from `cursor` (for cursors: SCAN, state transfer).
    fn ordered(&self, cursor: u64) -> impl Iterator<Item = (&u64, &Bucket)> + '_ {
        self.order
            .range(cursor..)
            .filter_map(|h| self.map.get(h).map(|b| (h, b)))
    }

    /// Rebuilds the expiry heap when stale items outnumber live ones (amortized O(1)).
    fn compact_expiry(&mut self) {
        if self.expiry.len() <= 2 * self.live + 1024 {
            return;
        }
        let mut items = Vec::new();
        for (&hash, bucket) in &self.map {
            for (_, slot) in bucket {
                if let Slot::Live(e) = slot {
                    if e.expires_at_ms != 0 {
                        items.push(Reverse((e.expires_at_ms, hash)));
                    }
                }
            }
        }
        self.expiry = BinaryHeap::from(items);
    }
}

/// Whether `slot` is what a tombstone queue item for `stamp` stands for: a key tombstone with
/// that stamp, or a husk whose newest write it is.
fn queued(slot: &Slot, stamp: Stamp) -> bool {
    match slot {
        Slot::Dead { version, origin } => Stamp::new(*version, *origin) == stamp,
        Slot::Live(e) => e.value.is_husk() && e.top() == stamp,
    }
}

fn record_of(key: &[u8], slot: &Slot, now_ms: u64) -> Replicate {
    match slot {
        Slot::Live(e) if !e.expired(now_ms) => record(key, e.top(), &e.state()),
        Slot::Live(e) => record(key, e.top(), &KeyState::dead(e.top())),
        Slot::Dead { version, origin } => record(
            key,
            Stamp::ZERO,
            &KeyState::dead(Stamp::new(*version, *origin)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    fn s(v: &[u8]) -> Value {
        Value::Str(v.to_vec())
    }

    /// A store whose keys share `hashes` hash values: every bucket holds several keys.
    fn crowded(node: NodeId, hashes: u64) -> Store {
        let mut st = Store::new(node, Limits::default());
        st.crowd = Some(hashes);
        st
    }

    /// Every key SCAN returns, `count` per call, sorted.
    fn scan_all(st: &Store, count: usize, now: u64) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        let mut cursor = 0;
        // Bounded: each call moves the cursor forward through a finite key space.
        loop {
            cursor = st.scan(cursor, count, now, |_| true, &mut seen);
            if cursor == 0 {
                break;
            }
        }
        seen.sort();
        seen
    }

    /// [`Store::expiring`] counted the slow way.
    fn recount_expiring(st: &Store) -> usize {
        st.map
            .values()
            .flatten()
            .filter(
                |(_, s)| matches!(s, Slot::Live(e) if e.expires_at_ms != 0 && !e.value.is_husk()),
            )
            .count()
    }

    fn dump(store: &mut Store, now: u64) -> Vec<Replicate> {
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            cursor = store.sync_chunk(cursor, 3, now, &mut out);
            if cursor == 0 {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        // Field order is each node's order of arrival: compare hashes as sets of fields.
        for r in &mut out {
            let stamp = Stamp::new(r.version, r.origin);
            if let Ok((base, expiry, Value::Hash(mut h))) = Value::decode(&r.value, stamp) {
                h.fields.sort_by(|a, b| a.name.cmp(&b.name));
                r.value = Value::Hash(h).encode(base, expiry);
            }
        }
        out
    }

    #[test]
    fn a_presized_map_holds_its_bound_without_growing() {
        let limits = Limits {
            max_sessions: 50_000,
            max_tombstones: 1_000,
            ..Limits::default()
        };
        let mut store = Store::new(NodeId(1), limits);
        store.presize();
        let room = store.map.capacity();
        assert!(room >= 51_000, "room for the bound: {room}");
        for i in 0..50_000u32 {
            store
                .set_string(format!("k{i}").as_bytes(), b"v", Expiry::Never, 1)
                .expect("within the bound");
        }
        assert_eq!(store.map.capacity(), room, "the map never grew");
    }

    #[test]
    fn lww_converges_in_any_order() {
        // Writes made on two nodes, interleaved with the views each had.
        let mut a = Store::new(A, Limits::default());
        let mut b = Store::new(B, Limits::default());
        let mut log = Vec::new();
        for i in 0..6u8 {
            let key = [b'k', b'0' + i % 3];
            log.push(a.set_string(&key, &[i], Expiry::Never, 0).expect("fits"));
            log.push(
                b.set_string(&key, &[100 + i], Expiry::At(1_000_000), 0)
                    .expect("fits"),
            );
            if i % 2 == 0 {
                log.extend(a.delete(&key, 0));
            }
            if i == 3 {
                let r = log[0].clone();
                b.apply_remote(&r.entry(), 0).expect("applies");
                log.extend(b.delete(&key, 0));
                let fields = [(&b"f"[..], &b"v"[..])];
                log.push(b.hset(b"h", fields.into_iter(), 0).expect("fits").1);
                log.push(a.hset(b"h", fields.into_iter(), 0).expect("fits").1);
            }
        }
        let reference = {
            let mut st = Store::new(NodeId(9), Limits::default());
            for r in &log {
                st.apply_remote(&r.entry(), 0).expect("applies");
            }
            dump(&mut st, 0)
        };
        assert!(!reference.is_empty());
        // Rotations and reversals of the log, applied to fresh stores and to the two nodes.
        let n = log.len();
        for rot in 0..n {
            for rev in [false, true] {
                let mut order: Vec<&Replicate> = log.iter().cycle().skip(rot).take(n).collect();
                if rev {
                    order.reverse();
                }
                let mut st = Store::new(NodeId(3), Limits::default());
                for r in order {
                    st.apply_remote(&r.entry(), 0).expect("applies");
                }
                assert_eq!(dump(&mut st, 0), reference, "rot {rot} rev {rev}");
            }
        }
        for r in &log {
            a.apply_remote(&r.entry(), 0).expect("applies");
            b.apply_remote(&r.entry(), 0).expect("applies");
        }
        assert_eq!(dump(&mut a, 0), reference);
        assert_eq!(dump(&mut b, 0), reference);
    }

    #[test]
    fn local_write_beats_everything_seen() {
        let mut a = Store::new(A, Limits::default());
        let mut b = Store::new(B, Limits::default());
        for _ in 0..5 {
            b.set_string(b"k", b"b", Expiry::Never, 0).expect("fits");
        }
        let rb = b.set_string(b"k", b"b", Expiry::Never, 0).expect("fits");
        a.apply_remote(&rb.entry(), 0).expect("applies");
        let ra = a.set_string(b"k", b"a", Expiry::Never, 0).expect("fits");
        assert!(ra.version > rb.version);
        assert_eq!(b.apply_remote(&ra.entry(), 0), Ok(Applied::Stored));
        assert_eq!(b.get(b"k", 0).map(|e| e.value.clone()), Some(s(b"a")));
        // Replaying an older write changes nothing.
        assert_eq!(b.apply_remote(&rb.entry(), 0), Ok(Applied::Stale));
    }

    #[test]
    fn tombstone_blocks_late_older_put() {
        let mut a = Store::new(A, Limits::default());
        let put = a.set_string(b"k", b"v", Expiry::Never, 0).expect("fits");
        let del = a.delete(b"k", 0).expect("was live");
        let mut b = Store::new(B, Limits::default());
        b.apply_remote(&del.entry(), 0).expect("applies");
        assert_eq!(b.apply_remote(&put.entry(), 0), Ok(Applied::Stale));
        assert!(b.get(b"k", 0).is_none());
        assert_eq!(b.tombstones(), 1);
        // The tombstone ages out by the sweep, after which the store is empty.
        let ttl = b.limits().tombstone_ttl_ms;
        assert_eq!(b.sweep(1, 100), Some(ttl));
        assert_eq!(b.sweep(ttl, 100), None);
        assert_eq!(b.tombstones(), 0);
    }

    #[test]
    fn tombstones_are_bounded_in_count() {
        let limits = Limits {
            max_tombstones: 4,
            ..Limits::default()
        };
        let mut a = Store::new(A, limits);
        for i in 0..20u8 {
            a.set_string(&[i], b"v", Expiry::Never, 0).expect("fits");
            a.delete(&[i], 0);
            assert!(a.tombstones() <= 4);
        }
        assert_eq!(a.tombstones(), 4);
        assert!(a.tomb_queue.len() <= 2 * 4 + 1024);
    }

    #[test]
    fn a_hash_whose_fields_are_all_deleted_ages_out_like_a_tombstone() {
        let limits = Limits::default();
        let ttl = limits.tombstone_ttl_ms;
        let mut a = Store::new(A, limits);
        let mut b = Store::new(B, limits);
        let f = |name: &'static [u8]| [(name, &b"v"[..])].into_iter();
        let (_, rec) = a.hset(b"h", f(b"f"), 0).expect("fits");
        b.apply_remote(&rec.entry(), 0).expect("applies");
        let (_, del) = a.hdel(b"h", [&b"f"[..]].into_iter(), 0);
        let del = del.expect("a field deleted");
        b.apply_remote(&del.entry(), 1).expect("applies");
        for st in [&mut a, &mut b] {
            assert!(st.get(b"h", 1).is_none(), "a husk reads as missing");
            assert_eq!((st.husks, st.len()), (1, 0));
            assert!(st.bytes() > 0, "the field tombstone is kept for merging");
            // Within the age bound it stays; a later field write revives it.
            st.sweep(ttl / 2, usize::MAX);
            assert_eq!(st.husks, 1);
        }
        let (_, again) = b.hset(b"h", f(b"g"), ttl / 2).expect("fits");
        a.apply_remote(&again.entry(), ttl / 2).expect("applies");
        for st in [&mut a, &mut b] {
            // Revived: the old queue item is stale, the live hash stays past it.
            st.sweep(ttl + 1, usize::MAX);
            assert_eq!((st.husks, st.len()), (0, 1));
            let (_, gone) = st.hdel(b"h", [&b"g"[..]].into_iter(), ttl + 2);
            assert!(gone.is_some());
            assert_eq!(st.husks, 1);
            // Aged out: nothing left of the key, not even its bytes.
            assert_eq!(st.sweep(2 * ttl + 2, usize::MAX), None);
            assert_eq!((st.husks, st.len(), st.bytes()), (0, 0, 0));
            assert!(st.slot(st.key(b"h")).is_none());
        }
    }

    #[test]
    fn a_batch_matches_protocol_md_and_applies_whole_or_not_at_all() {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let start = doc.find("```hex batch\n").expect("vector") + 13;
        let len = doc[start..].find("```").expect("closed");
        let vector: Vec<u8> = doc[start..start + len]
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).expect("hex"))
            .collect();
        let mut a = Store::new(A, Limits::default());
        let mut b = Store::new(B, Limits::default());
        let old = a.set_string(b"b", b"old", Expiry::Never, 0).expect("fits");
        b.apply_remote(&old.entry(), 0).expect("applies");
        // SET a 1 at (5, A), DEL b at (6, A).
        a.clock = 4;
        let set = a.set_string(b"a", b"1", Expiry::Never, 0).expect("fits");
        let del = a.delete(b"b", 0).expect("b was live");
        let batch = batch(&[set.clone(), del.clone()], A).expect("fits one value");
        assert_eq!(batch.value, vector);
        assert_eq!(
            (batch.op, batch.version, batch.key.len()),
            (Op::Batch, 6, 0)
        );
        let back = unbatch(&batch.value).expect("decodes");
        assert_eq!(back, vec![set.entry(), del.entry()]);
        // Every cut of it is refused whole and changes nothing.
        for cut in 1..vector.len() {
            let mut e = batch.entry();
            e.value = &vector[..cut];
            e.total_len = cut as u32;
            assert_eq!(
                b.apply_remote(&e, 0),
                Err(StoreError::Malformed),
                "cut {cut}"
            );
            assert!(b.get(b"a", 0).is_none() && b.get(b"b", 0).is_some());
        }
        assert_eq!(b.apply_remote(&batch.entry(), 0), Ok(Applied::Stored));
        assert!(b.get(b"a", 0).is_some() && b.get(b"b", 0).is_none());
        // Nothing nested, no op but put and delete, no empty batch.
        let mut nested = vector.clone();
        nested[2] = 0x04;
        assert!(unbatch(&nested).is_err());
        assert!(unbatch(&[]).is_err());
    }

    #[test]
    fn bounds_give_oom_and_keep_old_data() {
        let limits = Limits {
            max_sessions: 2,
            max_bytes: 2 * (ENTRY_OVERHEAD + 1 + 10),
            ..Limits::default()
        };
        let mut st = Store::new(A, limits);
        st.set_string(b"a", &[0; 10], Expiry::Never, 0)
            .expect("fits");
        assert_eq!(
            st.set_string(b"b", &[0; 11], Expiry::Never, 0),
            Err(StoreError::OutOfMemory)
        );
        st.set_string(b"b", &[1; 10], Expiry::Never, 0)
            .expect("fits");
        assert_eq!(
            st.set_string(b"c", b"", Expiry::Never, 0),
            Err(StoreError::OutOfMemory)
        );
        assert_eq!(
            st.set_string(b"a", &[2; 11], Expiry::Never, 0),
            Err(StoreError::OutOfMemory)
        );
        assert_eq!(st.get(b"a", 0).map(|e| e.value.clone()), Some(s(&[0; 10])));
        assert_eq!(st.get(b"b", 0).map(|e| e.value.clone()), Some(s(&[1; 10])));
        // Shrinking passes; deleting frees room.
        st.set_string(b"a", &[3; 2], Expiry::Never, 0)
            .expect("shrinks");
        st.delete(b"b", 0).expect("live");
        st.set_string(b"c", &[4; 10], Expiry::Never, 0)
            .expect("fits now");
        assert_eq!(st.len(), 2);
        assert_eq!(st.bytes(), 2 * ENTRY_OVERHEAD + 2 + 2 + 10);
    }

    #[test]
    fn expiry_on_read_and_by_sweep() {
        let mut st = Store::new(A, Limits::default());
        st.set_string(b"a", b"1", Expiry::At(100), 0).expect("fits");
        st.set_string(b"b", b"2", Expiry::At(200), 0).expect("fits");
        st.set_string(b"c", b"3", Expiry::Never, 0).expect("fits");
        assert!(st.get(b"a", 99).is_some());
        assert!(st.get(b"a", 100).is_none());
        assert_eq!(st.len(), 2);
        // Changing b's expiry leaves a stale heap item that the sweep skips.
        st.set_expiry(b"b", 300, 150).expect("live");
        assert_eq!(st.sweep(250, 10), Some(300));
        assert_eq!(st.len(), 2);
        // A budget of 1 does one unit of work per call.
        st.set_string(b"d", b"4", Expiry::At(300), 0).expect("fits");
        st.sweep(300, 1);
        assert_eq!(st.len(), 2);
        st.sweep(300, 1);
        assert_eq!(st.len(), 1);
        assert!(st.get(b"c", 10_000).is_some());
        // Expired keys left tombstones with their own versions.
        assert_eq!(st.record(b"a", 300).map(|r| r.op), Some(Op::Delete));
    }

    #[test]
    fn scan_visits_every_key_once_without_changes() {
        let mut st = Store::new(A, Limits::default());
        for i in 0..100u32 {
            st.set_string(&i.to_be_bytes(), b"v", Expiry::Never, 0)
                .expect("fits");
        }
        st.delete(&7u32.to_be_bytes(), 0);
        let seen = scan_all(&st, 7, 0);
        let mut want: Vec<Vec<u8>> = (0..100u32)
            .filter(|&i| i != 7)
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn expiring_counts_live_keys_with_an_expiry() {
        let mut a = Store::new(A, Limits::default());
        let mut b = Store::new(B, Limits::default());
        a.set_string(b"t1", b"v", Expiry::At(100), 0).expect("fits");
        a.set_string(b"t2", b"v", Expiry::At(200), 0).expect("fits");
        a.set_string(b"p", b"v", Expiry::Never, 0).expect("fits");
        assert_eq!((a.len(), a.expiring()), (3, 2));
        // KEEPTTL keeps it, a plain SET clears it, EXPIRE adds one, PERSIST removes one.
        a.set_string(b"t1", b"w", Expiry::Keep, 0).expect("fits");
        assert_eq!(a.expiring(), 2);
        a.set_string(b"t1", b"w", Expiry::Never, 0).expect("fits");
        assert_eq!(a.expiring(), 1);
        let rec = a.set_expiry(b"p", 300, 0).expect("live");
        assert_eq!(a.expiring(), 2);
        b.apply_remote(&rec.entry(), 0).expect("applies");
        assert_eq!((b.len(), b.expiring()), (1, 1));
        a.set_expiry(b"p", 0, 0).expect("live");
        assert_eq!(a.expiring(), 1);
        // Expiry by the sweep and a delete both uncount.
        a.set_string(b"p", b"v", Expiry::At(300), 0).expect("fits");
        a.sweep(250, 100);
        assert_eq!((a.len(), a.expiring()), (2, 1));
        a.delete(b"p", 260);
        assert_eq!((a.len(), a.expiring()), (1, 0));
    }

    #[test]
    fn keys_sharing_a_hash_stay_apart() {
        // One hash value for 30 keys: one bucket holds them all.
        let mut st = crowded(A, 1);
        let key = |i: u8| [b'k', i];
        for i in 0..30u8 {
            let expiry = if i % 5 == 0 {
                Expiry::At(50)
            } else {
                Expiry::Never
            };
            st.set_string(&key(i), &[i], expiry, 0).expect("fits");
        }
        assert_eq!(st.map.len(), 1);
        for i in (1..30u8).step_by(3) {
            assert!(st.delete(&key(i), 0).is_some());
        }
        st.set_string(&key(2), b"new", Expiry::Never, 0)
            .expect("fits");
        // Expiry frees only the expiring keys of a bucket, tombstone eviction only the dead.
        // Next due: the deletes' tombstones (made at 0) age out.
        assert_eq!(st.sweep(60, 1000), Some(st.limits().tombstone_ttl_ms));
        let seen = scan_all(&st, 4, 60);
        let live: Vec<Vec<u8>> = (0..30u8)
            .filter(|i| i % 3 != 1 && i % 5 != 0)
            .map(|i| key(i).to_vec())
            .collect();
        assert_eq!(seen, live);
        for i in 0..30u8 {
            let want = match i {
                2 => Some(b"new".to_vec()),
                _ if i % 3 == 1 || i % 5 == 0 => None,
                _ => Some(vec![i]),
            };
            let got = st
                .get(&key(i), 60)
                .map(|e| e.value.string().map(|v| v.into_owned()).unwrap_or_default());
            assert_eq!(got, want, "key {i}");
        }
        assert_eq!(st.len(), live.len());
        assert_eq!(st.sweep(60 + st.limits().tombstone_ttl_ms, 1000), None);
        assert_eq!(st.tombstones(), 0);
        assert_eq!(st.map.len(), 1);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum LocalOp {
            Set(u8, u8, bool),
            Del(u8),
            HSet(u8, u8),
            HDel(u8, u8),
            Incr(u8, i8),
            HIncr(u8, u8, i8),
            Expire(u8, u16),
            /// Deliver everything node `from` wrote so far to the other node.
            Sync,
        }

        fn op() -> impl Strategy<Value = (bool, LocalOp)> {
            let k = 0u8..4;
            (
                any::<bool>(),
                prop_oneof![
                    (k.clone(), any::<u8>(), any::<bool>())
                        .prop_map(|(k, v, t)| LocalOp::Set(k, v, t)),
                    k.clone().prop_map(LocalOp::Del),
                    (k.clone(), 0u8..3).prop_map(|(k, f)| LocalOp::HSet(k, f)),
                    (k.clone(), 0u8..3).prop_map(|(k, f)| LocalOp::HDel(k, f)),
                    (k.clone(), any::<i8>()).prop_map(|(k, d)| LocalOp::Incr(k, d)),
                    (k.clone(), 0u8..3, any::<i8>()).prop_map(|(k, f, d)| LocalOp::HIncr(k, f, d)),
                    (k, 1u16..500).prop_map(|(k, t)| LocalOp::Expire(k, t)),
                    Just(LocalOp::Sync),
                ],
            )
        }

        proptest! {
            /// Two nodes write concurrently with partial delivery in between; every
            /// permutation of all their writes, applied to a fresh store, gives one state, and
            /// so do both nodes once each has received everything.
            #[test]
            fn any_order_converges(ops in proptest::collection::vec(op(), 1..40), seed in any::<u64>(), crowd in any::<bool>()) {
                // Crowded stores put several keys in each bucket (one hash for many keys).
                let new = |n| if crowd { crowded(n, 2) } else { Store::new(n, Limits::default()) };
                let mut nodes = [new(A), new(B)];
                let mut logs: [Vec<Replicate>; 2] = [Vec::new(), Vec::new()];
                let mut delivered = [0usize; 2];
                let now = 1000;
                for (on_b, op) in &ops {
                    let i = usize::from(*on_b);
                    let st = &mut nodes[i];
                    let key = |k: &u8| [b'k', *k];
                    let recs: Vec<Replicate> = match op {
                        LocalOp::Set(k, v, ttl) => {
                            let exp = if *ttl { Expiry::At(now + 10_000) } else { Expiry::Never };
                            st.set_string(&key(k), &[*v], exp, now).into_iter().collect()
                        }
                        LocalOp::Del(k) => st.delete(&key(k), now).into_iter().collect(),
                        LocalOp::HSet(k, f) => {
                            let is_str = matches!(st.get(&key(k), now), Some(Entry { value: Value::Str(_), .. }));
                            if is_str { Vec::new() } else {
                                let pair = [(&[*f][..], &b"v"[..])];
                                st.hset(&key(k), pair.into_iter(), now).map(|(_, r)| r).into_iter().collect()
                            }
                        }
                        LocalOp::HDel(k, f) => st.hdel(&key(k), [&[*f][..]].into_iter(), now).1.into_iter().collect(),
                        LocalOp::Incr(k, d) => {
                            let is_hash = matches!(st.get(&key(k), now), Some(Entry { value: Value::Hash(_), .. }));
                            if is_hash { Vec::new() } else {
                                st.incr(&key(k), i64::from(*d), now).map(|(_, r)| r).into_iter().collect()
                            }
                        }
                        LocalOp::HIncr(k, f, d) => {
                            let is_hash = matches!(st.get(&key(k), now), None | Some(Entry { value: Value::Hash(_), .. }));
                            if is_hash {
                                st.hincr(&key(k), &[*f], i64::from(*d), now).map(|(_, r)| r).into_iter().collect()
                            } else { Vec::new() }
                        }
                        LocalOp::Expire(k, t) => st.set_expiry(&key(k), now + u64::from(*t) * 100, now).into_iter().collect(),
                        LocalOp::Sync => {
                            let other = 1 - i;
                            for r in &logs[i][delivered[i]..] {
                                nodes[other].apply_remote(&r.entry(), now).expect("applies");
                            }
                            delivered[i] = logs[i].len();
                            Vec::new()
                        }
                    };
                    logs[i].extend(recs);
                }
                // Deliver the rest.
                for i in 0..2 {
                    for r in &logs[i][delivered[i]..] {
                        nodes[1 - i].apply_remote(&r.entry(), now).expect("applies");
                    }
                }
                let all: Vec<Replicate> = logs.concat();
                let mut order: Vec<usize> = (0..all.len()).collect();
                let mut rng = tandem_core::testing::Rng::new(seed);
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i as u64 + 1) as usize);
                }
                let mut fresh = new(NodeId(7));
                for &i in &order {
                    fresh.apply_remote(&all[i].entry(), now).expect("applies");
                }
                let reference = dump(&mut fresh, now);
                let [mut a, mut b] = nodes;
                for st in [&a, &b, &fresh] {
                    prop_assert_eq!(st.expiring(), recount_expiring(st));
                }
                prop_assert_eq!(dump(&mut a, now), reference.clone());
                prop_assert_eq!(dump(&mut b, now), reference);
            }
        }

        #[derive(Clone, Debug)]
        enum Acked {
            /// HSET of a field no other write names, on key `k`.
            HSet(u8),
            Incr(u8, i8),
            /// HINCRBY of field `n0` or `n1` of hash `h<k>`.
            HIncr(u8, u8, i8),
            Expire(u8),
            /// Deliver what node `from` wrote so far (none of it before: a partition).
            Sync,
        }

        fn acked() -> impl Strategy<Value = (bool, Acked)> {
            let k = 0u8..3;
            (
                any::<bool>(),
                prop_oneof![
                    k.clone().prop_map(Acked::HSet),
                    (k.clone(), any::<i8>()).prop_map(|(k, d)| Acked::Incr(k, d)),
                    (k.clone(), 0u8..2, any::<i8>()).prop_map(|(k, f, d)| Acked::HIncr(k, f, d)),
                    k.prop_map(Acked::Expire),
                    Just(Acked::Sync),
                ],
            )
        }

        proptest! {
            /// The convergent types' promise: two nodes take HSETs of distinct fields and
            /// increments on shared keys, with expiry changes in between, delivered in any
            /// amount at any time (partitions included). Once everything is delivered both
            /// nodes hold every field written and every counter adds up to the sum of every
            /// increment, and the two stores are identical.
            #[test]
            fn every_acknowledged_field_and_increment_survives(ops in proptest::collection::vec(acked(), 1..60)) {
                let mut nodes = [Store::new(A, Limits::default()), Store::new(B, Limits::default())];
                let mut logs: [Vec<Replicate>; 2] = [Vec::new(), Vec::new()];
                let mut delivered = [0usize; 2];
                let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                let mut sums = [0i64; 3];
                let mut field_sums: HashMap<(u8, u8), i64> = HashMap::new();
                let now = 1000;
                // Hashes are keys h0..h2, counters c0..c2.
                for (n, (on_b, op)) in ops.iter().enumerate() {
                    let i = usize::from(*on_b);
                    let st = &mut nodes[i];
                    match op {
                        Acked::HSet(k) => {
                            let (key, field) = (vec![b'h', *k], format!("f{n}").into_bytes());
                            let (_, r) = st.hset(&key, [(&field[..], &b"v"[..])].into_iter(), now).expect("fits");
                            logs[i].push(r);
                            fields.push((key, field));
                        }
                        Acked::Incr(k, d) => {
                            let (_, r) = st.incr(&[b'c', *k], i64::from(*d), now).expect("fits");
                            logs[i].push(r);
                            sums[usize::from(*k)] += i64::from(*d);
                        }
                        Acked::HIncr(k, f, d) => {
                            let (_, r) = st.hincr(&[b'h', *k], &[b'n', *f], i64::from(*d), now).expect("fits");
                            logs[i].push(r);
                            *field_sums.entry((*k, *f)).or_default() += i64::from(*d);
                        }
                        Acked::Expire(k) => {
                            for key in [[b'h', *k], [b'c', *k]] {
                                logs[i].extend(st.set_expiry(&key, now + 1_000_000 + n as u64, now));
                            }
                        }
                        Acked::Sync => {
                            for r in &logs[i][delivered[i]..] {
                                nodes[1 - i].apply_remote(&r.entry(), now).expect("applies");
                            }
                            delivered[i] = logs[i].len();
                        }
                    }
                }
                for i in 0..2 {
                    for r in &logs[i][delivered[i]..] {
                        nodes[1 - i].apply_remote(&r.entry(), now).expect("applies");
                    }
                }
                let [mut a, mut b] = nodes;
                for st in [&mut a, &mut b] {
                    for (key, field) in &fields {
                        let held = st.get(key, now).and_then(|e| e.value.hash_field(field).map(<[u8]>::to_vec));
                        prop_assert_eq!(held, Some(b"v".to_vec()));
                    }
                    for (k, sum) in sums.iter().enumerate() {
                        let got = st.get(&[b'c', k as u8], now).and_then(|e| e.value.string().map(|v| v.into_owned()));
                        let touched = ops.iter().any(|(_, o)| matches!(o, Acked::Incr(j, _) if usize::from(*j) == k));
                        prop_assert_eq!(got, touched.then(|| sum.to_string().into_bytes()));
                    }
                    for ((k, f), sum) in &field_sums {
                        let got = st.get(&[b'h', *k], now).and_then(|e| e.value.hash_field(&[b'n', *f]).map(<[u8]>::to_vec));
                        prop_assert_eq!(got, Some(sum.to_string().into_bytes()));
                    }
                }
                prop_assert_eq!(dump(&mut a, now), dump(&mut b, now));
            }
        }
    }
}
