//! Sealing and opening datagrams: AEAD providers, the keyring, and the receive path.
//!
//! A sealed datagram is `header (32 bytes, associated data) | body (encrypted) | tag (16)`.
//! No frame is sealed with a cluster key itself: each sending run (sender, cluster,
//! incarnation and the random salt the sender drew at start, all in the header, see [`Run`])
//! has its own run key, [`run_key`], derived from the cluster key with AES-CMAC. The nonce
//! is `salt (6) || seq (6)` from the header; the seq never repeats within a run ([`Sealer`]
//! owns the counter), so a (key, nonce) pair repeats only if two runs drew the same 48-bit
//! salt with the same node id and incarnation. Neither clocks nor configuration enter that
//! argument (docs/PROTOCOL.md). The keyring caches the run keys in use, so the KDF runs once
//! per run, not per frame.
//!
//! Two cluster keys, by role ([`KeyRole`]): heartbeats and leaves are sealed under the
//! *control* key, every other kind (session data, acks, retransmits, state transfer) under
//! the *data* key. A witness holds the control key only ([`Keys`] with an empty data
//! keyring): it votes, and it can neither read nor forge session data.
//!
//! The receive path is one call: [`Receiver::receive`] = [`open`] (cluster check, key lookup,
//! tag check, decrypt in place, parse) then the replay check, which only runs after the tag
//! verified so that forged frames never move a replay window.
//!
//! Panics: never. Every length is checked before use.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::cipher::BlockEncrypt;
use zerocopy::IntoBytes;

pub mod replay;
pub use replay::{Lane, ReplayTable, ReplayWindow};

use crate::frame::{
    Body, Error, Frame, HeaderRepr, HeartbeatRepr, Kind, FLAG_INSECURE, HEADER_LEN, MAX_SEQ,
    TAG_LEN,
};
use crate::id::{ClusterId, Incarnation, KeyId, NodeId, Salt};

/// AEAD nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-128 key length.
pub const KEY_LEN: usize = 16;

/// An authenticated cipher: seals a buffer in place with a detached 16-byte tag.
pub trait Aead {
    /// Encrypts `buf` in place and returns the tag over `aad` and the ciphertext.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error>;

    /// Verifies `tag` and decrypts `buf` in place. On [`Error::Auth`] the contents of `buf`
    /// are unspecified (RustCrypto `aes-gcm` 0.10 leaves them as they were, `ring` zeroes
    /// them) and must not be used: the caller drops the frame.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error>;

    /// True for a provider that gives no security (frames carry [`FLAG_INSECURE`]).
    fn is_insecure(&self) -> bool {
        false
    }

    /// What a [`Keyring`] keeps of a cluster key: its bytes (nothing for [`Insecure`]).
    /// Nothing is ever sealed under a cluster key itself, only under the run keys derived
    /// from it, so a keyring holds no cipher state for it.
    type Key: Clone;

    /// The cipher of `run`'s run key under cluster key `key` ([`run_key`]).
    fn derive(key: &Self::Key, run: &Run) -> Self
    where
        Self: Sized;

    /// Whether `key` belongs to a provider that gives no security.
    fn is_insecure_key(_key: &Self::Key) -> bool {
        false
    }
}

/// One sending run of a node, what its run key is derived from: `sender (2) || cluster (4)
/// || incarnation (4) || salt (6)`, big endian, which is header bytes 10..26 as sent, so a
/// receiver takes it from the frame with one copy. It is also the KDF context.
#[derive(Clone, Copy, Debug, Eq)]
pub struct Run(pub [u8; 16]);

impl PartialEq for Run {
    // Four word compares; the derived byte-array compare links `memcmp` (flash).
    fn eq(&self, other: &Run) -> bool {
        u128::from_ne_bytes(self.0) == u128::from_ne_bytes(other.0)
    }
}

impl Run {
    pub fn new(cluster: ClusterId, sender: NodeId, incarnation: Incarnation, salt: Salt) -> Run {
        let mut c = [0; 16];
        c[..2].copy_from_slice(&sender.0.to_be_bytes());
        c[2..6].copy_from_slice(&cluster.0.to_be_bytes());
        c[6..10].copy_from_slice(&incarnation.0.to_be_bytes());
        c[10..].copy_from_slice(&salt.0);
        Run(c)
    }

    /// The run of a frame's header.
    pub fn of(h: &HeaderRepr) -> Run {
        Run::new(h.cluster, h.sender, h.incarnation, h.salt)
    }

    pub fn sender(&self) -> NodeId {
        NodeId(u16::from_be_bytes([self.0[0], self.0[1]]))
    }
}

/// The run key of `run` under cluster key `key`: AES-CMAC (RFC 4493) of the 16-byte run,
/// that is AES-CMAC-PRF-128 (RFC 4615) used as a KDF with the run as its input:
///
/// `run_key = AES-CMAC(key, run) = AES_key(run ^ K1)`, `K1 = dbl(AES_key(0^128))`
///
/// (a one-block message is complete, so CMAC takes subkey K1). Two block encryptions with
/// the AES that AES-GCM links anyway: no hash function on a microcontroller. A cluster key
/// is used for this derivation and nothing else (frames are sealed under run keys only), so
/// the input needs no label. Python `cryptography`'s `CMAC(AES(key))` gives the same bytes
/// (test vectors in docs/PROTOCOL.md).
pub fn run_key(key: &[u8; KEY_LEN], run: &Run) -> [u8; KEY_LEN] {
    let aes = aes_gcm::aes::Aes128::new(key.into());
    let block = |b: u128| -> u128 {
        let mut b = b.to_be_bytes().into();
        aes.encrypt_block(&mut b);
        u128::from_be_bytes(b.into())
    };
    let l = block(0);
    let k1 = (l << 1) ^ if l >> 127 == 1 { 0x87 } else { 0 };
    block(u128::from_be_bytes(run.0) ^ k1).to_be_bytes()
}

/// AES-128-GCM (RustCrypto `aes-gcm`; AES-NI and CLMUL when the CPU has them).
#[derive(Clone)]
pub struct Aes128Gcm(aes_gcm::Aes128Gcm);

impl Aes128Gcm {
    pub fn new(key: &[u8; KEY_LEN]) -> Aes128Gcm {
        Aes128Gcm(aes_gcm::Aes128Gcm::new(key.into()))
    }
}

impl core::fmt::Debug for Aes128Gcm {
    // Never print key material.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Aes128Gcm(..)")
    }
}

impl Aead for Aes128Gcm {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        let tag = self
            .0
            .encrypt_in_place_detached(nonce.into(), aad, buf)
            .map_err(|_| Error::BufferTooSmall)?;
        Ok(tag.into())
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        self.0
            .decrypt_in_place_detached(nonce.into(), aad, buf, tag.into())
            .map_err(|_| Error::Auth)
    }

    type Key = [u8; KEY_LEN];

    fn derive(key: &[u8; KEY_LEN], run: &Run) -> Aes128Gcm {
        Aes128Gcm::new(&run_key(key, run))
    }
}

/// INSECURE: no key, no secrecy, no authentication. For tests and demos only.
///
/// The body stays plaintext; the tag is a FNV-1a-64 checksum of header and body followed by
/// the ASCII bytes `INSECURE`, which catches corruption (any change within one byte) but not
/// forgery: anyone can build a valid frame.
#[derive(Clone, Copy, Debug, Default)]
pub struct Insecure;

impl Insecure {
    fn tag(aad: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in aad.iter().chain(body) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut tag = *b"\0\0\0\0\0\0\0\0INSECURE";
        tag[..8].copy_from_slice(&h.to_be_bytes());
        tag
    }
}

impl Aead for Insecure {
    fn seal_in_place(
        &self,
        _nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        Ok(Insecure::tag(aad, buf))
    }

    fn open_in_place(
        &self,
        _nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        if Insecure::tag(aad, buf) == *tag {
            Ok(())
        } else {
            Err(Error::Auth)
        }
    }

    fn is_insecure(&self) -> bool {
        true
    }

