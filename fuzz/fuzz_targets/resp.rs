//! Fuzzes the RESP request parser (and the commands it feeds): arbitrary bytes, cut into
//! pieces at arbitrary points, must parse exactly as the whole buffer does, never panic, and
//! never hold more than one bounded request in memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tandemd::resp::fuzzing::check(data);
});
