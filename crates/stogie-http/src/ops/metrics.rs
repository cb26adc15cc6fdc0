//! Counters for Prometheus, kept by the engine with relaxed atomics, and their text
//! rendering (exposition format 0.0.4).
//!
//! Every process's counters live in one slot of a [`MetricsRegion`]. With worker processes
//! the supervisor maps the region, shared, before it forks them: each worker counts in its
//! own slot, and the supervisor sums the slots without asking anyone (a worker that hangs
//! cannot hold up a scrape). A worker that is replaced hands its counts to the `retired`
//! slot, so that the sums never go backwards.

use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Refusal;

/// Methods counted by name; any other is `other`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
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
    requests: [[AtomicU64; 5]; METHODS.len()],
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
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[method.min(METHODS.len() - 1)][class].fetch_add(1, Relaxed);
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
            .map(|c| c.load(Relaxed))
            .sum()
    }

    fn counters(&self) -> impl Iterator<Item = &AtomicU64> {
        self.requests
            .iter()
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

/// Counts that only the process serving `/metrics` knows.
#[derive(Clone, Copy, Debug, Default)]
pub struct SupervisorCounts {
    /// Worker processes started to replace others (died, recycled, reloaded).
    pub worker_restarts: u64,
    /// Worker processes running now.
    pub workers: usize,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP stogie_{name} {help}\n# TYPE stogie_{name} {kind}"
    );
}

