"""h2load (nghttp2's load generator, Debian's nghttp2-client): the HTTP/2 workloads, and
stogie's HTTP/1.1 over the same transport and connections (``--h1``) for comparison."""

from __future__ import annotations

import re
import subprocess

from harness.base import HOST
from harness.results import Run

# h2load -D ends its run only once every stream it started is answered; a server that leaves
# one unanswered would hold it (and the benchmark) forever. Past this many seconds over the
# duration it is killed and the run has no numbers.
GRACE = 30

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def h2load_argv(port, w, duration, h1=False):
    """-t1 as wrk -t1; -c connections, -m streams in flight on each (1 over HTTP/1.1:
    h2load would pipeline, which no browser or proxy does)."""
    streams = 1 if h1 else w.streams
    argv = ["h2load", "-t1", f"-c{w.connections}", f"-m{streams}", f"-D{duration}"]
    if h1:
        argv.append("--h1")
    scheme = "https" if w.tls else "http"
    return argv + [f"{scheme}://{HOST}:{port}{w.path}"]


def expected_protocol(w, h1):
    if h1:
        return "http/1.1"
    return "h2" if w.tls else "h2c"


def parse_h2load(out, protocol):
    """Its summary, as a measure.Run; ``fail`` set when the protocol was not the one asked
    for (h2load falls back to HTTP/1.1 when ALPN does not give h2)."""
    run = Run()
    m = re.search(r"^Application protocol: (\S+)", out, re.M)
    got = m.group(1) if m else None
    if got != protocol:
        run.fail = f"no HTTP/2 (h2load got {got or 'no protocol'})"
        return run
    m = re.search(r"^finished in [\d.]+\w+, ([\d.]+) req/s", out, re.M)
    run.rps = float(m.group(1)) if m else 0.0
    m = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed,"
        r" (\d+) errored, (\d+) timeout",
        out,
        re.M,
    )
    errors = []
    if m:
        run.requests = int(m.group(3))
        for name, n in zip(("failed", "errored", "timeout"), m.groups()[4:], strict=True):
            if int(n):
                errors.append(f"{n} {name}")
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    if m:
        other = sum(int(n) for n in m.groups()[1:])
        if other:
            errors.append(f"{other} non-2xx")
    run.errors = ", ".join(errors)
    # min, max, mean, sd, +/- sd: h2load gives no percentiles without a per-request log,
    # which costs it enough CPU here to lower every fast server's number.
    m = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m:
        run.lat_max, run.lat_mean = _ms(m.group(2)), _ms(m.group(3))
    return run


def run_h2load(port, w, duration, log, h1=False):
    argv = h2load_argv(port, w, duration, h1)
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration + GRACE,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        text = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        log.write(f"$ {' '.join(argv)}\n{text or ''}\n(killed after {duration + GRACE} s)\n")
        raise RuntimeError(f"h2load did not finish ({GRACE} s past -D): streams left unanswered")
    log.write(f"$ {' '.join(argv)}\n{out.stdout}{out.stderr}\n")
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed: {(out.stderr or out.stdout).strip()[:80]}")
    return parse_h2load(out.stdout, expected_protocol(w, h1))


def h2load_version():
    try:
        out = subprocess.run(["h2load", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().removeprefix("h2load ") or None
