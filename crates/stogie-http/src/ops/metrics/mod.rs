//! Counters for Prometheus, kept by the engine with relaxed atomics, and their text
//! rendering (exposition format 0.0.4).
//!
//! Every process's counters live in one slot of a [`MetricsRegion`]. With worker processes
//! the supervisor maps the region, shared, before it forks them: each worker counts in its
//! own slot, and the supervisor sums the slots without asking anyone (a worker that hangs
//! cannot hold up a scrape). A worker that is replaced hands its counts to the `retired`
//! slot, so that the sums never go backwards.

use std::io;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Refusal;

/// Methods counted by name; any other is `other`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
/// Protocols requests are counted by (label `protocol`): HTTP/1.x and HTTP/2.
pub const PROTOCOLS: [&str; 2] = ["h1", "h2"];
/// Upper bounds of the request duration histogram, in seconds (`+Inf` follows).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const BUCKET_MICROS: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

const REFUSALS: [(Refusal, &str); 4] = [
    (Refusal::Parse, "parse_error"),
    (Refusal::Limit, "limit"),
    (Refusal::Timeout, "timeout"),
    (Refusal::QueueFull, "queue_full"),
];

/// One process's counters. `#[repr(C)]` and all atomics: it lives in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Counters {
    requests: [[[AtomicU64; 5]; METHODS.len()]; PROTOCOLS.len()],
    /// Per bucket (not cumulative); the last is `+Inf`.
    duration_buckets: [AtomicU64; BUCKETS.len() + 1],
    duration_micros: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    refusals: [AtomicU64; 4],
    tls_handshakes: AtomicU64,
    tls_failures: AtomicU64,
    /// Gauges.
    connections: AtomicI64,
    idle: AtomicI64,
    parked: AtomicI64,
    queued: AtomicI64,
    busy_threads: AtomicI64,
    threads: AtomicI64,
    /// The process counting here, 0 when the slot is free.
    pid: AtomicU64,
}

/// Where `method` is counted: its place in [`METHODS`] (`other` for any other).
pub fn method_index(method: &[u8]) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| m.as_bytes() == method)
        .unwrap_or(METHODS.len() - 1)
}

impl Counters {
    /// Counts a request (its method's [`method_index`]) answered with `status`: when the
    /// answer is about to go out, so that a client that has it sees it counted.
    pub fn request(&self, method: usize, status: u16) {
        self.request_on(0, method, status);
    }

    /// [`Counters::request`] for a request of `protocol` (its place in [`PROTOCOLS`]).
    pub fn request_on(&self, protocol: usize, method: usize, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[protocol.min(PROTOCOLS.len() - 1)][method.min(METHODS.len() - 1)][class]
            .fetch_add(1, Relaxed);
    }

    /// Adds a request's duration, once its answer is complete, to the histogram.
    pub fn observe(&self, took: Duration) {
        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = BUCKET_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(BUCKETS.len());
        self.duration_buckets[bucket].fetch_add(1, Relaxed);
        self.duration_micros.fetch_add(micros, Relaxed);
    }

    /// Counts a refusal by the engine.
    pub fn refused(&self, why: Refusal) {
        let i = REFUSALS.iter().position(|(r, _)| *r == why).unwrap_or(0);
        self.refusals[i].fetch_add(1, Relaxed);
    }

    /// Counts bytes read from clients.
    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    /// Counts bytes written to clients.
    pub fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }

    /// Counts a TLS handshake, completed or failed.
    pub fn tls_handshake(&self, ok: bool) {
        if ok {
            self.tls_handshakes.fetch_add(1, Relaxed);
        } else {
            self.tls_failures.fetch_add(1, Relaxed);
        }
    }

    /// A connection opened (+1) or closed (-1).
    pub fn connections(&self, delta: i64) {
        self.connections.fetch_add(delta, Relaxed);
    }

    /// A connection began (+1) or ended (-1) waiting for its next request.
    pub fn idle(&self, delta: i64) {
        self.idle.fetch_add(delta, Relaxed);
    }

    /// Sets the Python side's gauges: requests queued, threads busy, threads alive.
    pub fn set_load(&self, queued: usize, busy: usize, threads: usize) {
        self.queued.store(queued as i64, Relaxed);
        self.busy_threads.store(busy as i64, Relaxed);
        self.threads.store(threads as i64, Relaxed);
    }

    /// Bytes read from clients so far.
    pub fn total_bytes_in(&self) -> u64 {
        self.bytes_in.load(Relaxed)
    }

    /// Bytes written to clients so far.
    pub fn total_bytes_out(&self) -> u64 {
        self.bytes_out.load(Relaxed)
    }

    /// Sets how many idle connections are parked now.
    pub fn set_parked(&self, n: usize) {
        self.parked.store(n as i64, Relaxed);
    }

    /// Requests counted so far (every method and status).
    pub fn total_requests(&self) -> u64 {
        self.requests
            .iter()
            .flatten()
            .flatten()
            .map(|c| c.load(Relaxed))
            .sum()
    }

    fn counters(&self) -> impl Iterator<Item = &AtomicU64> {
        self.requests
            .iter()
            .flatten()
            .flatten()
            .chain(&self.duration_buckets)
            .chain([
                &self.duration_micros,
                &self.bytes_in,
                &self.bytes_out,
                &self.tls_handshakes,
                &self.tls_failures,
            ])
            .chain(&self.refusals)
    }

    fn gauges(&self) -> [&AtomicI64; 6] {
        [
            &self.connections,
            &self.idle,
            &self.parked,
            &self.queued,
            &self.busy_threads,
            &self.threads,
        ]
    }

    /// Adds `other`'s counters (not its gauges) into these, and zeroes `other`'s.
    fn absorb(&self, other: &Counters) {
        for (mine, theirs) in self.counters().zip(other.counters()) {
            mine.fetch_add(theirs.swap(0, Relaxed), Relaxed);
        }
        for g in other.gauges() {
            g.store(0, Relaxed);
        }
    }
}

