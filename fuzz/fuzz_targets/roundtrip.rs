//! Arbitrary Reprs: whatever `emit` accepts must parse back to the same frame, plaintext and
//! sealed (AES-128-GCM and insecure), and every truncation must be refused as truncated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_core::crypto::{open, seal, Aes128Gcm, Insecure, Keyring};
use tandem_core::frame::{Error, Frame, FLAG_INSECURE, MAX_DATAGRAM};
use tandem_core::KeyId;

fuzz_target!(|frame: Frame<'_>| {
    // A kind that disagrees with the body is refused by emit; do not waste inputs on it.
    let mut frame = frame;
    frame.header.kind = frame.body.kind();
    let mut buf = [0u8; MAX_DATAGRAM];
    let Ok(n) = frame.emit(&mut buf) else {
        return;
    };
    assert_eq!(n, frame.buffer_len());
    assert_eq!(Frame::parse(&buf[..n]), Ok(frame));
    for len in 0..n {
        assert_eq!(Frame::parse(&buf[..len]), Err(Error::Truncated));
    }

    let mut aes: Keyring<Aes128Gcm> = Keyring::new(KeyId(1), [0x42; 16]);
    let n = seal(&frame.header, &frame.body, &mut aes, &mut buf).expect("emit accepted it");
    let mut want = frame;
    want.header.key_id = KeyId(1);
    want.header.flags &= !FLAG_INSECURE;
    assert_eq!(open(&mut buf[..n], frame.header.cluster, &mut aes), Ok(want));

    let mut insecure: Keyring<Insecure> = Keyring::new(KeyId(0), ());
    let n = seal(&frame.header, &frame.body, &mut insecure, &mut buf).expect("emit accepted it");
    want.header.key_id = KeyId(0);
    want.header.flags |= FLAG_INSECURE;
    assert_eq!(
        open(&mut buf[..n], frame.header.cluster, &mut insecure),
        Ok(want)
    );
});
