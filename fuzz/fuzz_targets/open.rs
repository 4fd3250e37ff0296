//! Arbitrary bytes through the receive path (open + parse + replay check) under the fixed
//! test key of docs/PROTOCOL.md (cluster 0xbeef, key id 1 = 00 01 .. 0f) and under the
//! insecure provider, and under a witness's keys (the test key as control key, no data key).
//! Oracle: no panic; an opened frame re-seals to the same datagram; a witness opens no data
//! frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_core::crypto::{open, seal, Aes128Gcm, Insecure, KeyRole, Keyring, Keys, Receiver};
use tandem_core::frame::MAX_DATAGRAM;
use tandem_core::{ClusterId, KeyId};

const TEST_KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_DATAGRAM {
        return;
    }
    let mut aes: Keyring<Aes128Gcm> = Keyring::new(KeyId(1), TEST_KEY);
    let mut rx: Receiver<4> = Receiver::new(ClusterId(0xbeef));
    let mut buf = [0u8; MAX_DATAGRAM];
    let datagram = &mut buf[..data.len()];
    datagram.copy_from_slice(data);
    if let Ok(frame) = rx.receive(datagram, &mut aes) {
        let mut out = [0u8; MAX_DATAGRAM];
        let n = seal(&frame.header, &frame.body, &mut aes, &mut out).expect("re-seal");
        assert_eq!(&out[..n], data);
    }

    let mut witness: Keys<Aes128Gcm> = Keys {
        control: Keyring::new(KeyId(1), TEST_KEY),
        data: Keyring::empty(),
    };
    let datagram = &mut buf[..data.len()];
    datagram.copy_from_slice(data);
    if let Ok(frame) = open(datagram, ClusterId(0xbeef), &mut witness) {
        assert_eq!(KeyRole::of(frame.header.kind as u8), KeyRole::Control);
    }

    let mut insecure: Keyring<Insecure> = Keyring::new(KeyId(0), ());
    let mut rx: Receiver<4> = Receiver::new(ClusterId(0xbeef));
    let datagram = &mut buf[..data.len()];
    datagram.copy_from_slice(data);
    if let Ok(frame) = rx.receive(datagram, &mut insecure) {
        let mut out = [0u8; MAX_DATAGRAM];
        let n = seal(&frame.header, &frame.body, &mut insecure, &mut out).expect("re-seal");
        assert_eq!(&out[..n], data);
    }
});
