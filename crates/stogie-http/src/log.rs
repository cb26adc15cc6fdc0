//! Where the engine reports what went wrong (the Python side routes it to `logging`).

/// Severity of an engine log message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal events.
    Info,
    /// Something went wrong for one request or connection.
    Warning,
    /// Something the operator must look at.
    Error,
}

/// Where the engine reports errors (the Python side routes this to `logging`).
pub trait ErrorLog: Send + Sync + 'static {
    /// Records one message.
    fn log(&self, level: LogLevel, msg: &str);

    /// Whether messages at `level` are recorded: one that is not is not even formatted.
    /// (Per-connection debug messages, such as failed TLS handshakes, can come by the
    /// thousand from a scanner.)
    fn enabled(&self, level: LogLevel) -> bool {
        let _ = level;
        true
    }
}

/// An [`ErrorLog`] that writes to standard error.
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrLog;

impl ErrorLog for StderrLog {
    fn log(&self, level: LogLevel, msg: &str) {
        eprintln!("stogie {level:?}: {msg}");
    }
}
