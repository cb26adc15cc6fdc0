//! The counters of every process as Prometheus reads them (text exposition format 0.0.4).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use super::{Counters, MetricsRegion, BUCKETS, METHODS, PROTOCOLS, REFUSALS};

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
        "Requests answered, by method, status class and protocol (h1: HTTP/1.x, h2: HTTP/2).",
    );
    for (p, protocol) in PROTOCOLS.iter().enumerate() {
        for (m, method) in METHODS.iter().enumerate() {
            for class in 0..5 {
                let n = sum(&|c| c.requests[p][m][class].load(Relaxed));
                let _ = writeln!(
                    out,
                    "stogie_requests_total{{method=\"{method}\",status=\"{}xx\",protocol=\"{protocol}\"}} {n}",
                    class + 1
                );
            }
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
    use crate::error::Refusal;
    use crate::ops::metrics::{method_index, Metrics};
    use std::time::Duration;

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
                "stogie_requests_total{method=\"GET\",status=\"2xx\",protocol=\"h1\"}"
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                "stogie_requests_total{method=\"GET\",status=\"4xx\",protocol=\"h1\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "stogie_requests_total{method=\"other\",status=\"5xx\",protocol=\"h1\"}"
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
                "stogie_requests_total{method=\"GET\",status=\"2xx\",protocol=\"h1\"}"
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
                "stogie_requests_total{method=\"POST\",status=\"2xx\",protocol=\"h1\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "stogie_requests_total{method=\"GET\",status=\"2xx\",protocol=\"h1\"}"
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
