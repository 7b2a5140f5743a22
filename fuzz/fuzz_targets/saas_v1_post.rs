#![no_main]

#[allow(dead_code)] // Each binary runs one of the shared targets.
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::saas_v1_post(data));