/// Renders every slot of `region`, summed, in Prometheus' text format; for a supervisor,
/// its own counts and a few per-worker series too (labels `worker` and `pid`).
pub fn render(region: &MetricsRegion, supervisor: Option<SupervisorCounts>) -> String {
    let slots: Vec<&Counters> = (0..region.slots).map(|i| region.slot(i)).collect();
    let sum = |f: &dyn Fn(&Counters) -> u64| -> u64 { slots.iter().map(|c| f(c)).sum() };
    let gauge = |f: &dyn Fn(&Counters) -> &AtomicI64| -> i64 {
        slots.iter().map(|c| f(c).load(Relaxed)).sum::<i64>().max(0)
    };
    let mut out = String::with_capacity(8192);

    family(
        &mut out,
        "requests_total",
        "counter",
        "Requests answered, by method and status class.",
    );
    for (m, method) in METHODS.iter().enumerate() {
        for class in 0..5 {
            let n = sum(&|c| c.requests[m][class].load(Relaxed));
            let _ = writeln!(
                out,
                "stogie_requests_total{{method=\"{method}\",status=\"{}xx\"}} {n}",
                class + 1
            );
        }
    }

    let singles: [(&str, &str, &str, i128); 10] = [
        (
            "request_bytes_total",
            "counter",
            "Bytes read from clients.",
            sum(&|c| c.bytes_in.load(Relaxed)).into(),
        ),
        (
            "response_bytes_total",
            "counter",
            "Bytes written to clients.",
            sum(&|c| c.bytes_out.load(Relaxed)).into(),
        ),
        (
            "connections_open",
            "gauge",
            "Client connections open.",
            gauge(&|c| &c.connections).into(),
        ),
        (
            "connections_idle",
            "gauge",
            "Keep-alive connections waiting for their next request.",
            gauge(&|c| &c.idle).into(),
        ),
        (
            "connections_parked",
            "gauge",
            "Idle connections parked (holding no task until bytes come).",
            gauge(&|c| &c.parked).into(),
        ),
        (
            "requests_queued",
            "gauge",
            "Requests waiting for a Python worker thread.",
            gauge(&|c| &c.queued).into(),
        ),
        (
            "threads_busy",
            "gauge",
            "Python worker threads running a request.",
            gauge(&|c| &c.busy_threads).into(),
        ),
        (
            "threads",
            "gauge",
            "Python worker threads alive.",
            gauge(&|c| &c.threads).into(),
        ),
        (
            "tls_handshakes_total",
            "counter",
            "TLS handshakes completed.",
            sum(&|c| c.tls_handshakes.load(Relaxed)).into(),
        ),
        (
            "tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            sum(&|c| c.tls_failures.load(Relaxed)).into(),
        ),
    ];
    for (name, kind, help, value) in singles {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "stogie_{name} {value}");
    }

    family(
        &mut out,
        "refused_total",
        "counter",
        "Requests the server refused itself, by reason.",
    );
    for (i, (_, reason)) in REFUSALS.iter().enumerate() {
        let n = sum(&|c| c.refusals[i].load(Relaxed));
        let _ = writeln!(out, "stogie_refused_total{{reason=\"{reason}\"}} {n}");
    }

    family(
        &mut out,
        "request_duration_seconds",
        "histogram",
        "Time from a request's head to the end of its response.",
    );
    let mut cumulative = 0;
    for (i, le) in BUCKETS.iter().enumerate() {
        cumulative += sum(&|c| c.duration_buckets[i].load(Relaxed));
        let _ = writeln!(
            out,
            "stogie_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    cumulative += sum(&|c| c.duration_buckets[BUCKETS.len()].load(Relaxed));
    let _ = writeln!(
        out,
        "stogie_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let seconds = sum(&|c| c.duration_micros.load(Relaxed)) as f64 / 1e6;
    let _ = writeln!(out, "stogie_request_duration_seconds_sum {seconds}");
    let _ = writeln!(out, "stogie_request_duration_seconds_count {cumulative}");

    let Some(sup) = supervisor else { return out };
    family(&mut out, "workers", "gauge", "Worker processes running.");
    let _ = writeln!(out, "stogie_workers {}", sup.workers);
    family(
        &mut out,
        "worker_restarts_total",
        "counter",
        "Worker processes started to replace others.",
    );
    let _ = writeln!(out, "stogie_worker_restarts_total {}", sup.worker_restarts);
    let live: Vec<(usize, u64, &Counters)> = slots[..region.worker_slots()]
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.pid.load(Relaxed), *c))
        .filter(|&(_, pid, _)| pid != 0)
        .collect();
    family(
        &mut out,
        "worker_requests_total",
        "counter",
        "Requests answered by each worker process.",
    );
    for (i, pid, c) in &live {
        let n = c.total_requests();
        let _ = writeln!(
            out,
            "stogie_worker_requests_total{{worker=\"{i}\",pid=\"{pid}\"}} {n}"
        );
    }
    family(
        &mut out,
        "worker_threads_busy",
        "gauge",
        "Python threads running a request, by worker.",
    );
    for (i, pid, c) in &live {
        let n = c.busy_threads.load(Relaxed).max(0);
        let _ = writeln!(
            out,
            "stogie_worker_threads_busy{{worker=\"{i}\",pid=\"{pid}\"}} {n}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counts_render() {
        let m = Metrics::private();
        let get = method_index(b"GET");
        m.request(get, 200);
        m.observe(Duration::from_micros(800));
        m.request(get, 404);
        m.observe(Duration::from_millis(30));
        m.request(method_index(b"BREW"), 503);
        m.observe(Duration::from_secs(20));
        m.request(get, 200);
        m.refused(Refusal::Limit);
        m.bytes_in(100);
        m.bytes_out(250);
        m.connections(1);
        m.set_load(2, 3, 10);
        m.tls_handshake(true);
        m.tls_handshake(false);
        let text = render(&m.region, None);
        assert_eq!(
            value(
                &text,
                "stogie_requests_total{method=\"GET\",status=\"2xx\"}"
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                "stogie_requests_total{method=\"GET\",status=\"4xx\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "stogie_requests_total{method=\"other\",status=\"5xx\"}"
            ),
            1.0
        );
        assert_eq!(value(&text, "stogie_refused_total{reason=\"limit\"}"), 1.0);
        assert_eq!(value(&text, "stogie_request_bytes_total"), 100.0);
        assert_eq!(value(&text, "stogie_response_bytes_total"), 250.0);
        assert_eq!(value(&text, "stogie_connections_open"), 1.0);
        assert_eq!(value(&text, "stogie_requests_queued"), 2.0);
        assert_eq!(value(&text, "stogie_threads_busy"), 3.0);
        assert_eq!(value(&text, "stogie_threads"), 10.0);
        assert_eq!(value(&text, "stogie_tls_handshakes_total"), 1.0);
        assert_eq!(value(&text, "stogie_tls_handshake_failures_total"), 1.0);
        // Cumulative buckets.
        assert_eq!(
            value(
                &text,
                "stogie_request_duration_seconds_bucket{le=\"0.001\"}"
            ),
            1.0
        );
        assert_eq!(
            value(&text, "stogie_request_duration_seconds_bucket{le=\"0.05\"}"),
            2.0
        );
        assert_eq!(
            value(&text, "stogie_request_duration_seconds_bucket{le=\"10\"}"),
            2.0
        );
        assert_eq!(
            value(&text, "stogie_request_duration_seconds_bucket{le=\"+Inf\"}"),
            3.0
        );
        assert_eq!(value(&text, "stogie_request_duration_seconds_count"), 3.0);
        assert!((value(&text, "stogie_request_duration_seconds_sum") - 20.0308).abs() < 1e-9);
        assert!(!text.contains("stogie_workers"));
    }

    #[test]
    fn shared_slots_sum_and_retired_counts_stay() {
        let region = MetricsRegion::shared(2).unwrap();
        let a = Metrics::new(region.clone(), 0);
        let b = Metrics::new(region.clone(), 1);
        a.request(0, 200);
        b.request(0, 200);
        b.request(method_index(b"POST"), 201);
        b.connections(4);
        let sup = Some(SupervisorCounts {
            worker_restarts: 1,
            workers: 2,
        });
        let text = render(&region, sup);
        assert_eq!(
            value(
                &text,
                "stogie_requests_total{method=\"GET\",status=\"2xx\"}"
            ),
            2.0
        );
        assert_eq!(value(&text, "stogie_connections_open"), 4.0);
        assert_eq!(value(&text, "stogie_worker_restarts_total"), 1.0);
        let pid = std::process::id();
        assert_eq!(
            value(
                &text,
                &format!("stogie_worker_requests_total{{worker=\"1\",pid=\"{pid}\"}}")
            ),
            2.0
        );
        // Worker 1 is replaced: its counts move to the retired slot, its gauges go.
        region.retire(1);
        let text = render(&region, sup);
        assert_eq!(
            value(
                &text,
                "stogie_requests_total{method=\"POST\",status=\"2xx\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "stogie_requests_total{method=\"GET\",status=\"2xx\"}"
            ),
            2.0
        );
        assert_eq!(value(&text, "stogie_connections_open"), 0.0);
        assert!(!text.contains("worker=\"1\""));
    }

    #[test]
    fn shared_slots_are_seen_across_a_fork() {
        let region = MetricsRegion::shared(1).unwrap();
        // SAFETY: the child only touches atomics in the shared mapping, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            Metrics::new(region.clone(), 0).request(0, 200);
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(region.slot(0).total_requests(), 1);
    }
}