    type Key = ();

    fn derive(_key: &(), _run: &Run) -> Insecure {
        Insecure
    }

    fn is_insecure_key(_key: &()) -> bool {
        true
    }
}

/// A provider chosen at run time (for a daemon that has `--insecure`). `G` is the AES-128-GCM
/// implementation: this crate's [`Aes128Gcm`] by default, or the caller's own (the daemon
/// plugs in an assembly one).
#[derive(Clone, Debug)]
// No alloc to box the AES state; a keyring holds a handful of these.
#[allow(clippy::large_enum_variant)]
pub enum AnyAead<G = Aes128Gcm> {
    Aes128Gcm(G),
    Insecure(Insecure),
}

impl<G: Aead> Aead for AnyAead<G> {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        match self {
            AnyAead::Aes128Gcm(a) => a.seal_in_place(nonce, aad, buf),
            AnyAead::Insecure(a) => a.seal_in_place(nonce, aad, buf),
        }
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        match self {
            AnyAead::Aes128Gcm(a) => a.open_in_place(nonce, aad, buf, tag),
            AnyAead::Insecure(a) => a.open_in_place(nonce, aad, buf, tag),
        }
    }

    fn is_insecure(&self) -> bool {
        matches!(self, AnyAead::Insecure(_))
    }

    type Key = AnyKey<G::Key>;

    fn derive(key: &AnyKey<G::Key>, run: &Run) -> Self {
        match key {
            AnyKey::Aes128Gcm(k) => AnyAead::Aes128Gcm(G::derive(k, run)),
            AnyKey::Insecure => AnyAead::Insecure(Insecure),
        }
    }

    fn is_insecure_key(key: &AnyKey<G::Key>) -> bool {
        matches!(key, AnyKey::Insecure)
    }
}

/// The cluster key of an [`AnyAead`]: `K` is the AES-128-GCM provider's key.
#[derive(Clone)]
pub enum AnyKey<K> {
    Aes128Gcm(K),
    Insecure,
}

/// Why a keyring change was refused (the keyring is unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyringError {
    /// No room for another key id.
    Full,
    /// No key with that id.
    UnknownKey,
    /// The active key cannot be removed; activate another one first.
    ActiveKey,
    /// An insecure key and a real key cannot share a keyring (that would let anyone forge
    /// frames under the insecure key id).
    Mixed,
}

/// Run keys a keyring caches: its own sending run's, and [`RUN_KEYS`] - 1 receiving runs
/// (slot by sender id). A run whose slot another run took is derived again (two AES blocks
/// and an AES-GCM key setup), so a bigger cluster costs a little CPU, never correctness.
pub const RUN_KEYS: usize = 4;

/// Cluster keys by [`KeyId`]: frames are sealed under the active key and opened under
/// whichever key their header names, so a cluster rotates keys without downtime (add the
/// new key everywhere, activate it everywhere, then remove the old one). At most `N` keys.
/// Frames are sealed and opened with the ciphers of run keys ([`run_key`]), which the
/// keyring derives on first use and caches; any change of its keys drops the cache.
#[derive(Clone)]
pub struct Keyring<A: Aead, const N: usize = 4> {
    keys: heapless::Vec<(KeyId, A::Key), N>,
    active: KeyId,
    /// Slot 0: the sending run; slot `1 + sender % (RUN_KEYS - 1)`: a receiving run.
    run_keys: [Option<RunKey<A>>; RUN_KEYS],
}

/// A run key's cipher and what it was derived from.
#[derive(Clone)]
struct RunKey<A> {
    id: KeyId,
    run: Run,
    cipher: A,
}

impl<A: Aead, const N: usize> core::fmt::Debug for Keyring<A, N> {
    // Never print key material.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "ids",
                &self
                    .keys
                    .iter()
                    .map(|(i, _)| i.0)
                    .collect::<heapless::Vec<u8, N>>(),
            )
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl<A: Aead, const N: usize> Keyring<A, N> {
    /// A keyring holding one key, which is active.
    pub fn new(id: KeyId, key: A::Key) -> Keyring<A, N> {
        let mut k = Keyring::empty();
        k.reset(id, key);
        k
    }

    /// A keyring without keys (every byte zero): it seals nothing and opens nothing
    /// ([`Error::UnknownKey`]) until [`Keyring::reset`].
    pub const fn empty() -> Keyring<A, N> {
        Keyring {
            keys: heapless::Vec::new(),
            active: KeyId(0),
            run_keys: [const { None }; RUN_KEYS],
        }
    }

    /// Drops every key and holds `key`, active, as [`Keyring::new`] does, in place.
    pub fn reset(&mut self, id: KeyId, key: A::Key) {
        const { assert!(N >= 1, "a keyring holds at least one key") };
        self.keys.clear();
        self.forget_run_keys();
        // Cannot fail: N >= 1 is asserted at compile time and the Vec is empty.
        let _ = self.keys.push((id, key));
        self.active = id;
    }

    fn forget_run_keys(&mut self) {
        for s in &mut self.run_keys {
            *s = None;
        }
    }

    /// The cipher of `run`'s run key under key `id`, derived on first use and cached (slot
    /// 0 for `sending`, the sender's receive slot otherwise). [`Error::UnknownKey`] if the
    /// keyring has no key `id`.
    pub fn run_cipher(&mut self, id: KeyId, run: &Run, sending: bool) -> Result<&A, Error> {
        let slot = if sending {
            0
        } else {
            1 + usize::from(run.sender().0) % (RUN_KEYS - 1)
        };
        let keys = &self.keys;
        let s = &mut self.run_keys[slot];
        if !s.as_ref().is_some_and(|s| s.id == id && s.run == *run) {
            let (_, key) = keys
                .iter()
                .find(|(i, _)| *i == id)
                .ok_or(Error::UnknownKey)?;
            let cipher = A::derive(key, run);
            return Ok(&s
                .insert(RunKey {
                    id,
                    run: *run,
                    cipher,
                })
                .cipher);
        }
        s.as_ref().map(|s| &s.cipher).ok_or(Error::UnknownKey)
    }

    /// Adds a key (or replaces the key with the same id). The active key is unchanged.
    pub fn add(&mut self, id: KeyId, key: A::Key) -> Result<(), KeyringError> {
        if self
            .keys
            .iter()
            .any(|(_, k)| A::is_insecure_key(k) != A::is_insecure_key(&key))
        {
            return Err(KeyringError::Mixed);
        }
        if let Some(slot) = self.keys.iter_mut().find(|(i, _)| *i == id) {
            slot.1 = key;
            self.forget_run_keys();
            return Ok(());
        }
        self.keys.push((id, key)).map_err(|_| KeyringError::Full)
    }

    /// Makes `id` the key new frames are sealed with.
    pub fn set_active(&mut self, id: KeyId) -> Result<(), KeyringError> {
        if self.get(id).is_none() {
            return Err(KeyringError::UnknownKey);
        }
        self.active = id;
        Ok(())
    }

    /// Drops a key: frames sealed with it are refused from now on ([`Error::UnknownKey`]).
    pub fn remove(&mut self, id: KeyId) -> Result<A::Key, KeyringError> {
        if id == self.active {
            return Err(KeyringError::ActiveKey);
        }
        let pos = self
            .keys
            .iter()
            .position(|(i, _)| *i == id)
            .ok_or(KeyringError::UnknownKey)?;
        self.forget_run_keys();
        Ok(self.keys.swap_remove(pos).1)
    }

    /// The id new frames are sealed with.
    pub fn active(&self) -> KeyId {
        self.active
    }

    /// The active key; `None` only for an [`Keyring::empty`] keyring (new() and reset()
    /// insert the active key, set_active() checks it and remove() refuses it).
    pub fn active_key(&self) -> Option<&A::Key> {
        self.get(self.active)
    }

    /// The key with `id`, if present.
    pub fn get(&self, id: KeyId) -> Option<&A::Key> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }

    /// Ids of the keys present.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(i, _)| *i)
    }
}

