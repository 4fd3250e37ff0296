//! Replays the committed value fuzz seed corpus (fuzz/corpus/value) through the fuzz target's
//! body on stable Rust, so every seed is checked by `cargo test`.

use std::path::Path;

#[test]
fn value_seed_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/value");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("read seed");
        tandemd::engine::value::fuzzing::check(&data);
        n += 1;
    }
    assert!(n >= 5, "only {n} seeds in {}", dir.display());
    println!("replayed {n} value seeds");
}
