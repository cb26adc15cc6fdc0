//! Replays every input the fuzzers (fuzz/, run by scripts/fuzz) found, plus their seeds and
//! some handmade nasty inputs, through the same checks as the fuzz targets, on stable.
//!
//! A new crash input goes into tests/fuzz-cases/<target>/ as found in fuzz/artifacts/.
//! Head inputs are also tried split at every point and under every test configuration.

mod fuzz_checks;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in [
        root.join("tests/fuzz-cases").join(target),
        root.join("../../fuzz/seeds").join(target),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                let data = fs::read(&path).unwrap();
                found.push((path, data));
            }
        }
    }
    found.sort();
    assert!(!found.is_empty(), "no inputs for {target}");
    found
}

/// Runs `check` on every input of `target`, naming every one that fails.
fn replay(target: &str, check: impl Fn(&[u8])) {
    let mut failed = Vec::new();
    for (path, data) in inputs(target) {
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "failed: {failed:#?}");
}

#[test]
fn head_cases() {
    replay("head", fuzz_checks::check_head);
}

#[test]
fn head_cases_every_split() {
    replay("head", |data| {
        let raw = data.get(2..).unwrap_or_default();
        for cfg in fuzz_checks::head_configs() {
            for split in 0..=raw.len() {
                fuzz_checks::check_head_split(raw, split, &cfg);
            }
        }
    });
}

#[test]
fn chunked_cases() {
    replay("chunked", fuzz_checks::check_chunked);
}

#[test]
fn response_head_cases() {
    replay("response_head", fuzz_checks::check_response_head);
}

#[test]
fn proxy_header_cases() {
    replay("proxy_header", fuzz_checks::check_proxy_header);
}
