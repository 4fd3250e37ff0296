//! Sealing and opening datagrams: AEAD providers, the keyring, and the receive path.
//!
//! A sealed datagram is `header (32 bytes, associated data) | body (encrypted) | tag (16)`.
//! The nonce is `sender (2) || incarnation (4) || seq (6)`, all big endian, taken from the
//! header, so it is unique per key as long as each node's incarnation strictly increases and
//! its seq never repeats within one incarnation ([`Sealer`] owns the counter). The argument
//! is in docs/PROTOCOL.md.
//!
//! The receive path is one call: [`Receiver::receive`] = [`open`] (cluster check, key lookup,
//! tag check, decrypt in place, parse) then the replay check, which only runs after the tag
//! verified so that forged frames never move a replay window.
//!
//! Panics: never. Every length is checked before use.

use aes_gcm::aead::{AeadInPlace, KeyInit};

pub mod replay;
pub use replay::{ReplayTable, ReplayWindow};

use crate::frame::{
    Body, Error, Frame, HeaderRepr, FLAG_INSECURE, HEADER_LEN, MAX_SEQ, TAG_LEN,
};
use crate::id::{ClusterId, Incarnation, KeyId, NodeId};

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

    /// Verifies `tag` and decrypts `buf` in place. On [`Error::Auth`] the content of `buf`
    /// is unspecified (the caller drops the datagram).
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
}

/// A provider chosen at run time (for a daemon that has `--insecure`).
#[derive(Clone, Debug)]
pub enum AnyAead {
    Aes128Gcm(Aes128Gcm),
    Insecure(Insecure),
}

impl Aead for AnyAead {
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

/// Keys by [`KeyId`]: frames are sealed with the active key and opened with whichever key
/// their header names, so a cluster rotates keys without downtime (add the new key
/// everywhere, activate it everywhere, then remove the old one). At most `N` keys.
#[derive(Clone, Debug)]
pub struct Keyring<A: Aead, const N: usize = 4> {
    keys: heapless::Vec<(KeyId, A), N>,
    active: KeyId,
}

impl<A: Aead, const N: usize> Keyring<A, N> {
    /// A keyring holding one key, which is active.
    pub fn new(id: KeyId, key: A) -> Keyring<A, N> {
        const { assert!(N >= 1, "a keyring holds at least one key") };
        let mut keys = heapless::Vec::new();
        // Cannot fail: N >= 1 is asserted at compile time and the Vec is empty.
        let _ = keys.push((id, key));
        Keyring { keys, active: id }
    }

    /// Adds a key (or replaces the key with the same id). The active key is unchanged.
    pub fn add(&mut self, id: KeyId, key: A) -> Result<(), KeyringError> {
        if self.keys.iter().any(|(_, k)| k.is_insecure() != key.is_insecure()) {
            return Err(KeyringError::Mixed);
        }
        if let Some(slot) = self.keys.iter_mut().find(|(i, _)| *i == id) {
            slot.1 = key;
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
    pub fn remove(&mut self, id: KeyId) -> Result<A, KeyringError> {
        if id == self.active {
            return Err(KeyringError::ActiveKey);
        }
        let pos = self
            .keys
            .iter()
            .position(|(i, _)| *i == id)
            .ok_or(KeyringError::UnknownKey)?;
        Ok(self.keys.swap_remove(pos).1)
    }

    /// The id new frames are sealed with.
    pub fn active(&self) -> KeyId {
        self.active
    }

    /// The active key.
    pub fn active_key(&self) -> &A {
        // The active id is always present: new() inserts it, set_active() checks it and
        // remove() refuses it; fall back to the first key rather than panic.
        match self.get(self.active) {
            Some(k) => k,
            None => &self.keys[0].1,
        }
    }

    /// The key with `id`, if present.
    pub fn get(&self, id: KeyId) -> Option<&A> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }

    /// Ids of the keys present.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(i, _)| *i)
    }
}

/// The nonce of a frame: `sender || incarnation || seq` (48 low bits), big endian.
pub fn nonce(sender: NodeId, incarnation: Incarnation, seq: u64) -> [u8; NONCE_LEN] {
    let mut n = [0; NONCE_LEN];
    n[..2].copy_from_slice(&sender.0.to_be_bytes());
    n[2..6].copy_from_slice(&incarnation.0.to_be_bytes());
    n[6..].copy_from_slice(&seq.to_be_bytes()[2..]);
    n
}

/// Bytes [`seal`] writes for `body`.
pub fn sealed_len(body: &Body<'_>) -> usize {
    HEADER_LEN + body.buffer_len() + TAG_LEN
}

/// Seals `header | body` into `out` with the keyring's active key; returns the datagram
/// length ([`sealed_len`]).
///
/// `header.key_id` and the [`FLAG_INSECURE`] bit of `header.flags` are ignored: the active
/// key's id and the provider's insecurity are written. The caller must never reuse a
/// `(sender, incarnation, seq)` under one key; [`Sealer`] does that bookkeeping.
/// Errors: [`Error::BufferTooSmall`], [`Error::Malformed`] (unrepresentable frame). On
/// error `out` may hold partial bytes and must not be sent.
pub fn seal<A: Aead, const N: usize>(
    header: &HeaderRepr,
    body: &Body<'_>,
    keyring: &Keyring<A, N>,
    out: &mut [u8],
) -> Result<usize, Error> {
    let key = keyring.active_key();
    let flags = if key.is_insecure() {
        header.flags | FLAG_INSECURE
    } else {
        header.flags & !FLAG_INSECURE
    };
    let frame = Frame {
        header: HeaderRepr {
            key_id: keyring.active(),
            flags,
            ..*header
        },
        body: *body,
    };
    let len = frame.buffer_len();
    let out = out.get_mut(..len + TAG_LEN).ok_or(Error::BufferTooSmall)?;
    frame.emit(out)?;
    let (aad, rest) = out.split_at_mut(HEADER_LEN);
    let (plain, tag_out) = rest.split_at_mut(len - HEADER_LEN);
    let nonce = nonce(header.sender, header.incarnation, header.seq);
    let tag = key.seal_in_place(&nonce, aad, plain)?;
    tag_out.copy_from_slice(&tag);
    Ok(len + TAG_LEN)
}

/// Opens a sealed datagram in place: checks the header, refuses another cluster before
/// spending AEAD time, verifies the tag under the key the header names, decrypts the body
/// in `datagram` and parses it. No replay check: see [`Receiver::receive`].
///
/// Errors, in the order checked: [`Error::Truncated`], [`Error::Malformed`],
/// [`Error::UnsupportedVersion`], [`Error::OtherCluster`], [`Error::UnknownKey`],
/// [`Error::Auth`], then (authenticated but unusable) [`Error::UnknownKind`] and
/// [`Error::Malformed`]. Only after `Auth` passed is `datagram` modified.
pub fn open<'a, A: Aead, const N: usize>(
    datagram: &'a mut [u8],
    cluster: ClusterId,
    keyring: &Keyring<A, N>,
) -> Result<Frame<'a>, Error> {
    let (header, body_len, rest) = HeaderRepr::check(datagram)?;
    if header.cluster.get() != cluster.0 {
        return Err(Error::OtherCluster);
    }
    match rest.len().cmp(&(body_len + TAG_LEN)) {
        core::cmp::Ordering::Less => return Err(Error::Truncated),
        core::cmp::Ordering::Greater => return Err(Error::Malformed),
        core::cmp::Ordering::Equal => {}
    }
    let key = keyring
        .get(KeyId(header.key_id))
        .ok_or(Error::UnknownKey)?;
    if (header.flags & FLAG_INSECURE != 0) != key.is_insecure() {
        return Err(Error::Auth);
    }
    let nonce = nonce(
        NodeId(header.sender.get()),
        Incarnation(header.incarnation.get()),
        header.seq.get(),
    );
    let (aad, rest) = datagram.split_at_mut(HEADER_LEN);
    let (body, tag) = rest.split_at_mut(body_len);
    let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::Truncated)?;
    key.open_in_place(&nonce, aad, body, tag)?;
    let datagram: &'a [u8] = datagram;
    let plain = datagram
        .get(..HEADER_LEN + body_len)
        .ok_or(Error::Truncated)?;
    Frame::parse(plain)
}