/// Which cluster key seals a frame kind.
///
/// The rule is on the wire byte, so that a receiver picks the key before it knows the kind:
/// heartbeats (`0x01`), leaves (`0x08`), challenges (`0x09`: freshness is membership's, a
/// witness answers and verifies too) and kinds `0x80..=0xff` (reserved for future control
/// kinds) use the **control** key; every other kind, known or not (`0x02..=0x07` today:
/// session updates, acks, retransmit requests and the state transfer), uses the **data** key.
/// Acks and requests carry no session bytes but steer replication (a forged ack would
/// release a write no peer holds), so they are data frames too: a control key holder can
/// vote and be heard, nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    Control,
    Data,
}

impl KeyRole {
    /// The role of the kind byte `kind` (header byte 5).
    #[inline]
    pub const fn of(kind: u8) -> KeyRole {
        if kind == Kind::Heartbeat as u8
            || kind == Kind::Leave as u8
            || kind == Kind::Challenge as u8
            || kind >= 0x80
        {
            KeyRole::Control
        } else {
            KeyRole::Data
        }
    }
}

/// The keys [`seal`] and [`open`] use: a [`Keyring`] serves every frame kind with one key set
/// (tests, and builds that hold one key), [`Keys`] picks the keyring of the kind's
/// [`KeyRole`].
pub trait KeySource {
    type Aead: Aead;

    /// The id frames of `role` are sealed with.
    fn active(&self, role: KeyRole) -> KeyId;

    /// The cipher of `run`'s run key under the `role` key `id` ([`Keyring::run_cipher`]);
    /// [`Error::UnknownKey`] without such a key (a witness asked for a data key).
    fn run_cipher(
        &mut self,
        role: KeyRole,
        id: KeyId,
        run: &Run,
        sending: bool,
    ) -> Result<&Self::Aead, Error>;
}

impl<A: Aead, const N: usize> KeySource for Keyring<A, N> {
    type Aead = A;

    #[inline]
    fn active(&self, _role: KeyRole) -> KeyId {
        self.active
    }

    fn run_cipher(
        &mut self,
        _role: KeyRole,
        id: KeyId,
        run: &Run,
        sending: bool,
    ) -> Result<&A, Error> {
        Keyring::run_cipher(self, id, run, sending)
    }
}

/// A node's cluster keys: the control keyring and the data keyring, each with its own key
/// ids, active key and run key cache (so a sender's heartbeats and updates never evict each
/// other's run keys). A witness's data keyring is [`Keyring::empty`]: data frames are
/// [`Error::UnknownKey`] to it and it can seal none.
#[derive(Clone)]
pub struct Keys<A: Aead, const N: usize = 4> {
    pub control: Keyring<A, N>,
    pub data: Keyring<A, N>,
}

impl<A: Aead, const N: usize> core::fmt::Debug for Keys<A, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keys")
            .field("control", &self.control)
            .field("data", &self.data)
            .finish()
    }
}

impl<A: Aead, const N: usize> Keys<A, N> {
    /// No key of either role (see [`Keyring::empty`]).
    pub const fn empty() -> Keys<A, N> {
        Keys {
            control: Keyring::empty(),
            data: Keyring::empty(),
        }
    }

    /// One key `id` in both roles: what a single-key configuration means for a data node.
    pub fn both(id: KeyId, key: A::Key) -> Keys<A, N> {
        let mut k = Keys::empty();
        k.reset(id, key);
        k
    }

    /// [`Keys::both`] in place: every key of both roles is dropped first.
    pub fn reset(&mut self, id: KeyId, key: A::Key) {
        // A loop, not two calls: one copy of the keyring's reset in flash.
        for ring in [&mut self.control, &mut self.data] {
            ring.reset(id, key.clone());
        }
    }

    /// The keyring of `role`.
    pub fn of(&mut self, role: KeyRole) -> &mut Keyring<A, N> {
        match role {
            KeyRole::Control => &mut self.control,
            KeyRole::Data => &mut self.data,
        }
    }
}

impl<A: Aead, const N: usize> KeySource for Keys<A, N> {
    type Aead = A;

    #[inline]
    fn active(&self, role: KeyRole) -> KeyId {
        match role {
            KeyRole::Control => self.control.active,
            KeyRole::Data => self.data.active,
        }
    }

    fn run_cipher(
        &mut self,
        role: KeyRole,
        id: KeyId,
        run: &Run,
        sending: bool,
    ) -> Result<&A, Error> {
        self.of(role).run_cipher(id, run, sending)
    }
}

/// The nonce of a frame: `salt (6) || seq (6)`, header bytes 20..32 as sent. Sender and
/// incarnation are in the run key already; within a run the seq never repeats.
#[inline]
pub fn nonce(header: &[u8; HEADER_LEN]) -> [u8; NONCE_LEN] {
    let mut n = [0; NONCE_LEN];
    n.copy_from_slice(&header[20..]);
    n
}

/// Bytes [`seal`] writes for `body`.
pub fn sealed_len(body: &Body<'_>) -> usize {
    HEADER_LEN + body.buffer_len() + TAG_LEN
}

/// Seals `header | body` into `out` with the active key of the body kind's [`KeyRole`];
/// returns the datagram length ([`sealed_len`]).
///
/// `header.key_id` and the [`FLAG_INSECURE`] bit of `header.flags` are ignored: the active
/// key's id and the provider's insecurity are written. The body is sealed with the run key
/// of the header's [`Run`]. The caller must never reuse a seq within one run; [`Sealer`]
/// does that bookkeeping.
/// Errors: [`Error::BufferTooSmall`], [`Error::Malformed`] (unrepresentable frame),
/// [`Error::UnknownKey`] (no key of that role: an empty keyring, a witness's data frame).
/// On error `out` may hold partial bytes and must not be sent.
pub fn seal<K: KeySource>(
    header: &HeaderRepr,
    body: &Body<'_>,
    keys: &mut K,
    out: &mut [u8],
) -> Result<usize, Error> {
    // emit() refuses a header kind that is not the body's.
    let role = KeyRole::of(header.kind as u8);
    let active = keys.active(role);
    let frame = Frame {
        header: HeaderRepr {
            key_id: active,
            flags: header.flags & !FLAG_INSECURE,
            ..*header
        },
        body: *body,
    };
    // Emitted first, then the room for the tag checked: one length computation, not two.
    let len = frame.emit(out)?;
    let out = out.get_mut(..len + TAG_LEN).ok_or(Error::BufferTooSmall)?;
    let (aad, rest) = out.split_at_mut(HEADER_LEN);
    let (plain, tag_out) = rest.split_at_mut(len - HEADER_LEN);
    let aad: &mut [u8; HEADER_LEN] = aad.try_into().map_err(|_| Error::BufferTooSmall)?;
    let mut run = Run([0; 16]);
    run.0.copy_from_slice(&aad[10..26]);
    let key = keys.run_cipher(role, active, &run, true)?;
    if key.is_insecure() {
        // The flags byte of the header just emitted.
        aad[6] |= FLAG_INSECURE;
    }
    let tag = key.seal_in_place(&nonce(aad), aad, plain)?;
    tag_out.copy_from_slice(&tag);
    Ok(len + TAG_LEN)
}

/// Opens a sealed datagram in place: checks the header, refuses another cluster before
/// spending AEAD time, verifies the tag under the run key of the header's run and key id
/// (the key of the kind byte's [`KeyRole`]), decrypts the body in `datagram` and parses it. No replay check: see [`Receiver::receive`].
///
/// Errors, in the order checked: [`Error::Truncated`], [`Error::Malformed`],
/// [`Error::UnsupportedVersion`], [`Error::OtherCluster`], [`Error::UnknownKey`],
/// [`Error::Auth`], then (authenticated but unusable) [`Error::UnknownKind`] and
/// [`Error::Malformed`]. Before `Auth` is checked nothing is modified; from it on only the
/// body and tag bytes may be (the cipher's choice on failure), never the header.
pub fn open<'a, K: KeySource>(
    datagram: &'a mut [u8],
    cluster: ClusterId,
    keys: &mut K,
) -> Result<Frame<'a>, Error> {
    let (header, body) = open_with(datagram, cluster, keys, Body::parse)?;
    Ok(Frame { header, body })
}

