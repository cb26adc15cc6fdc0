//! Engine log messages into Python's `logging`.

use std::sync::atomic::Ordering::Relaxed;

use pyo3::prelude::*;
use stogie_http::{ErrorLog, LogLevel};

use crate::gil;

/// Sends engine messages to a Python callable `log(message, levelno)`.
/// Messages below `threshold` (a `logging` level number) are dropped without taking the GIL.
pub(super) struct PyLog(pub(super) Py<PyAny>, pub(super) std::sync::atomic::AtomicU8);

fn levelno(level: LogLevel) -> u8 {
    match level {
        LogLevel::Debug => 10,
        LogLevel::Info => 20,
        LogLevel::Warning => 30,
        LogLevel::Error => 40,
    }
}

impl ErrorLog for PyLog {
    fn enabled(&self, level: LogLevel) -> bool {
        levelno(level) >= self.1.load(Relaxed)
    }

    fn log(&self, level: LogLevel, msg: &str) {
        if !self.enabled(level) {
            return;
        }
        let levelno = levelno(level);
        // Called on the engine's I/O threads: they keep a thread state between messages.
        let logged = gil::attach(|py| {
            if let Err(e) = self.0.call1(py, (msg, levelno)) {
                e.print(py);
            }
        });
        if logged.is_none() {
            // The interpreter is exiting.
            eprintln!("stogie: {msg}");
        }
    }
}
