//! Replays the committed fuzz seed corpora (fuzz/corpus/<target>/) through the same paths the
//! fuzz targets drive, on stable and in `cargo test`: nothing panics, and the `valid-*`
//! seeds are accepted (so the corpora stay meaningful as the format evolves).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use tandem_core::crypto::{seal, Aes128Gcm, Insecure, Keyring, Receiver};
use tandem_core::frame::{Frame, MAX_DATAGRAM};
use tandem_core::{ClusterId, KeyId};

/// The fixed test key of docs/PROTOCOL.md (also in fuzz/fuzz_targets/open.rs).
const TEST_KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const CLUSTER: ClusterId = ClusterId(0xbeef);

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn parse_seeds() {
    let mut valid = 0;
    for target in ["parse", "roundtrip"] {
        for (name, bytes) in seeds(target) {
            let got = Frame::parse(&bytes);
            if name.starts_with("valid-") {
                let frame = got.unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
                let mut out = [0u8; MAX_DATAGRAM];
                let n = frame.emit(&mut out).unwrap();
                assert_eq!(&out[..n], &bytes[..], "{name}: emit differs");
                valid += 1;
            }
        }
    }
    assert!(valid >= 8, "every kind has a valid seed");
}

#[test]
fn open_seeds() {
    let mut aes: Keyring<Aes128Gcm> = Keyring::new(KeyId(1), TEST_KEY);
    let mut insecure: Keyring<Insecure> = Keyring::new(KeyId(0), ());
    let (mut valid_aes, mut valid_insecure) = (0, 0);
    for (name, bytes) in seeds("open") {
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        let mut buf = bytes.clone();
        let got = rx.receive(&mut buf, &mut aes).map(|f| f.header);
        if name.starts_with("valid-aes-") {
            got.unwrap_or_else(|e| panic!("{name}: {e}"));
            valid_aes += 1;
            // The same datagram again is a replay.
            let mut again = bytes.clone();
            assert!(rx.receive(&mut again, &mut aes).is_err(), "{name}: replay");
        }
        let mut rx: Receiver<4> = Receiver::new(CLUSTER);
        let mut buf = bytes.clone();
        if let Ok(frame) = rx.receive(&mut buf, &mut insecure) {
            let mut out = [0u8; MAX_DATAGRAM];
            let n = seal(&frame.header, &frame.body, &mut insecure, &mut out).unwrap();
            assert_eq!(&out[..n], &bytes[..], "{name}: re-seal differs");
            valid_insecure += usize::from(name.starts_with("valid-insecure-"));
        } else {
            assert!(!name.starts_with("valid-insecure-"), "{name} refused");
        }
    }
    assert!(valid_aes >= 8 && valid_insecure >= 8);
}
