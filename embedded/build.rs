//! Puts memory.x where cortex-m-rt's link.x finds it, and turns the test vectors of
//! docs/PROTOCOL.md into `vectors.rs` so the firmware checks the very bytes the document shows.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("memory.x is next to build.rs");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    let doc = "../docs/PROTOCOL.md";
    println!("cargo:rerun-if-changed={doc}");
    let text = fs::read_to_string(doc).expect("docs/PROTOCOL.md is readable");
    let mut rs =
        String::from("/// `(name, bytes)` of every `hex vector:` block of docs/PROTOCOL.md.\n");
    rs.push_str("pub static VECTORS: &[(&str, &[u8])] = &[\n");
    let fence = "```hex vector:";
    let mut rest = text.as_str();
    while let Some(at) = rest.find(fence) {
        let block = &rest[at + fence.len()..];
        let (name, body) = block
            .split_once('\n')
            .expect("a vector fence ends its line");
        let end = body.find("```").expect("a vector block is closed");
        let bytes: Vec<String> = body[..end]
            .split_whitespace()
            .map(|h| {
                u8::from_str_radix(h, 16).expect("vector bytes are hex");
                format!("0x{h}")
            })
            .collect();
        rs.push_str(&format!("    ({name:?}, &[{}]),\n", bytes.join(", ")));
        rest = &body[end..];
    }
    rs.push_str("];\n");
    fs::write(out.join("vectors.rs"), rs).expect("OUT_DIR is writable");
}
