//! Counters behind Cheroot's `stats` dict, kept only while enabled.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Server-wide counters. Relaxed atomics: they are read for reports, never for decisions.
#[derive(Debug, Default)]
pub struct Stats {
    enabled: AtomicBool,
    accepts: AtomicU64,
    requests: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    socket_errors: AtomicU64,
    active: AtomicUsize,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections accepted.
    pub accepts: u64,
    /// Requests read.
    pub requests: u64,
    /// Bytes read from clients.
    pub bytes_read: u64,
    /// Bytes written to clients.
    pub bytes_written: u64,
    /// Writes that failed or timed out.
    pub socket_errors: u64,
    /// Connections open now (always counted: shutdown waits on it).
    pub active_connections: usize,
}

impl Stats {
    /// Turns counting on or off.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Relaxed);
    }

    /// Whether counting is on.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Sets every counter back to zero (open connections stay counted).
    pub fn clear(&self) {
        for c in [
            &self.accepts,
            &self.requests,
            &self.bytes_read,
            &self.bytes_written,
            &self.socket_errors,
        ] {
            c.store(0, Relaxed);
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepts: self.accepts.load(Relaxed),
            requests: self.requests.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            socket_errors: self.socket_errors.load(Relaxed),
            active_connections: self.active.load(Relaxed),
        }
    }

    fn add(&self, c: &AtomicU64, n: u64) {
        if self.enabled.load(Relaxed) {
            c.fetch_add(n, Relaxed);
        }
    }

    pub(crate) fn add_accept(&self) {
        self.add(&self.accepts, 1);
    }
    pub(crate) fn add_request(&self) {
        self.add(&self.requests, 1);
    }
    pub(crate) fn add_read(&self, n: usize) {
        self.add(&self.bytes_read, n as u64);
    }
    pub(crate) fn add_written(&self, n: usize) {
        self.add(&self.bytes_written, n as u64);
    }
    pub(crate) fn add_socket_error(&self) {
        self.add(&self.socket_errors, 1);
    }
    pub(crate) fn open(&self) {
        self.active.fetch_add(1, Relaxed);
    }
    pub(crate) fn close(&self) {
        self.active.fetch_sub(1, Relaxed);
    }
}
