//! The daemon's frame cipher: AES-128-GCM from `ring`, or the explicit insecure mode.
//!
//! The core seals with RustCrypto `aes-gcm` (portable, `no_std`). The daemon runs on a
//! server CPU and receives every frame of the cluster, so it takes `ring`'s assembly
//! AES-GCM, which needs no compile-time CPU flags and opens a heartbeat in about 3/4 of
//! the time (measured in `benches/README.md`). Both are the same standard AEAD; the tests
//! below seal with one and open with the other.

use tandem_core::crypto::{run_key, Aead, AnyAead, Run, KEY_LEN, NONCE_LEN};
use tandem_core::frame::{Error, TAG_LEN};
use zeroize::Zeroizing;

/// AES-128-GCM from `ring`.
pub struct RingAes128Gcm(ring::aead::LessSafeKey);

impl RingAes128Gcm {
    pub fn new(key: &[u8; KEY_LEN]) -> RingAes128Gcm {
        // `UnboundKey::new` fails only for a key of the wrong length; KEY_LEN is
        // AES_128_GCM's key length by type, so this cannot fail.
        #[allow(clippy::expect_used)]
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, key)
            .expect("16-byte key for AES-128-GCM");
        RingAes128Gcm(ring::aead::LessSafeKey::new(key))
    }
}

impl std::fmt::Debug for RingAes128Gcm {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RingAes128Gcm(..)")
    }
}

impl Aead for RingAes128Gcm {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), buf)
            .map_err(|_| Error::BufferTooSmall)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// On [`Error::Auth`] ring has zeroed `buf`; the caller drops the frame.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        let tag = ring::aead::Tag::from(*tag);
        self.0
            .open_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), tag, buf, 0..)
            .map(|_| ())
            .map_err(|_| Error::Auth)
    }

    /// A cluster key's bytes, wiped when dropped.
    type Key = Zeroizing<[u8; KEY_LEN]>;

    fn derive(key: &Zeroizing<[u8; KEY_LEN]>, run: &Run) -> RingAes128Gcm {
        let run_key = Zeroizing::new(run_key(key, run));
        RingAes128Gcm::new(&run_key)
    }
}

/// A cipher chosen at run time: a key file (`ring`), or `--insecure`.
pub type Cipher = AnyAead<RingAes128Gcm>;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tandem_core::crypto::{open, seal, Aes128Gcm, AnyKey, Insecure, Keyring};
    use tandem_core::frame::{Body, Frame, HeaderRepr, HeartbeatRepr, Kind, Role, StateFlags};
    use tandem_core::{ClusterId, Incarnation, KeyId, NodeId, Salt};

    const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    /// AES-128-GCM test case 3 of the GCM specification (McGrew & Viega), 64-byte message,
    /// no AAD, and test case 4 (60 bytes, 20 bytes of AAD): ring as the daemon calls it.
    #[test]
    fn gcm_spec_vectors() {
        let key: [u8; 16] = hex("feffe9928665731c6d6a8f9467308308").try_into().unwrap();
        let nonce: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().unwrap();
        let plain = hex(concat!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
        ));
        let cipher = hex(concat!(
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e",
            "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
        ));
        let c = RingAes128Gcm::new(&key);
        let mut buf = plain.clone();
        let tag = c.seal_in_place(&nonce, &[], &mut buf).unwrap();
        assert_eq!(buf, cipher);
        assert_eq!(tag.to_vec(), hex("4d5c2af327cd64a62cf35abd2ba6fab4"));
        c.open_in_place(&nonce, &[], &mut buf, &tag).unwrap();
        assert_eq!(buf, plain);

        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let mut buf = plain[..60].to_vec();
        let tag = c.seal_in_place(&nonce, &aad, &mut buf).unwrap();
        assert_eq!(buf, cipher[..60]);
        assert_eq!(tag.to_vec(), hex("5bc94fbc3221a5db94fae95ae7121a47"));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn heartbeat(seq: u64) -> Frame<'static> {
        Frame {
            header: HeaderRepr {
                kind: Kind::Heartbeat,
                flags: 0,
                key_id: KeyId(1),
                cluster: ClusterId(0xbeef),
                sender: NodeId(3),
                incarnation: Incarnation(77),
                salt: Salt([1, 2, 3, 4, 5, 6]),
                seq,
            },
            body: Body::Heartbeat(HeartbeatRepr {
                interval_us: 2_000,
                multiplier: 5,
                role: Role::Leader,
                priority: 100,
                view: 9,
                leader: Some(NodeId(3)),
                state: StateFlags(0),
                repl_hwm: 1234,
            }),
        }
    }

    /// Frames sealed by the core's RustCrypto cipher open under ring and the reverse, byte
    /// for byte the same datagram (so both derive the same run key); a flipped bit
    /// anywhere is `Auth` under both.
    #[test]
    fn ring_and_rustcrypto_interoperate() {
        let mut rc: Keyring<Aes128Gcm> = Keyring::new(KeyId(1), KEY);
        let mut rg: Keyring<Cipher> =
            Keyring::new(KeyId(1), AnyKey::Aes128Gcm(Zeroizing::new(KEY)));
        for seq in [0, 1, 0xffff_ffff] {
            let f = heartbeat(seq);
            let (mut a, mut b) = ([0u8; 256], [0xa5u8; 256]);
            let n = seal(&f.header, &f.body, &mut rc, &mut a).unwrap();
            let m = seal(&f.header, &f.body, &mut rg, &mut b).unwrap();
            assert_eq!(a[..n], b[..m], "same datagram from both ciphers");
            let mut x = a[..n].to_vec();
            assert_eq!(open(&mut x, ClusterId(0xbeef), &mut rg).unwrap(), f);
            let mut y = b[..m].to_vec();
            assert_eq!(open(&mut y, ClusterId(0xbeef), &mut rc).unwrap(), f);
            for bit in (0..n * 8).step_by(7) {
                let mut z = a[..n].to_vec();
                z[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    open(&mut z, ClusterId(0xbeef), &mut rg).is_err(),
                    "bit {bit}"
                );
            }
        }
    }

    #[test]
    fn insecure_is_flagged() {
        assert!(Cipher::Insecure(Insecure).is_insecure());
        assert!(!Cipher::Aes128Gcm(RingAes128Gcm::new(&KEY)).is_insecure());
    }
}