/// Memory for one [`Counters`] per process: private to this process, or (made before a
/// fork with [`MetricsRegion::shared`]) shared with the processes forked after.
pub struct MetricsRegion {
    ptr: *mut Counters,
    slots: usize,
}

// SAFETY: the region only holds atomics, and lives as long as the Arc around it.
unsafe impl Send for MetricsRegion {}
unsafe impl Sync for MetricsRegion {}

impl std::fmt::Debug for MetricsRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetricsRegion({} slots)", self.slots)
    }
}

impl MetricsRegion {
    /// One slot, private to this process.
    pub fn private() -> Arc<MetricsRegion> {
        Self::map(1, libc::MAP_PRIVATE).expect("an anonymous page can always be mapped")
    }

    /// `workers` slots plus the retired one, shared with processes forked after this.
    pub fn shared(workers: usize) -> io::Result<Arc<MetricsRegion>> {
        Self::map(workers + 1, libc::MAP_SHARED)
    }

    fn map(slots: usize, sharing: libc::c_int) -> io::Result<Arc<MetricsRegion>> {
        let len = slots * std::mem::size_of::<Counters>();
        // SAFETY: an anonymous mapping, zero-filled by the kernel: all-zero atomics are
        // valid `Counters`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                sharing | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(MetricsRegion {
            ptr: ptr.cast(),
            slots,
        }))
    }

    /// Slots for workers (the last slot holds retired workers' counts).
    pub fn worker_slots(&self) -> usize {
        self.slots.saturating_sub(1).max(1)
    }

    /// Slot `i`'s counters (the last slot past the end).
    pub fn slot(&self, i: usize) -> &Counters {
        // SAFETY: in bounds, and the mapping lives as long as `self`.
        unsafe { &*self.ptr.add(i.min(self.slots - 1)) }
    }

    /// Marks slot `i` as counting for process `pid`.
    pub fn claim(&self, i: usize, pid: u32) {
        self.slot(i).pid.store(u64::from(pid), Relaxed);
    }

    /// Moves a gone worker's counts into the retired slot and frees its slot.
    pub fn retire(&self, i: usize) {
        if self.slots < 2 || i >= self.slots - 1 {
            return;
        }
        let gone = self.slot(i);
        self.slot(self.slots - 1).absorb(gone);
        gone.pid.store(0, Relaxed);
    }
}

impl Drop for MetricsRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(
                self.ptr.cast(),
                self.slots * std::mem::size_of::<Counters>(),
            );
        }
    }
}

/// A process's handle on its slot.
#[derive(Clone, Debug)]
pub struct Metrics {
    region: Arc<MetricsRegion>,
    slot: usize,
}

impl Metrics {
    /// Counts in `slot` of `region`.
    pub fn new(region: Arc<MetricsRegion>, slot: usize) -> Metrics {
        region.claim(slot, std::process::id());
        Metrics { region, slot }
    }

    /// A private region of one slot.
    pub fn private() -> Metrics {
        Metrics::new(MetricsRegion::private(), 0)
    }
}

impl Metrics {
    /// The region this slot is in.
    pub fn region(&self) -> &MetricsRegion {
        &self.region
    }
}

impl std::ops::Deref for Metrics {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        self.region.slot(self.slot)
    }
}

mod endpoint;
mod render;

pub use endpoint::MetricsEndpoint;
pub use render::{render, SupervisorCounts};
