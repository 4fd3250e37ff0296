//! Arbitrary bytes through the plaintext frame parser. Oracle: no panic, and a frame that
//! parses re-emits to exactly the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_core::frame::{Frame, MAX_DATAGRAM};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::parse(data) else {
        return;
    };
    let mut out = [0u8; MAX_DATAGRAM];
    let n = frame.emit(&mut out).expect("a parsed frame emits");
    assert_eq!(&out[..n], data, "parse then emit changed the bytes");
});
