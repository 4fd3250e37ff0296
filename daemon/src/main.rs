//! tandemd (being written).
fn main() {
    eprintln!("tandemd: not yet implemented");
    std::process::exit(1);
}