/// [`open`] for a node that speaks heartbeats only: any other kind is [`Error::UnknownKind`]
/// (after the tag verified, as with [`open`]). See [`open_with`].
pub fn open_heartbeat<K: KeySource>(
    datagram: &mut [u8],
    cluster: ClusterId,
    keys: &mut K,
) -> Result<(HeaderRepr, HeartbeatRepr), Error> {
    open_with(datagram, cluster, keys, heartbeat_only)
}

/// [`open`] with the body parsed by `parse(kind, body)` rather than [`Body::parse`], whose
/// switch over every kind links the parsers of all of them. A build that handles a few
/// kinds passes a parser of those (e.g. [`HeartbeatRepr::parse`] and
/// [`crate::frame::LeaveRepr::parse`], [`Error::UnknownKind`] for the rest) and carries no
/// parsing code of the others. Same checks and errors as [`open`], in the same order.
#[inline]
pub fn open_with<'a, K: KeySource, T>(
    datagram: &'a mut [u8],
    cluster: ClusterId,
    keys: &mut K,
    parse: impl FnOnce(Kind, &'a [u8]) -> Result<T, Error>,
) -> Result<(HeaderRepr, T), Error> {
    let (header, body_len, rest) = HeaderRepr::check(datagram)?;
    // A copy (32 bytes) so the header can be read after the body is decrypted in place.
    let header = *header;
    if header.cluster.get() != cluster.0 {
        return Err(Error::OtherCluster);
    }
    match rest.len().cmp(&(body_len + TAG_LEN)) {
        core::cmp::Ordering::Less => return Err(Error::Truncated),
        core::cmp::Ordering::Greater => return Err(Error::Malformed),
        core::cmp::Ordering::Equal => {}
    }
    let mut run = Run([0; 16]);
    run.0.copy_from_slice(&header.as_bytes()[10..26]);
    let key = keys.run_cipher(KeyRole::of(header.kind), KeyId(header.key_id), &run, false)?;
    if (header.flags & FLAG_INSECURE != 0) != key.is_insecure() {
        return Err(Error::Auth);
    }
    let (aad, rest) = datagram.split_at_mut(HEADER_LEN);
    let (body, tag) = rest.split_at_mut(body_len);
    let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::Truncated)?;
    let aad: &[u8; HEADER_LEN] = (&*aad).try_into().map_err(|_| Error::Truncated)?;
    let nonce = nonce(aad);
    key.open_in_place(&nonce, aad, body, tag)?;
    // The header passed check() above: only the kind and the body are left to validate.
    let header = HeaderRepr::from_wire(&header)?;
    let body = parse(header.kind, body)?;
    Ok((header, body))
}

/// The parser of [`open_heartbeat`].
fn heartbeat_only(kind: Kind, body: &[u8]) -> Result<HeartbeatRepr, Error> {
    match kind {
        Kind::Heartbeat => HeartbeatRepr::parse(body),
        _ => Err(Error::UnknownKind),
    }
}

/// The sending side of one node lifetime: fills the header and owns the seq counter, so a
/// nonce is never reused under one key within this incarnation.
#[derive(Clone, Debug)]
pub struct Sealer {
    cluster: ClusterId,
    sender: NodeId,
    incarnation: Incarnation,
    salt: Salt,
    next_seq: u64,
}

impl Sealer {
    /// `salt` must be drawn at random at every start (the caller's entropy source): it
    /// alone keeps the nonces of two runs apart when they share node id and incarnation.
    /// `incarnation` should still increase on every restart (the daemon uses unix seconds
    /// and a persisted floor): peers take a lower one for a stale run.
    pub const fn new(
        cluster: ClusterId,
        sender: NodeId,
        incarnation: Incarnation,
        salt: Salt,
    ) -> Sealer {
        Sealer {
            cluster,
            sender,
            incarnation,
            salt,
            next_seq: 0,
        }
    }

    /// The run this sealer seals for.
    pub fn run(&self) -> Run {
        Run::new(self.cluster, self.sender, self.incarnation, self.salt)
    }

    /// The seq the next sealed frame will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Seals `body` with the next seq; returns the datagram length. On error the seq is not
    /// used up. [`Error::Malformed`] also when the 2^48 seqs of this incarnation are spent
    /// (restart with a new incarnation).
    pub fn seal<K: KeySource>(
        &mut self,
        body: &Body<'_>,
        keys: &mut K,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        if self.next_seq > MAX_SEQ {
            return Err(Error::Malformed);
        }
        let header = HeaderRepr {
            kind: body.kind(),
            flags: 0,
            // seal() writes the id of the active key of the kind's role.
            key_id: KeyId(0),
            cluster: self.cluster,
            sender: self.sender,
            incarnation: self.incarnation,
            salt: self.salt,
            seq: self.next_seq,
        };
        let n = seal(&header, body, keys, out)?;
        self.next_seq += 1;
        Ok(n)
    }
}

/// The receiving side: cluster id and the replay windows of each sender (at most `N` senders).
#[derive(Clone, Debug)]
pub struct Receiver<const N: usize> {
    cluster: ClusterId,
    replay: ReplayTable<N>,
}

impl<const N: usize> Receiver<N> {
    pub const fn new(cluster: ClusterId) -> Receiver<N> {
        Receiver {
            cluster,
            replay: ReplayTable::new(),
        }
    }

    /// [`Receiver::new`] in place: every replay window is dropped.
    pub fn reset(&mut self, cluster: ClusterId) {
        self.cluster = cluster;
        self.replay.clear();
    }