/// The sending side of one node lifetime: fills the header and owns the seq counter, so a
/// nonce is never reused under one key within this incarnation.
#[derive(Clone, Debug)]
pub struct Sealer {
    cluster: ClusterId,
    sender: NodeId,
    incarnation: Incarnation,
    next_seq: u64,
}

impl Sealer {
    /// `incarnation` must be strictly greater than any earlier one of `sender` (the daemon
    /// uses unix seconds at start after waiting for the next second boundary).
    pub fn new(cluster: ClusterId, sender: NodeId, incarnation: Incarnation) -> Sealer {
        Sealer {
            cluster,
            sender,
            incarnation,
            next_seq: 0,
        }
    }

    /// The seq the next sealed frame will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Seals `body` with the next seq; returns the datagram length. On error the seq is not
    /// used up. [`Error::Malformed`] also when the 2^48 seqs of this incarnation are spent
    /// (restart with a new incarnation).
    pub fn seal<A: Aead, const N: usize>(
        &mut self,
        body: &Body<'_>,
        keyring: &Keyring<A, N>,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        if self.next_seq > MAX_SEQ {
            return Err(Error::Malformed);
        }
        let header = HeaderRepr {
            kind: body.kind(),
            flags: 0,
            key_id: keyring.active(),
            cluster: self.cluster,
            sender: self.sender,
            incarnation: self.incarnation,
            seq: self.next_seq,
        };
        let n = seal(&header, body, keyring, out)?;
        self.next_seq += 1;
        Ok(n)
    }
}

/// The receiving side: cluster id and one replay window per sender (at most `N` senders).
#[derive(Clone, Debug)]
pub struct Receiver<const N: usize> {
    cluster: ClusterId,
    replay: ReplayTable<N>,
}

impl<const N: usize> Receiver<N> {
    pub fn new(cluster: ClusterId) -> Receiver<N> {
        Receiver {
            cluster,
            replay: ReplayTable::new(),
        }
    }

    /// The whole receive path: [`open`] then the replay check of (sender, incarnation, seq).
    /// Returns the validated frame, whose body was decrypted in place in `datagram`.
    ///
    /// Errors: those of [`open`] (nothing changed), then [`Error::StaleIncarnation`],
    /// [`Error::Replay`] or [`Error::TooManySenders`] (nothing changed). On `Ok` the
    /// sender's replay window recorded the seq.
    pub fn receive<'a, A: Aead, const K: usize>(
        &mut self,
        datagram: &'a mut [u8],
        keyring: &Keyring<A, K>,
    ) -> Result<Frame<'a>, Error> {
        let frame = open(datagram, self.cluster, keyring)?;
        let h = &frame.header;
        self.replay.accept(h.sender, h.incarnation, h.seq)?;
        Ok(frame)
    }

    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }

    /// The replay windows, e.g. to forget a node removed from the configuration.
    pub fn replay(&mut self) -> &mut ReplayTable<N> {
        &mut self.replay
    }
}
