//! Replays the committed seed corpus of the `http` fuzz target on stable Rust, so every seed
//! keeps being checked by `cargo test` even where cargo-fuzz does not run.

use std::path::Path;

#[test]
fn http_fuzz_seeds_replay_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/http");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        tandemd::ops::http::fuzzing::check(&data);
        n += 1;
    }
    assert!(n >= 5, "expected the committed seeds, found {n}");
}