    /// The whole receive path: [`open`] then the replay check of (sender, incarnation, seq)
    /// in the sender's window for the frame's [`Lane`].
    /// Returns the validated frame, whose body was decrypted in place in `datagram`.
    ///
    /// Errors: those of [`open`] (nothing changed), then [`Error::StaleIncarnation`],
    /// [`Error::Replay`] or [`Error::TooManySenders`] (nothing changed). On `Ok` the
    /// sender's replay window recorded the seq.
    pub fn receive<'a, K: KeySource>(
        &mut self,
        datagram: &'a mut [u8],
        keys: &mut K,
    ) -> Result<Frame<'a>, Error> {
        let (header, body) = self.receive_with(datagram, keys, Body::parse)?;
        Ok(Frame { header, body })
    }

    /// [`Receiver::receive`] of heartbeats only (see [`open_heartbeat`]).
    pub fn receive_heartbeat<K: KeySource>(
        &mut self,
        datagram: &mut [u8],
        keys: &mut K,
    ) -> Result<(HeaderRepr, HeartbeatRepr), Error> {
        self.receive_with(datagram, keys, heartbeat_only)
    }

    /// [`Receiver::receive`] with the body parsed by `parse` (see [`open_with`]).
    pub fn receive_with<'a, K: KeySource, T>(
        &mut self,
        datagram: &'a mut [u8],
        keys: &mut K,
        parse: impl FnOnce(Kind, &'a [u8]) -> Result<T, Error>,
    ) -> Result<(HeaderRepr, T), Error> {
        let (h, body) = open_with(datagram, self.cluster, keys, parse)?;
        self.replay
            .accept(h.sender, h.incarnation, h.salt, h.seq, Lane::of(h.kind))?;
        Ok((h, body))
    }

    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }

    /// The replay windows, e.g. to forget a node removed from the configuration.
    pub fn replay(&mut self) -> &mut ReplayTable<N> {
        &mut self.replay
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::frame::tests::{frame, heartbeat_frame, session_update_frame};
    use crate::frame::{Kind, LeaveRepr, MAX_DATAGRAM};
    use proptest::prelude::*;

    // Test vectors (also in docs/PROTOCOL.md), checked against Python `cryptography`'s
    // AESGCM. Key id 1 = TEST_KEY; the insecure ones use key id 0.
    const TEST_KEY: [u8; 16] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ];

    #[rustfmt::skip]
    static SEALED_HEARTBEAT: [u8; 80] = [
        // header
        0x54, 0x4e, 0x44, 0x4d, 0x02, 0x01, 0x00, 0x01, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xbe, 0xef,
        0x65, 0x53, 0xf1, 0x00, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07,
        // encrypted body
        0x86, 0x30, 0x43, 0x6e, 0xa3, 0xae, 0x90, 0x6a, 0x51, 0x10, 0x96, 0x73, 0x1c, 0xb1, 0x48, 0x24,
        0x62, 0x8e, 0xc9, 0x76, 0x3b, 0xe5, 0x58, 0xc8, 0xed, 0x9c, 0x45, 0x75, 0x40, 0xfe, 0xbb, 0xa8,
        // tag
        0x9c, 0x15, 0x70, 0x11, 0x0f, 0x78, 0x72, 0x9a, 0xca, 0x2b, 0x56, 0xd5, 0xe5, 0x3d, 0x0f, 0x3d,
    ];

    #[rustfmt::skip]
    static INSECURE_HEARTBEAT: [u8; 80] = [
        // header
        0x54, 0x4e, 0x44, 0x4d, 0x02, 0x01, 0x80, 0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xbe, 0xef,
        0x65, 0x53, 0xf1, 0x00, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07,
        // body
        0x00, 0x00, 0x27, 0x10, 0x03, 0x01, 0x64, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a,
        // tag
        0xca, 0xde, 0x5a, 0x40, 0xe1, 0xaa, 0x1c, 0x15, 0x49, 0x4e, 0x53, 0x45, 0x43, 0x55, 0x52, 0x45,
    ];

    #[rustfmt::skip]
    static SEALED_SESSION_UPDATE: [u8; 100] = [
        // header
        0x54, 0x4e, 0x44, 0x4d, 0x02, 0x02, 0x00, 0x01, 0x00, 0x34, 0x00, 0x02, 0x00, 0x00, 0xbe, 0xef,
        0x65, 0x53, 0xf1, 0x01, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
        // encrypted body
        0x07, 0x42, 0x2c, 0x91, 0x66, 0xb9, 0x54, 0xce, 0x0e, 0x27, 0x27, 0xca, 0xa6, 0x45, 0xd1, 0x8d,
        0xac, 0x6f, 0x0b, 0x68, 0xe7, 0xe0, 0x9a, 0xa5, 0x46, 0x53, 0x4c, 0x2c, 0xb1, 0x70, 0x05, 0x54,
        0x92, 0x36, 0x61, 0xa0, 0xa6, 0xb1, 0x1c, 0xa5, 0x81, 0x3f, 0xde, 0xed, 0x53, 0xd9, 0x24, 0x4d,
        0xb5, 0x72, 0x2f, 0x34,
        // tag
        0x21, 0xb1, 0xa0, 0xc6, 0x1b, 0x04, 0xaf, 0x06, 0xf1, 0x2a, 0xef, 0x37, 0xc5, 0x29, 0x5a, 0xc7,
    ];

    #[rustfmt::skip]
    static INSECURE_SESSION_UPDATE: [u8; 100] = [
        // header
        0x54, 0x4e, 0x44, 0x4d, 0x02, 0x02, 0x80, 0x00, 0x00, 0x34, 0x00, 0x02, 0x00, 0x00, 0xbe, 0xef,
        0x65, 0x53, 0xf1, 0x01, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
        // body
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x01, 0x00, 0x00, 0x07, 0x00, 0x02, 0x00, 0x05,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00,
        0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x73, 0x65, 0x73, 0x73, 0x3a, 0x34, 0x32, 0x68,
        0x65, 0x6c, 0x6c, 0x6f,
        // tag
        0x4d, 0x37, 0xe4, 0xe4, 0xc8, 0xe7, 0x3b, 0xbb, 0x49, 0x4e, 0x53, 0x45, 0x43, 0x55, 0x52, 0x45,
    ];

    // The run keys of the two frames' runs (Python `cryptography` KBKDFCMAC).
    const RUN_KEY_HEARTBEAT: [u8; 16] = [
        0x75, 0x69, 0x60, 0x42, 0x67, 0xe5, 0xc5, 0x8c, 0xe3, 0x5f, 0xf0, 0xc2, 0xe8, 0x02, 0x5f,
        0xb7,
    ];
    const RUN_KEY_SESSION_UPDATE: [u8; 16] = [
        0xde, 0x0f, 0x3c, 0x3a, 0x4f, 0x3b, 0xa5, 0x71, 0xb1, 0xd4, 0x4f, 0x8f, 0xf4, 0xc0, 0x9f,
        0x63,
    ];

    fn aes() -> Keyring<Aes128Gcm> {
        Keyring::new(KeyId(1), TEST_KEY)
    }

    fn insecure() -> Keyring<Insecure> {
        Keyring::new(KeyId(0), ())
    }

    const CLUSTER: ClusterId = ClusterId(0xbeef);

    fn sealed<A: Aead, const N: usize>(f: &Frame<'_>, kr: &mut Keyring<A, N>) -> Vec<u8> {
        let mut out = [0u8; MAX_DATAGRAM];
        let n = seal(&f.header, &f.body, kr, &mut out).unwrap();
        out[..n].to_vec()
    }

    use std::vec::Vec;

    #[test]
    fn seal_matches_vectors() {
        let cases: [(&Frame, &[u8], &[u8]); 2] = [
            (&heartbeat_frame(), &SEALED_HEARTBEAT, &INSECURE_HEARTBEAT),
            (
                &session_update_frame(),
                &SEALED_SESSION_UPDATE,
                &INSECURE_SESSION_UPDATE,
            ),
        ];
        for (f, aes_bytes, insecure_bytes) in cases {
            let mut out = [0xa5u8; MAX_DATAGRAM];
            let n = seal(&f.header, &f.body, &mut aes(), &mut out).unwrap();
            assert_eq!(n, sealed_len(&f.body));
            assert_eq!(&out[..n], aes_bytes);
            assert!(
                out[n..].iter().all(|&b| b == 0xa5),
                "wrote past the datagram"
            );
            let n = seal(&f.header, &f.body, &mut insecure(), &mut out).unwrap();
            assert_eq!(&out[..n], insecure_bytes);
        }
    }

    #[test]
    fn open_matches_vectors() {
        let cases: [(Frame, &[u8], &[u8]); 2] = [
            (heartbeat_frame(), &SEALED_HEARTBEAT, &INSECURE_HEARTBEAT),
            (
                session_update_frame(),
                &SEALED_SESSION_UPDATE,
                &INSECURE_SESSION_UPDATE,
            ),
        ];
        for (f, aes_bytes, insecure_bytes) in cases {
            let mut buf = aes_bytes.to_vec();
            assert_eq!(open(&mut buf, CLUSTER, &mut aes()), Ok(f));
            let mut buf = insecure_bytes.to_vec();
            let want = Frame {
                header: HeaderRepr {
                    key_id: KeyId(0),
                    flags: FLAG_INSECURE,
                    ..f.header
                },
                body: f.body,
            };
            assert_eq!(open(&mut buf, CLUSTER, &mut insecure()), Ok(want));
        }
    }

    /// Hex blocks of docs/PROTOCOL.md: "```hex vector:NAME" fences.
    fn protocol_md_vector(name: &str) -> Vec<u8> {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let fence = std::format!("```hex vector:{name}\n");
        let start = doc
            .find(&fence)
            .unwrap_or_else(|| panic!("no vector {name}"))
            + fence.len();
        let len = doc[start..].find("```").unwrap();
        doc[start..start + len]
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    #[test]
    fn protocol_md_vectors() {
        use crate::frame::tests::{HEARTBEAT_BYTES, SESSION_UPDATE_BYTES};
        let cases: [(&str, &[u8]); 8] = [
            ("run-key-heartbeat", &RUN_KEY_HEARTBEAT),
            ("run-key-session-update", &RUN_KEY_SESSION_UPDATE),
            ("heartbeat-plain", &HEARTBEAT_BYTES),
            ("heartbeat-sealed", &SEALED_HEARTBEAT),
            ("heartbeat-insecure", &INSECURE_HEARTBEAT),
            ("session-update-plain", &SESSION_UPDATE_BYTES),
            ("session-update-sealed", &SEALED_SESSION_UPDATE),
            ("session-update-insecure", &INSECURE_SESSION_UPDATE),
        ];
        for (name, bytes) in cases {
            assert_eq!(protocol_md_vector(name), bytes, "{name}");
        }
    }

    #[test]
    fn open_heartbeat_opens_heartbeats_only() {
        let mut kr = Keyring::<Aes128Gcm, 1>::new(KeyId(1), TEST_KEY);
        let cluster = ClusterId(0xbeef);
        let mut hb = SEALED_HEARTBEAT;
        let mut again = SEALED_HEARTBEAT;
        let f = open(&mut again, cluster, &mut kr).unwrap();
        assert_eq!(
            open_heartbeat(&mut hb, cluster, &mut kr),
            Ok((f.header, crate::frame::tests::heartbeat_repr()))
        );
        let mut update = SEALED_SESSION_UPDATE;
        assert_eq!(
            open_heartbeat(&mut update, cluster, &mut kr),
            Err(Error::UnknownKind)
        );
        let mut forged = SEALED_SESSION_UPDATE;
        forged[40] ^= 1;
        assert_eq!(
            open_heartbeat(&mut forged, cluster, &mut kr),
            Err(Error::Auth)
        );

        let mut rx = Receiver::<4>::new(cluster);
        let (mut first, mut replay) = (SEALED_HEARTBEAT, SEALED_HEARTBEAT);
        assert!(rx.receive_heartbeat(&mut first, &mut kr).is_ok());
        assert_eq!(
            rx.receive_heartbeat(&mut replay, &mut kr),
            Err(Error::Replay)
        );
    }

    #[test]
    fn run_key_matches_vectors() {
        let h = heartbeat_frame().header;
        let hb = Run::of(&h);
        assert_eq!(
            hb.0,
            [0, 1, 0, 0, 0xbe, 0xef, 0x65, 0x53, 0xf1, 0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6]
        );
        assert_eq!(hb.0, SEALED_HEARTBEAT[10..26], "header bytes 10..26");
        assert_eq!(run_key(&TEST_KEY, &hb), RUN_KEY_HEARTBEAT);
        let su = Run::of(&session_update_frame().header);
        assert_eq!(run_key(&TEST_KEY, &su), RUN_KEY_SESSION_UPDATE);
        // Every input changes the key (the cluster id included: two clusters sharing a key
        // never share run keys).
        let salt = Salt([0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa7]);
        let keys = [
            run_key(&[1; 16], &hb),
            run_key(
                &TEST_KEY,
                &Run::new(ClusterId(0xbeee), h.sender, h.incarnation, h.salt),
            ),
            run_key(
                &TEST_KEY,
                &Run::new(h.cluster, NodeId(2), h.incarnation, h.salt),
            ),
            run_key(
                &TEST_KEY,
                &Run::new(h.cluster, h.sender, Incarnation(1), h.salt),
            ),
            run_key(
                &TEST_KEY,
                &Run::new(h.cluster, h.sender, h.incarnation, salt),
            ),
        ];
        for k in keys {
            assert_ne!(k, RUN_KEY_HEARTBEAT);
        }
    }

    /// Two processes with one node id and one incarnation (a cloned VM, a copied config
    /// started in the same second, a clock stepped back) seal the same seqs. With one key
    /// per cluster (version 1) the two frames of a seq shared a keystream: the XOR of the
    /// ciphertexts was the XOR of the plaintexts. Their salts differ, so their run keys do.
    #[test]
    fn twin_runs_never_share_a_keystream() {
        let body = heartbeat_frame().body;
        let mut plain = [[0u8; 64]; 2];
        let mut cipher = [[0u8; 80]; 2];
        let bodies = [
            body,
            Body::Heartbeat(HeartbeatRepr {
                view: 6,
                ..crate::frame::tests::heartbeat_repr()
            }),
        ];
        for (i, salt) in [Salt([1; 6]), Salt([2; 6])].into_iter().enumerate() {
            let mut twin = Sealer::new(CLUSTER, NodeId(1), Incarnation(0x6553_f100), salt);
            let mut kr = aes();
            let n = twin.seal(&bodies[i], &mut kr, &mut cipher[i]).unwrap();
            assert_eq!(n, 80);
            let mut copy = cipher[i];
            let f = open(&mut copy, CLUSTER, &mut aes()).unwrap();
            assert_eq!((f.header.seq, f.header.salt), (0, salt));
            f.emit(&mut plain[i]).unwrap();
        }
        let xor = |a: &[u8], b: &[u8]| -> Vec<u8> { a.iter().zip(b).map(|(x, y)| x ^ y).collect() };
        assert_ne!(
            xor(&cipher[0][32..64], &cipher[1][32..64]),
            xor(&plain[0][32..64], &plain[1][32..64]),
            "twin runs sealed seq 0 under one keystream"
        );
    }

    #[test]
    fn keyring_caches_run_keys_and_forgets_them_on_change() {
        let mut kr = aes();
        let hb = Run::of(&heartbeat_frame().header);
        let mut buf = SEALED_HEARTBEAT;
        assert!(open(&mut buf, CLUSTER, &mut kr).is_ok());
        assert!(matches!(&kr.run_keys[1 + 1 % (RUN_KEYS - 1)], Some(s) if s.run == hb));
        // Replacing key 1 by another key drops the cached run key: the frame no longer opens.
        kr.add(KeyId(1), [9; 16]).unwrap();
        assert!(kr.run_keys.iter().all(Option::is_none));
        let mut buf = SEALED_HEARTBEAT;
        assert_eq!(open(&mut buf, CLUSTER, &mut kr), Err(Error::Auth));
    }

    #[test]
    fn key_role_of_every_kind_byte() {
        use KeyRole::{Control, Data};
        for (kind, role) in [
            (Kind::Heartbeat, Control),
            (Kind::Leave, Control),
            (Kind::Challenge, Control),
            (Kind::SessionUpdate, Data),
            (Kind::Ack, Data),
            (Kind::RetransmitRequest, Data),
            (Kind::SyncRequest, Data),
            (Kind::SyncChunk, Data),
            (Kind::SyncDone, Data),
        ] {
            assert_eq!(KeyRole::of(kind as u8), role, "{kind:?}");
        }
        // Unknown kinds: data below 0x80 (the safe default), control from 0x80 on.
        for b in (0..=0xffu8).filter(|b| Kind::from_u8(*b).is_none()) {
            let want = if b >= 0x80 { Control } else { Data };
            assert_eq!(KeyRole::of(b), want, "{b:#04x}");
        }
    }

    /// A data node holds a control key (id 1) and a data key (id 2); a witness only the
    /// control key. Each frame is sealed under its role's key, and the witness opens the
    /// heartbeat but neither opens nor seals a session update.
    #[test]
    fn control_and_data_frames_use_their_roles_keys_and_a_witness_has_no_data_key() {
        let (control, data) = ([0xc0; 16], [0xda; 16]);
        let mut node: Keys<Aes128Gcm> = Keys {
            control: Keyring::new(KeyId(1), control),
            data: Keyring::new(KeyId(2), data),
        };
        let mut witness: Keys<Aes128Gcm> = Keys {
            control: Keyring::new(KeyId(1), control),
            data: Keyring::empty(),
        };
        let mut sealer = Sealer::new(CLUSTER, NodeId(2), Incarnation(9), Salt([0x5a; 6]));
        let mut out = [0u8; MAX_DATAGRAM];
        let n = sealer
            .seal(&heartbeat_frame().body, &mut node, &mut out)
            .unwrap();
        let hb = out[..n].to_vec();
        let update = session_update_frame().body;
        let n = sealer.seal(&update, &mut node, &mut out).unwrap();
        let up = out[..n].to_vec();
        assert_eq!((hb[7], up[7]), (1, 2), "key ids of the roles' active keys");

        assert!(open(&mut hb.clone(), CLUSTER, &mut witness).is_ok());
        let mut copy = up.clone();
        assert_eq!(
            open(&mut copy, CLUSTER, &mut witness),
            Err(Error::UnknownKey)
        );
        assert_eq!(copy, up, "a witness decrypts nothing of a data frame");
        // Nor does the control key open it under the data key's id.
        let mut control_as_data: Keyring<Aes128Gcm> = Keyring::new(KeyId(2), control);
        assert_eq!(
            open(&mut up.clone(), CLUSTER, &mut control_as_data),
            Err(Error::Auth)
        );
        let mut w = Sealer::new(CLUSTER, NodeId(3), Incarnation(9), Salt([0x5b; 6]));
        assert_eq!(
            w.seal(&update, &mut witness, &mut out),
            Err(Error::UnknownKey)
        );
        assert!(w
            .seal(&heartbeat_frame().body, &mut witness, &mut out)
            .is_ok());

        let mut rx = node.clone();
        assert_eq!(
            open(&mut up.clone(), CLUSTER, &mut rx).unwrap().body,
            update
        );
        assert!(open(&mut hb.clone(), CLUSTER, &mut rx).is_ok());
    }

    /// One key in both roles (a single-key configuration) seals exactly what a keyring of
    /// that key seals: the test vectors hold for it.
    #[test]
    fn one_key_in_both_roles_opens_the_test_vectors() {
        let mut both: Keys<Aes128Gcm> = Keys::both(KeyId(1), TEST_KEY);
        for v in [&SEALED_HEARTBEAT[..], &SEALED_SESSION_UPDATE[..]] {
            assert!(open(&mut v.to_vec(), CLUSTER, &mut both).is_ok());
        }
        let f = session_update_frame();
        let mut out = [0u8; MAX_DATAGRAM];
        let n = seal(&f.header, &f.body, &mut both, &mut out).unwrap();
        assert_eq!(&out[..n], &SEALED_SESSION_UPDATE[..]);
    }

    #[test]
    fn nonce_layout() {
        let n = nonce(SEALED_HEARTBEAT[..32].try_into().unwrap());
        assert_eq!(n, [0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn every_bit_flip_is_refused() {
        for bytes in [
            &SEALED_HEARTBEAT[..],
            &SEALED_SESSION_UPDATE[..],
            &INSECURE_HEARTBEAT[..],
            &INSECURE_SESSION_UPDATE[..],
        ] {
            for bit in 0..bytes.len() * 8 {
                let mut buf = bytes.to_vec();
                buf[bit / 8] ^= 1 << (bit % 8);
                let mut copy = buf.clone();
                assert!(open(&mut buf, CLUSTER, &mut aes()).is_err(), "bit {bit}");
                assert!(
                    open(&mut copy, CLUSTER, &mut insecure()).is_err(),
                    "bit {bit}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_truncated() {
        for bytes in [&SEALED_HEARTBEAT[..], &SEALED_SESSION_UPDATE[..]] {
            for len in 0..bytes.len() {
                let mut buf = bytes[..len].to_vec();
                assert_eq!(open(&mut buf, CLUSTER, &mut aes()), Err(Error::Truncated));
            }
            let mut long = bytes.to_vec();
            long.push(0);
            assert_eq!(open(&mut long, CLUSTER, &mut aes()), Err(Error::Malformed));
        }
    }

    #[test]
    fn refusals_before_aead_leave_the_buffer_untouched() {
        let mut buf = SEALED_HEARTBEAT.to_vec();
        assert_eq!(
            open(&mut buf, ClusterId(1), &mut aes()),
            Err(Error::OtherCluster)
        );
        assert_eq!(buf, SEALED_HEARTBEAT);
        let mut other: Keyring<Aes128Gcm> = Keyring::new(KeyId(2), TEST_KEY);
        assert_eq!(open(&mut buf, CLUSTER, &mut other), Err(Error::UnknownKey));
        assert_eq!(buf, SEALED_HEARTBEAT);
    }

    #[test]
    fn wrong_key_is_auth() {
        let mut kr: Keyring<Aes128Gcm> = Keyring::new(KeyId(1), [7; 16]);
        let mut buf = SEALED_HEARTBEAT.to_vec();
        assert_eq!(open(&mut buf, CLUSTER, &mut kr), Err(Error::Auth));
        assert_eq!(buf, SEALED_HEARTBEAT, "a refused frame is not decrypted");
    }

    #[test]
    fn insecure_and_secure_do_not_mix() {
        // An insecure frame under key id 1 to a secure receiver, and the reverse.
        let mut ins = INSECURE_HEARTBEAT.to_vec();
        ins[7] = 1;
        assert_eq!(open(&mut ins, CLUSTER, &mut aes()), Err(Error::Auth));
        let mut sec = SEALED_HEARTBEAT.to_vec();
        sec[7] = 0;
        assert_eq!(open(&mut sec, CLUSTER, &mut insecure()), Err(Error::Auth));
        let mut any: Keyring<AnyAead> = Keyring::new(KeyId(1), AnyKey::Aes128Gcm(TEST_KEY));
        assert_eq!(
            any.add(KeyId(0), AnyKey::Insecure),
            Err(KeyringError::Mixed)
        );
        let mut buf = SEALED_HEARTBEAT.to_vec();
        assert_eq!(open(&mut buf, CLUSTER, &mut any), Ok(heartbeat_frame()));
    }

    #[test]
    fn unknown_kind_is_authenticated_then_skipped() {
        let mut kr = aes();
        let leave = Body::Leave(LeaveRepr { reason: 0 });
        let mut sealer = Sealer::new(CLUSTER, NodeId(3), Incarnation(9), Salt([0x5a; 6]));
        let mut out = [0u8; MAX_DATAGRAM];
        let n = sealer.seal(&leave, &mut kr, &mut out).unwrap();
        // A newer sender's kind 0x42 with a valid tag: reseal the same bytes by hand.
        let mut buf = out[..n].to_vec();
        buf[5] = 0x42;
        let (aad, rest) = buf.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let key = kr
            .run_cipher(KeyId(1), &sealer.run(), true)
            .unwrap()
            .clone();
        // Undo the encryption, then seal again under the new header.
        let nonce = nonce((&*aad).try_into().unwrap());
        let mut plain = body.to_vec();
        let mut orig_aad = aad.to_vec();
        orig_aad[5] = Kind::Leave as u8;
        key.open_in_place(&nonce, &orig_aad, &mut plain, (&*tag).try_into().unwrap())
            .unwrap();
        body.copy_from_slice(&plain);
        let t = key.seal_in_place(&nonce, aad, body).unwrap();
        tag.copy_from_slice(&t);
        let mut forged = buf.clone();
        assert_eq!(open(&mut buf, CLUSTER, &mut kr), Err(Error::UnknownKind));
        // The same kind with a bad tag is an authentication failure, not a skip.
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(open(&mut forged, CLUSTER, &mut kr), Err(Error::Auth));
    }

    #[test]
    fn replayed_frame_is_refused() {
        let mut kr = aes();
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        let mut a = SEALED_HEARTBEAT.to_vec();
        assert_eq!(rx.receive(&mut a, &mut kr), Ok(heartbeat_frame()));
        let mut b = SEALED_HEARTBEAT.to_vec();
        assert_eq!(rx.receive(&mut b, &mut kr), Err(Error::Replay));
    }

    #[test]
    fn a_heartbeat_read_after_many_later_data_frames_is_accepted() {
        let mut kr = aes();
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        let mut update = session_update_frame();
        update.header.sender = heartbeat_frame().header.sender;
        update.header.incarnation = Incarnation(100);
        for seq in 11..11 + 2 * replay::WINDOW {
            update.header.seq = seq;
            assert!(rx.receive(&mut sealed(&update, &mut kr), &mut kr).is_ok());
        }
        assert!(rx
            .receive(&mut sealed_hb(&mut kr, 100, 10), &mut kr)
            .is_ok());
        assert_eq!(
            rx.receive(&mut sealed_hb(&mut kr, 100, 10), &mut kr),
            Err(Error::Replay)
        );
        update.header.seq = 11;
        assert_eq!(
            rx.receive(&mut sealed(&update, &mut kr), &mut kr),
            Err(Error::Replay)
        );
    }

    fn sealed_hb(kr: &mut Keyring<Aes128Gcm>, inc: u32, seq: u64) -> Vec<u8> {
        let mut f = heartbeat_frame();
        f.header.incarnation = Incarnation(inc);
        f.header.seq = seq;
        sealed(&f, kr)
    }

    #[test]
    fn stale_incarnation_is_refused_and_newer_resets() {
        let mut kr = aes();
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        assert!(rx
            .receive(&mut sealed_hb(&mut kr, 100, 50), &mut kr)
            .is_ok());
        assert_eq!(
            rx.receive(&mut sealed_hb(&mut kr, 99, 51), &mut kr),
            Err(Error::StaleIncarnation)
        );
        // The restarted node starts its seq again at 0.
        assert!(rx.receive(&mut sealed_hb(&mut kr, 101, 0), &mut kr).is_ok());
        assert_eq!(
            rx.receive(&mut sealed_hb(&mut kr, 100, 52), &mut kr),
            Err(Error::StaleIncarnation)
        );
        assert_eq!(
            rx.receive(&mut sealed_hb(&mut kr, 101, 0), &mut kr),
            Err(Error::Replay)
        );
    }

    #[test]
    fn forged_frame_does_not_move_the_window() {
        let mut kr = aes();
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        assert!(rx
            .receive(&mut sealed_hb(&mut kr, 100, 10), &mut kr)
            .is_ok());
        // A far-ahead seq with a broken tag would push seq 11 out of the window if counted.
        let mut forged = sealed_hb(&mut kr, 100, 10_000);
        forged[40] ^= 1;
        assert_eq!(rx.receive(&mut forged, &mut kr), Err(Error::Auth));
        let mut forged = sealed_hb(&mut kr, 101, 0);
        forged[40] ^= 1;
        assert_eq!(rx.receive(&mut forged, &mut kr), Err(Error::Auth));
        assert!(rx
            .receive(&mut sealed_hb(&mut kr, 100, 11), &mut kr)
            .is_ok());
    }

    #[test]
    fn rotation_accepts_old_key_until_dropped() {
        let key2 = [0x22; 16];
        let mut tx = aes();
        let mut rx_keys = aes();
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        let mut sealer = Sealer::new(CLUSTER, NodeId(5), Incarnation(1), Salt([0x5a; 6]));
        let body = heartbeat_frame().body;
        let send = |sealer: &mut Sealer, kr: &mut Keyring<Aes128Gcm>| {
            let mut out = [0u8; MAX_DATAGRAM];
            let n = sealer.seal(&body, kr, &mut out).unwrap();
            out[..n].to_vec()
        };
        let old = send(&mut sealer, &mut tx);
        // Step 1: every node learns key 2; step 2: senders switch to it.
        rx_keys.add(KeyId(2), key2).unwrap();
        tx.add(KeyId(2), key2).unwrap();
        tx.set_active(KeyId(2)).unwrap();
        let new = send(&mut sealer, &mut tx);
        assert_eq!(new[7], 2, "sealed with the active key id");
        let late_old = {
            let mut tx_old = aes();
            send(&mut sealer, &mut tx_old)
        };
        assert!(rx.receive(&mut old.clone(), &mut rx_keys).is_ok());
        assert!(rx.receive(&mut new.clone(), &mut rx_keys).is_ok());
        // Step 3: key 1 dropped; frames under it are refused from then on.
        rx_keys.set_active(KeyId(2)).unwrap();
        rx_keys.remove(KeyId(1)).unwrap();
        assert_eq!(
            rx.receive(&mut late_old.clone(), &mut rx_keys),
            Err(Error::UnknownKey)
        );
    }

    #[test]
    fn keyring_rules() {
        let mut kr: Keyring<Aes128Gcm, 2> = Keyring::new(KeyId(1), [1; 16]);
        assert_eq!(kr.remove(KeyId(1)).err(), Some(KeyringError::ActiveKey));
        assert_eq!(kr.remove(KeyId(9)).err(), Some(KeyringError::UnknownKey));
        assert_eq!(kr.set_active(KeyId(9)), Err(KeyringError::UnknownKey));
        kr.add(KeyId(2), [2; 16]).unwrap();
        assert_eq!(kr.add(KeyId(3), [3; 16]), Err(KeyringError::Full));
        // Replacing an id needs no room.
        kr.add(KeyId(2), [4; 16]).unwrap();
        assert_eq!(kr.ids().collect::<Vec<_>>(), [KeyId(1), KeyId(2)]);
        assert_eq!(kr.active(), KeyId(1));
    }

    #[test]
    fn other_cluster_is_refused() {
        let mut kr = aes();
        let mut rx: Receiver<4> = Receiver::new(ClusterId(0xbeee));
        let mut buf = SEALED_HEARTBEAT.to_vec();
        assert_eq!(rx.receive(&mut buf, &mut kr), Err(Error::OtherCluster));
        assert!(rx.replay().is_empty());
    }

    #[test]
    fn sealer_counts_and_stops_at_max_seq() {
        let mut kr = aes();
        let mut s = Sealer::new(CLUSTER, NodeId(1), Incarnation(1), Salt([0x5a; 6]));
        let body = heartbeat_frame().body;
        let mut out = [0u8; MAX_DATAGRAM];
        s.seal(&body, &mut kr, &mut out).unwrap();
        s.seal(&body, &mut kr, &mut out).unwrap();
        assert_eq!(s.next_seq(), 2);
        assert_eq!(
            s.seal(&body, &mut kr, &mut out[..10]),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(s.next_seq(), 2, "a failed seal uses no seq");
        s.next_seq = MAX_SEQ;
        assert!(s.seal(&body, &mut kr, &mut out).is_ok());
        assert_eq!(s.seal(&body, &mut kr, &mut out), Err(Error::Malformed));
    }

    /// A full table of verified runs refuses a new sender (an unverified one would make
    /// room, see replay's tests).
    #[test]
    fn too_many_senders() {
        let mut kr = aes();
        let mut rx: Receiver<2> = Receiver::new(CLUSTER);
        for sender in 1..=3u16 {
            let mut f = heartbeat_frame();
            f.header.sender = NodeId(sender);
            let got = rx.receive(&mut sealed(&f, &mut kr), &mut kr).map(|_| ());
            if sender <= 2 {
                assert_eq!(got, Ok(()));
                let (h, t) = (f.header, rx.replay());
                assert!(t.challenge(h.sender, h.incarnation, h.salt, 0));
                assert!(t.verify(h.sender, h.incarnation, h.salt, 0, h.seq));
            } else {
                assert_eq!(got, Err(Error::TooManySenders));
            }
        }
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(f in frame()) {
            for insecure_mode in [false, true] {
                let mut out = [0u8; MAX_DATAGRAM];
                let n = if insecure_mode {
                    seal(&f.header, &f.body, &mut insecure(), &mut out)
                } else {
                    seal(&f.header, &f.body, &mut aes(), &mut out)
                }
                .unwrap();
                prop_assert!(n <= MAX_DATAGRAM);
                let got = if insecure_mode {
                    open(&mut out[..n], f.header.cluster, &mut insecure())
                } else {
                    open(&mut out[..n], f.header.cluster, &mut aes())
                };
                let mut want = f;
                want.header.flags = if insecure_mode { FLAG_INSECURE } else { 0 };
                want.header.key_id = KeyId(if insecure_mode { 0 } else { 1 });
                prop_assert_eq!(got, Ok(want));
            }
        }
    }
}
