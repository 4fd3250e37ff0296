//! Replays the committed RESP fuzz seed corpus (fuzz/corpus/resp) through the fuzz target's
//! body on stable Rust, so every seed is checked by `cargo test`.

use std::path::Path;

#[test]
fn resp_seed_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/resp");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("read seed");
        tandemd::resp::fuzzing::check(&data);
        n += 1;
    }
    assert!(n >= 20, "only {n} seeds in {}", dir.display());
    println!("replayed {n} RESP seeds");
}
