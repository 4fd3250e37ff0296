//! Fuzzes the replicated value encoding (wire format version 2) and its merge: two arbitrary
//! encoded values must decode without panicking, round-trip, merge commutatively and
//! idempotently, and leave a store in the same state whichever arrives first; the same bytes
//! as a transaction's batch entry must decode without panicking and round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tandemd::engine::value::fuzzing::check(data);
});
