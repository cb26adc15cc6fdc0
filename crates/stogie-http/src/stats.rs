//! Counters behind Cheroot's `stats` dict. They read the engine's [`Metrics`] (always kept,
//! for Prometheus), counted from a baseline taken when counting is turned on or cleared: the
//! two views never disagree, and the metrics themselves never go backwards.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use crate::ops::metrics::Metrics;

/// Server-wide counters. Relaxed atomics: they are read for reports, never for decisions.
#[derive(Debug)]
pub struct Stats {
    enabled: AtomicBool,
    accepts: AtomicU64,
    socket_errors: AtomicU64,
    active: AtomicUsize,
    metrics: Metrics,
    /// What of the metrics' (requests, bytes read, bytes written) is not counted here: what
    /// came before the last clear and while counting was off; and when it was turned off.
    baseline: Mutex<Baseline>,
}

#[derive(Debug, Default)]
struct Baseline {
    excluded: (u64, u64, u64),
    off_since: Option<(u64, u64, u64)>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::with_metrics(Metrics::private())
    }
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
    /// Counters over `metrics` (a worker process's slot of a shared region, say).
    pub fn with_metrics(metrics: Metrics) -> Stats {
        Stats {
            enabled: AtomicBool::new(false),
            accepts: AtomicU64::new(0),
            socket_errors: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            metrics,
            // Off from the start: nothing counts until counting is turned on.
            baseline: Mutex::new(Baseline {
                excluded: (0, 0, 0),
                off_since: Some((0, 0, 0)),
            }),
        }
    }

    fn baseline(&self) -> std::sync::MutexGuard<'_, Baseline> {
        self.baseline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The engine's metrics these counters read.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Turns counting on or off: while off, nothing moves (Cheroot's `stats['Enabled']`).
    pub fn set_enabled(&self, on: bool) {
        let now = self.metered();
        let mut b = self.baseline();
        match (on, b.off_since) {
            (true, Some(off)) => {
                b.excluded.0 += now.0 - off.0;
                b.excluded.1 += now.1 - off.1;
                b.excluded.2 += now.2 - off.2;
                b.off_since = None;
            }
            (false, None) => b.off_since = Some(now),
            _ => {}
        }
        self.enabled.store(on, Relaxed);
    }

    /// Whether counting is on.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    fn metered(&self) -> (u64, u64, u64) {
        let m = &self.metrics;
        (m.total_requests(), m.total_bytes_in(), m.total_bytes_out())
    }

    /// Sets every counter back to zero (open connections stay counted).
    pub fn clear(&self) {
        self.accepts.store(0, Relaxed);
        self.socket_errors.store(0, Relaxed);
        let now = self.metered();
        let mut b = self.baseline();
        b.excluded = now;
        if b.off_since.is_some() {
            b.off_since = Some(now);
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let now = self.metered();
        let b = self.baseline();
        // While off, the counts stand where they were when it was turned off.
        let upto = b.off_since.unwrap_or(now);
        let base = b.excluded;
        drop(b);
        let now = upto;
        StatsSnapshot {
            accepts: self.accepts.load(Relaxed),
            requests: now.0.saturating_sub(base.0),
            bytes_read: now.1.saturating_sub(base.1),
            bytes_written: now.2.saturating_sub(base.2),
            socket_errors: self.socket_errors.load(Relaxed),
            active_connections: self.active.load(Relaxed),
        }
    }

    pub(crate) fn add_accept(&self) {
        if self.enabled.load(Relaxed) {
            self.accepts.fetch_add(1, Relaxed);
        }
    }
    pub(crate) fn add_read(&self, n: usize) {
        self.metrics.bytes_in(n);
    }
    pub(crate) fn add_written(&self, n: usize) {
        self.metrics.bytes_out(n);
    }
    pub(crate) fn add_socket_error(&self) {
        if self.enabled.load(Relaxed) {
            self.socket_errors.fetch_add(1, Relaxed);
        }
    }
    pub(crate) fn open(&self) {
        self.active.fetch_add(1, Relaxed);
        self.metrics.connections(1);
    }
    pub(crate) fn close(&self) {
        self.active.fetch_sub(1, Relaxed);
        self.metrics.connections(-1);
    }
}
