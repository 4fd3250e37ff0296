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
pub use replay::{Lane, ReplayTable, ReplayWindow};

use crate::frame::{
    Body, Error, Frame, HeaderRepr, HeartbeatRepr, Kind, FLAG_INSECURE, HEADER_LEN, MAX_SEQ,
    TAG_LEN,
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
        }
    }

    /// Drops every key and holds `key`, active, as [`Keyring::new`] does, in place.
    pub fn reset(&mut self, id: KeyId, key: A) {
        self.reset_with(id, || key)
    }

    /// [`Keyring::reset`] with the key built by `key()` where it is stored: a cipher's key
    /// schedule (hundreds of bytes) then needs no copy on the caller's stack.
    #[inline(always)]
    pub fn reset_with(&mut self, id: KeyId, key: impl FnOnce() -> A) {
        const { assert!(N >= 1, "a keyring holds at least one key") };
        self.keys.clear();
        // Cannot fail: N >= 1 is asserted at compile time and the Vec is empty.
        let _ = self.keys.push((id, key()));
        self.active = id;
    }

    /// Adds a key (or replaces the key with the same id). The active key is unchanged.
    pub fn add(&mut self, id: KeyId, key: A) -> Result<(), KeyringError> {
        if self
            .keys
            .iter()
            .any(|(_, k)| k.is_insecure() != key.is_insecure())
        {
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

    /// The active key; `None` only for an [`Keyring::empty`] keyring (new() and reset()
    /// insert the active key, set_active() checks it and remove() refuses it).
    pub fn active_key(&self) -> Option<&A> {
        self.get(self.active)
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
#[inline]
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
/// Errors: [`Error::BufferTooSmall`], [`Error::Malformed`] (unrepresentable frame),
/// [`Error::UnknownKey`] (an empty keyring). On error `out` may hold partial bytes and
/// must not be sent.
pub fn seal<A: Aead, const N: usize>(
    header: &HeaderRepr,
    body: &Body<'_>,
    keyring: &Keyring<A, N>,
    out: &mut [u8],
) -> Result<usize, Error> {
    let key = keyring.active_key().ok_or(Error::UnknownKey)?;
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
/// [`Error::Malformed`]. Before `Auth` is checked nothing is modified; from it on only the
/// body and tag bytes may be (the cipher's choice on failure), never the header.
pub fn open<'a, A: Aead, const N: usize>(
    datagram: &'a mut [u8],
    cluster: ClusterId,
    keyring: &Keyring<A, N>,
) -> Result<Frame<'a>, Error> {
    let (header, body) = open_with(datagram, cluster, keyring, Body::parse)?;
    Ok(Frame { header, body })
}

/// [`open`] for a node that speaks heartbeats only: any other kind is [`Error::UnknownKind`]
/// (after the tag verified, as with [`open`]). See [`open_with`].
pub fn open_heartbeat<A: Aead, const N: usize>(
    datagram: &mut [u8],
    cluster: ClusterId,
    keyring: &Keyring<A, N>,
) -> Result<(HeaderRepr, HeartbeatRepr), Error> {
    open_with(datagram, cluster, keyring, heartbeat_only)
}

/// [`open`] with the body parsed by `parse(kind, body)` rather than [`Body::parse`], whose
/// switch over every kind links the parsers of all of them. A build that handles a few
/// kinds passes a parser of those (e.g. [`HeartbeatRepr::parse`] and
/// [`crate::frame::LeaveRepr::parse`], [`Error::UnknownKind`] for the rest) and carries no
/// parsing code of the others. Same checks and errors as [`open`], in the same order.
#[inline]
pub fn open_with<'a, A: Aead, const N: usize, T>(
    datagram: &'a mut [u8],
    cluster: ClusterId,
    keyring: &Keyring<A, N>,
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
    let key = keyring.get(KeyId(header.key_id)).ok_or(Error::UnknownKey)?;
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
    next_seq: u64,
}

impl Sealer {
    /// `incarnation` must be strictly greater than any earlier one of `sender` (the daemon
    /// uses unix seconds at start after waiting for the next second boundary).
    pub const fn new(cluster: ClusterId, sender: NodeId, incarnation: Incarnation) -> Sealer {
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
    pub fn receive<'a, A: Aead, const K: usize>(
        &mut self,
        datagram: &'a mut [u8],
        keyring: &Keyring<A, K>,
    ) -> Result<Frame<'a>, Error> {
        let (header, body) = self.receive_with(datagram, keyring, Body::parse)?;
        Ok(Frame { header, body })
    }

    /// [`Receiver::receive`] of heartbeats only (see [`open_heartbeat`]).
    pub fn receive_heartbeat<A: Aead, const K: usize>(
        &mut self,
        datagram: &mut [u8],
        keyring: &Keyring<A, K>,
    ) -> Result<(HeaderRepr, HeartbeatRepr), Error> {
        self.receive_with(datagram, keyring, heartbeat_only)
    }

    /// [`Receiver::receive`] with the body parsed by `parse` (see [`open_with`]).
    pub fn receive_with<'a, A: Aead, const K: usize, T>(
        &mut self,
        datagram: &'a mut [u8],
        keyring: &Keyring<A, K>,
        parse: impl FnOnce(Kind, &'a [u8]) -> Result<T, Error>,
    ) -> Result<(HeaderRepr, T), Error> {
        let (h, body) = open_with(datagram, self.cluster, keyring, parse)?;
        self.replay
            .accept(h.sender, h.incarnation, h.seq, Lane::of(h.kind))?;
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
        0x54, 0x4e, 0x44, 0x4d, 0x01, 0x01, 0x00, 0x01, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xbe, 0xef,
        0x65, 0x53, 0xf1, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07,
        // encrypted body
        0x82, 0x8c, 0xf1, 0x70, 0x6d, 0xcb, 0xfa, 0x41, 0x0d, 0x47, 0xf3, 0x2d, 0x3d, 0xe3, 0x13, 0x31,
        0x43, 0x2c, 0xb7, 0x1a, 0xe7, 0x52, 0x40, 0xf3, 0x90, 0xbb, 0x12, 0xe6, 0xe4, 0x1c, 0xf9, 0x59,
        // tag
        0x5e, 0x4d, 0x1f, 0xe7, 0xca, 0x4c, 0x42, 0xc7, 0x60, 0xec, 0x15, 0x39, 0x89, 0x26, 0x8a, 0xfe,
    ];

    #[rustfmt::skip]
    static INSECURE_HEARTBEAT: [u8; 80] = [
        // header
        0x54, 0x4e, 0x44, 0x4d, 0x01, 0x01, 0x80, 0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xbe, 0xef,
        0x65, 0x53, 0xf1, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07,
        // body
        0x00, 0x00, 0x27, 0x10, 0x03, 0x01, 0x64, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a,
        // tag
        0x73, 0xff, 0x2a, 0x1e, 0x73, 0x5d, 0x8c, 0x39, 0x49, 0x4e, 0x53, 0x45, 0x43, 0x55, 0x52, 0x45,
    ];

    #[rustfmt::skip]
    static SEALED_SESSION_UPDATE: [u8; 100] = [
        // header
        0x54, 0x4e, 0x44, 0x4d, 0x01, 0x02, 0x00, 0x01, 0x00, 0x34, 0x00, 0x02, 0x00, 0x00, 0xbe, 0xef,
        0x65, 0x53, 0xf1, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
        // encrypted body
        0x83, 0xb0, 0x2d, 0xdc, 0x15, 0x80, 0x82, 0x28, 0x98, 0xe7, 0xfa, 0xb6, 0x09, 0x9f, 0x36, 0xdd,
        0x0a, 0x8f, 0x7e, 0x97, 0x52, 0x54, 0xbf, 0x3e, 0x8d, 0xf1, 0xdb, 0x0a, 0x97, 0xbf, 0xf0, 0xc4,
        0xb5, 0x3e, 0xf0, 0x8f, 0x2e, 0x02, 0xc5, 0x4e, 0x73, 0x58, 0x65, 0x11, 0xa4, 0xda, 0x46, 0x30,
        0x59, 0xe8, 0x79, 0xbd,
        // tag
        0x3c, 0x54, 0xa3, 0x96, 0x57, 0x97, 0x3e, 0x40, 0x01, 0x4f, 0xea, 0xf7, 0xfd, 0x5e, 0x74, 0xae,
    ];

    #[rustfmt::skip]
    static INSECURE_SESSION_UPDATE: [u8; 100] = [
        // header
        0x54, 0x4e, 0x44, 0x4d, 0x01, 0x02, 0x80, 0x00, 0x00, 0x34, 0x00, 0x02, 0x00, 0x00, 0xbe, 0xef,
        0x65, 0x53, 0xf1, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
        // body
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x01, 0x00, 0x00, 0x07, 0x00, 0x02, 0x00, 0x05,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00,
        0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x73, 0x65, 0x73, 0x73, 0x3a, 0x34, 0x32, 0x68,
        0x65, 0x6c, 0x6c, 0x6f,
        // tag
        0x66, 0xb1, 0xcf, 0x79, 0x6c, 0xed, 0xe9, 0x0f, 0x49, 0x4e, 0x53, 0x45, 0x43, 0x55, 0x52, 0x45,
    ];

    fn aes() -> Keyring<Aes128Gcm> {
        Keyring::new(KeyId(1), Aes128Gcm::new(&TEST_KEY))
    }

    fn insecure() -> Keyring<Insecure> {
        Keyring::new(KeyId(0), Insecure)
    }

    const CLUSTER: ClusterId = ClusterId(0xbeef);

    fn sealed<A: Aead, const N: usize>(f: &Frame<'_>, kr: &Keyring<A, N>) -> Vec<u8> {
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
            let n = seal(&f.header, &f.body, &aes(), &mut out).unwrap();
            assert_eq!(n, sealed_len(&f.body));
            assert_eq!(&out[..n], aes_bytes);
            assert!(
                out[n..].iter().all(|&b| b == 0xa5),
                "wrote past the datagram"
            );
            let n = seal(&f.header, &f.body, &insecure(), &mut out).unwrap();
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
            assert_eq!(open(&mut buf, CLUSTER, &aes()), Ok(f));
            let mut buf = insecure_bytes.to_vec();
            let want = Frame {
                header: HeaderRepr {
                    key_id: KeyId(0),
                    flags: FLAG_INSECURE,
                    ..f.header
                },
                body: f.body,
            };
            assert_eq!(open(&mut buf, CLUSTER, &insecure()), Ok(want));
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
        let cases: [(&str, &[u8]); 6] = [
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
        let kr = Keyring::<_, 1>::new(KeyId(1), Aes128Gcm::new(&TEST_KEY));
        let cluster = ClusterId(0xbeef);
        let mut hb = SEALED_HEARTBEAT;
        let mut again = SEALED_HEARTBEAT;
        let f = open(&mut again, cluster, &kr).unwrap();
        assert_eq!(
            open_heartbeat(&mut hb, cluster, &kr),
            Ok((f.header, crate::frame::tests::heartbeat_repr()))
        );
        let mut update = SEALED_SESSION_UPDATE;
        assert_eq!(
            open_heartbeat(&mut update, cluster, &kr),
            Err(Error::UnknownKind)
        );
        let mut forged = SEALED_SESSION_UPDATE;
        forged[40] ^= 1;
        assert_eq!(open_heartbeat(&mut forged, cluster, &kr), Err(Error::Auth));

        let mut rx = Receiver::<4>::new(cluster);
        let (mut first, mut replay) = (SEALED_HEARTBEAT, SEALED_HEARTBEAT);
        assert!(rx.receive_heartbeat(&mut first, &kr).is_ok());
        assert_eq!(rx.receive_heartbeat(&mut replay, &kr), Err(Error::Replay));
    }

    #[test]
    fn nonce_layout() {
        let n = nonce(NodeId(0x0102), Incarnation(0x0304_0506), 0x0708_090a_0b0c);
        assert_eq!(n, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
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
                assert!(open(&mut buf, CLUSTER, &aes()).is_err(), "bit {bit}");
                assert!(open(&mut copy, CLUSTER, &insecure()).is_err(), "bit {bit}");
            }
        }
    }

    #[test]
    fn every_truncation_is_truncated() {
        for bytes in [&SEALED_HEARTBEAT[..], &SEALED_SESSION_UPDATE[..]] {
            for len in 0..bytes.len() {
                let mut buf = bytes[..len].to_vec();
                assert_eq!(open(&mut buf, CLUSTER, &aes()), Err(Error::Truncated));
            }
            let mut long = bytes.to_vec();
            long.push(0);
            assert_eq!(open(&mut long, CLUSTER, &aes()), Err(Error::Malformed));
        }
    }

    #[test]
    fn refusals_before_aead_leave_the_buffer_untouched() {
        let mut buf = SEALED_HEARTBEAT.to_vec();
        assert_eq!(
            open(&mut buf, ClusterId(1), &aes()),
            Err(Error::OtherCluster)
        );
        assert_eq!(buf, SEALED_HEARTBEAT);
        let other: Keyring<Aes128Gcm> = Keyring::new(KeyId(2), Aes128Gcm::new(&TEST_KEY));
        assert_eq!(open(&mut buf, CLUSTER, &other), Err(Error::UnknownKey));
        assert_eq!(buf, SEALED_HEARTBEAT);
    }

    #[test]
    fn wrong_key_is_auth() {
        let kr: Keyring<Aes128Gcm> = Keyring::new(KeyId(1), Aes128Gcm::new(&[7; 16]));
        let mut buf = SEALED_HEARTBEAT.to_vec();
        assert_eq!(open(&mut buf, CLUSTER, &kr), Err(Error::Auth));
        assert_eq!(buf, SEALED_HEARTBEAT, "a refused frame is not decrypted");
    }

    #[test]
    fn insecure_and_secure_do_not_mix() {
        // An insecure frame under key id 1 to a secure receiver, and the reverse.
        let mut ins = INSECURE_HEARTBEAT.to_vec();
        ins[7] = 1;
        assert_eq!(open(&mut ins, CLUSTER, &aes()), Err(Error::Auth));
        let mut sec = SEALED_HEARTBEAT.to_vec();
        sec[7] = 0;
        assert_eq!(open(&mut sec, CLUSTER, &insecure()), Err(Error::Auth));
        let mut any: Keyring<AnyAead> =
            Keyring::new(KeyId(1), AnyAead::Aes128Gcm(Aes128Gcm::new(&TEST_KEY)));
        assert_eq!(
            any.add(KeyId(0), AnyAead::Insecure(Insecure)),
            Err(KeyringError::Mixed)
        );
        let mut buf = SEALED_HEARTBEAT.to_vec();
        assert_eq!(open(&mut buf, CLUSTER, &any), Ok(heartbeat_frame()));
    }

    #[test]
    fn unknown_kind_is_authenticated_then_skipped() {
        let kr = aes();
        let leave = Body::Leave(LeaveRepr { reason: 0 });
        let mut sealer = Sealer::new(CLUSTER, NodeId(3), Incarnation(9));
        let mut out = [0u8; MAX_DATAGRAM];
        let n = sealer.seal(&leave, &kr, &mut out).unwrap();
        // A newer sender's kind 0x42 with a valid tag: reseal the same bytes by hand.
        let mut buf = out[..n].to_vec();
        buf[5] = 0x42;
        let (aad, rest) = buf.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let key = kr.active_key().unwrap();
        // Undo the encryption, then seal again under the new header.
        let nonce = nonce(NodeId(3), Incarnation(9), 0);
        let mut plain = body.to_vec();
        let mut orig_aad = aad.to_vec();
        orig_aad[5] = Kind::Leave as u8;
        key.open_in_place(&nonce, &orig_aad, &mut plain, (&*tag).try_into().unwrap())
            .unwrap();
        body.copy_from_slice(&plain);
        let t = key.seal_in_place(&nonce, aad, body).unwrap();
        tag.copy_from_slice(&t);
        let mut forged = buf.clone();
        assert_eq!(open(&mut buf, CLUSTER, &kr), Err(Error::UnknownKind));
        // The same kind with a bad tag is an authentication failure, not a skip.
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(open(&mut forged, CLUSTER, &kr), Err(Error::Auth));
    }

    #[test]
    fn replayed_frame_is_refused() {
        let kr = aes();
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        let mut a = SEALED_HEARTBEAT.to_vec();
        assert_eq!(rx.receive(&mut a, &kr), Ok(heartbeat_frame()));
        let mut b = SEALED_HEARTBEAT.to_vec();
        assert_eq!(rx.receive(&mut b, &kr), Err(Error::Replay));
    }

    #[test]
    fn a_heartbeat_read_after_many_later_data_frames_is_accepted() {
        let kr = aes();
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        let mut update = session_update_frame();
        update.header.sender = heartbeat_frame().header.sender;
        update.header.incarnation = Incarnation(100);
        for seq in 11..11 + 2 * replay::WINDOW {
            update.header.seq = seq;
            assert!(rx.receive(&mut sealed(&update, &kr), &kr).is_ok());
        }
        assert!(rx.receive(&mut sealed_hb(&kr, 100, 10), &kr).is_ok());
        assert_eq!(
            rx.receive(&mut sealed_hb(&kr, 100, 10), &kr),
            Err(Error::Replay)
        );
        update.header.seq = 11;
        assert_eq!(
            rx.receive(&mut sealed(&update, &kr), &kr),
            Err(Error::Replay)
        );
    }

    fn sealed_hb(kr: &Keyring<Aes128Gcm>, inc: u32, seq: u64) -> Vec<u8> {
        let mut f = heartbeat_frame();
        f.header.incarnation = Incarnation(inc);
        f.header.seq = seq;
        sealed(&f, kr)
    }

    #[test]
    fn stale_incarnation_is_refused_and_newer_resets() {
        let kr = aes();
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        assert!(rx.receive(&mut sealed_hb(&kr, 100, 50), &kr).is_ok());
        assert_eq!(
            rx.receive(&mut sealed_hb(&kr, 99, 51), &kr),
            Err(Error::StaleIncarnation)
        );
        // The restarted node starts its seq again at 0.
        assert!(rx.receive(&mut sealed_hb(&kr, 101, 0), &kr).is_ok());
        assert_eq!(
            rx.receive(&mut sealed_hb(&kr, 100, 52), &kr),
            Err(Error::StaleIncarnation)
        );
        assert_eq!(
            rx.receive(&mut sealed_hb(&kr, 101, 0), &kr),
            Err(Error::Replay)
        );
    }

    #[test]
    fn forged_frame_does_not_move_the_window() {
        let kr = aes();
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        assert!(rx.receive(&mut sealed_hb(&kr, 100, 10), &kr).is_ok());
        // A far-ahead seq with a broken tag would push seq 11 out of the window if counted.
        let mut forged = sealed_hb(&kr, 100, 10_000);
        forged[40] ^= 1;
        assert_eq!(rx.receive(&mut forged, &kr), Err(Error::Auth));
        let mut forged = sealed_hb(&kr, 101, 0);
        forged[40] ^= 1;
        assert_eq!(rx.receive(&mut forged, &kr), Err(Error::Auth));
        assert!(rx.receive(&mut sealed_hb(&kr, 100, 11), &kr).is_ok());
    }

    #[test]
    fn rotation_accepts_old_key_until_dropped() {
        let key2 = [0x22; 16];
        let mut tx = aes();
        let mut rx_keys = aes();
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        let mut sealer = Sealer::new(CLUSTER, NodeId(5), Incarnation(1));
        let body = heartbeat_frame().body;
        let send = |sealer: &mut Sealer, kr: &Keyring<Aes128Gcm>| {
            let mut out = [0u8; MAX_DATAGRAM];
            let n = sealer.seal(&body, kr, &mut out).unwrap();
            out[..n].to_vec()
        };
        let old = send(&mut sealer, &tx);
        // Step 1: every node learns key 2; step 2: senders switch to it.
        rx_keys.add(KeyId(2), Aes128Gcm::new(&key2)).unwrap();
        tx.add(KeyId(2), Aes128Gcm::new(&key2)).unwrap();
        tx.set_active(KeyId(2)).unwrap();
        let new = send(&mut sealer, &tx);
        assert_eq!(new[7], 2, "sealed with the active key id");
        let late_old = {
            let tx_old = aes();
            send(&mut sealer, &tx_old)
        };
        assert!(rx.receive(&mut old.clone(), &rx_keys).is_ok());
        assert!(rx.receive(&mut new.clone(), &rx_keys).is_ok());
        // Step 3: key 1 dropped; frames under it are refused from then on.
        rx_keys.set_active(KeyId(2)).unwrap();
        rx_keys.remove(KeyId(1)).unwrap();
        assert_eq!(
            rx.receive(&mut late_old.clone(), &rx_keys),
            Err(Error::UnknownKey)
        );
    }

    #[test]
    fn keyring_rules() {
        let mut kr: Keyring<Aes128Gcm, 2> = Keyring::new(KeyId(1), Aes128Gcm::new(&[1; 16]));
        assert_eq!(kr.remove(KeyId(1)).err(), Some(KeyringError::ActiveKey));
        assert_eq!(kr.remove(KeyId(9)).err(), Some(KeyringError::UnknownKey));
        assert_eq!(kr.set_active(KeyId(9)), Err(KeyringError::UnknownKey));
        kr.add(KeyId(2), Aes128Gcm::new(&[2; 16])).unwrap();
        assert_eq!(
            kr.add(KeyId(3), Aes128Gcm::new(&[3; 16])),
            Err(KeyringError::Full)
        );
        // Replacing an id needs no room.
        kr.add(KeyId(2), Aes128Gcm::new(&[4; 16])).unwrap();
        assert_eq!(kr.ids().collect::<Vec<_>>(), [KeyId(1), KeyId(2)]);
        assert_eq!(kr.active(), KeyId(1));
    }

    #[test]
    fn other_cluster_is_refused() {
        let kr = aes();
        let mut rx: Receiver<4> = Receiver::new(ClusterId(0xbeee));
        let mut buf = SEALED_HEARTBEAT.to_vec();
        assert_eq!(rx.receive(&mut buf, &kr), Err(Error::OtherCluster));
        assert!(rx.replay().is_empty());
    }

    #[test]
    fn sealer_counts_and_stops_at_max_seq() {
        let kr = aes();
        let mut s = Sealer::new(CLUSTER, NodeId(1), Incarnation(1));
        let body = heartbeat_frame().body;
        let mut out = [0u8; MAX_DATAGRAM];
        s.seal(&body, &kr, &mut out).unwrap();
        s.seal(&body, &kr, &mut out).unwrap();
        assert_eq!(s.next_seq(), 2);
        assert_eq!(
            s.seal(&body, &kr, &mut out[..10]),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(s.next_seq(), 2, "a failed seal uses no seq");
        s.next_seq = MAX_SEQ;
        assert!(s.seal(&body, &kr, &mut out).is_ok());
        assert_eq!(s.seal(&body, &kr, &mut out), Err(Error::Malformed));
    }

    #[test]
    fn too_many_senders() {
        let kr = aes();
        let mut rx: Receiver<2> = Receiver::new(CLUSTER);
        for sender in 1..=3u16 {
            let mut f = heartbeat_frame();
            f.header.sender = NodeId(sender);
            let got = rx.receive(&mut sealed(&f, &kr), &kr).map(|_| ());
            let want = if sender <= 2 {
                Ok(())
            } else {
                Err(Error::TooManySenders)
            };
            assert_eq!(got, want);
        }
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(f in frame()) {
            for insecure_mode in [false, true] {
                let mut out = [0u8; MAX_DATAGRAM];
                let n = if insecure_mode {
                    seal(&f.header, &f.body, &insecure(), &mut out)
                } else {
                    seal(&f.header, &f.body, &aes(), &mut out)
                }
                .unwrap();
                prop_assert!(n <= MAX_DATAGRAM);
                let got = if insecure_mode {
                    open(&mut out[..n], f.header.cluster, &insecure())
                } else {
                    open(&mut out[..n], f.header.cluster, &aes())
                };
                let mut want = f;
                want.header.flags = if insecure_mode { FLAG_INSECURE } else { 0 };
                want.header.key_id = KeyId(if insecure_mode { 0 } else { 1 });
                prop_assert_eq!(got, Ok(want));
            }
        }
    }
}
