#![no_main]

// The properties live with the stable suite, which replays every saved crash input.
#[path = "../../crates/stogie-http/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_proxy_header(data));
