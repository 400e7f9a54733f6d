#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)] // Each target uses one of the shared checks.
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::chunk_split(data));
