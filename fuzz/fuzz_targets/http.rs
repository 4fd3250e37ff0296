//! Fuzzes the HTTP request parser and router (`/health`, `/status`, `/metrics`): arbitrary
//! bytes as a request head must give a bounded answer or "need more", never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tandemd::ops::http::fuzzing::check(data);
});
