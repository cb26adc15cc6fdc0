"""Measuring one configuration on one workload: readiness, wrk, CPU and RSS."""

from __future__ import annotations

import http.client
import re
import ssl
import subprocess
import time

from harness.base import (
    BENCH,
    HOST,
    LOGS,
    TLS_CERT,
    WrongResponse,
    dist_version,
    fmt_ms,
    fmt_rps,
    last_line,
    mb,
    say,
)
from harness.h2client import check_h2, idle_h2_test
from harness.h2load import run_h2load
from harness.idle import idle_test
from harness.procs import (
    RssSampler,
    children_cpu,
    free_port,
    kill_server,
    start_server,
    tree_cpu,
    tree_switches,
)
from harness.results import Idle, Run

# --------------------------------------------------------------------------------------------
# Checking a response, and waiting for readiness


def _exchange(conn, w):
    headers = {"Content-Type": "application/octet-stream"} if w.body else {}
    if w.close:
        headers["Connection"] = "close"
    conn.request(w.method, w.path, body=w.body, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise WrongResponse(f"status {resp.status}")
    if not w.expect(body):
        raise WrongResponse(f"wrong body ({len(body)} bytes)")


def check_response(port, w, timeout=5.0):
    """Two requests on one connection (http.client reconnects if the server closed it): a
    server that claims keep-alive but never answers the second request would stall wrk.
    OSError means not listening yet; WrongResponse, a broken server."""
    if w.tls:
        ctx = ssl.create_default_context(cafile=str(TLS_CERT))
        conn = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        try:
            _exchange(conn, w)
        except http.client.HTTPException as e:
            raise WrongResponse(f"bad response: {e!r}"[:80]) from None
        try:
            _exchange(conn, w)
        except (OSError, http.client.HTTPException) as e:
            raise WrongResponse(f"second request on a connection failed: {e!r}"[:80]) from None
    finally:
        conn.close()


def wait_ready(proc, port, w, log_path, timeout=60.0, h1=False):
    """None when the server answers correctly, else why not. On an HTTP/2 workload the check
    speaks HTTP/2 (h2client.check_h2), unless ``h1``: HTTP/1.1 over the same transport."""
    check = check_h2 if w.h2 and not h1 else check_response
    deadline = time.monotonic() + timeout
    while True:
        rc = proc.poll()
        if rc is not None:
            return f"exited ({rc}): {last_line(log_path)}"
        try:
            check(port, w)
            return None
        except WrongResponse as e:
            return str(e)
        except OSError:
            pass
        if time.monotonic() > deadline:
            return f"not answering after {timeout:.0f} s"
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# wrk


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def parse_wrk(out):
    run = Run()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    run.rps = float(m.group(1)) if m else 0.0
    m = re.search(r"^\s*(\d+) requests in", out, re.M)
    run.requests = int(m.group(1)) if m else 0
    for pct, attr in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        setattr(run, attr, _ms(m.group(1)) if m else float("nan"))
    errors = []
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        for name, n in zip(("connect", "read", "write", "timeout"), m.groups(), strict=True):
            if int(n):
                errors.append(f"{n} {name}")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors.append(f"{m.group(1)} non-2xx")
    run.errors = ", ".join(errors)
    return run


def wrk_argv(port, w, duration):
    argv = ["wrk", "-t1", f"-c{w.connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if w.script:
        argv += ["-s", str(BENCH / w.script)]
    if w.close:
        argv += ["-H", "Connection: close"]
    scheme = "https" if w.tls else "http"
    return argv + [f"{scheme}://{HOST}:{port}{w.path}"]


def run_wrk(port, w, duration, log):
    argv = wrk_argv(port, w, duration)
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 60, stdin=subprocess.DEVNULL
    )
    log.write(f"$ {' '.join(argv)}\n{out.stdout}{out.stderr}\n")
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {(out.stderr or out.stdout).strip()[:80]}")
    return parse_wrk(out.stdout)


# --------------------------------------------------------------------------------------------
# Running everything


def bench_one(server, variant, w, opts):
    """Starts one configuration, measures one workload, kills it."""
    port = free_port()
    argv = [a.replace("{port}", str(port)).replace("{app}", w.app) for a in variant.argv]
    slug = re.sub(r"[^a-z0-9]+", "-", f"{server.key}-{variant.label}-{w.key}".lower())
    log_path = LOGS / f"{slug}.log"
    cls = Idle if w.idle else Run
    try:
        proc = start_server(argv, log_path)
    except OSError as e:
        return cls(variant=variant.label, fail=f"could not start: {e}"[:90])
    try:
        why = wait_ready(proc, port, w, log_path, h1=variant.h1)
        if why:
            return cls(variant=variant.label, fail=why)
        time.sleep(0.5)  # every worker of a multi-process server up
        if w.idle:
            if w.h2:
                n = opts.h2_idle_connections
                result = idle_h2_test(port, proc, w, n, opts.idle_quiet)
            else:
                result = idle_test(port, proc, opts.idle_connections, opts.idle_quiet)
            result.variant = variant.label
            return result
        if w.h2:
            client, suffix = (lambda d, log: run_h2load(port, w, d, log, variant.h1)), "h2load"
        else:
            client, suffix = (lambda d, log: run_wrk(port, w, d, log)), "wrk"
        with open(LOGS / f"{slug}.{suffix}.txt", "w") as wlog:
            if opts.warmup > 0:
                warm = client(opts.warmup, wlog)
                if warm.fail:
                    return Run(variant=variant.label, fail=warm.fail)
            sampler = RssSampler(proc.pid)
            sampler.start()
            cpu0, wrk0, t0 = tree_cpu(proc.pid), children_cpu(), time.monotonic()
            sw0 = tree_switches(proc.pid)
            try:
                run = client(opts.duration, wlog)
            finally:
                peak = sampler.stop()
            if run.fail:
                return Run(variant=variant.label, fail=run.fail)
            # Where the machine's time went: a server that is far from its CPUs' limit is
            # waiting on something, one at the limit is spending it.
            wall = time.monotonic() - t0
            cpu = tree_cpu(proc.pid) - cpu0
            run.cpu_server = 100 * cpu / wall
            run.cpu_us = 1e6 * cpu / run.requests if run.requests else float("nan")
            switches = tree_switches(proc.pid) - sw0
            run.switches = switches / run.requests if run.requests else float("nan")
            run.cpu_wrk = 100 * (children_cpu() - wrk0) / wall
            run.rss = peak
        if proc.poll() is not None:
            return Run(variant=variant.label, fail=f"died during the run: {last_line(log_path)}")
        if run.requests == 0:
            return Run(variant=variant.label, fail=f"no responses ({run.errors or 'none'})")
        run.variant = variant.label
        return run
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return cls(variant=variant.label, fail=str(e)[:90])
    finally:
        kill_server(proc)
        # What the server wrote for this run alone (the access log's file).
        (LOGS / f"access-{port}.log").unlink(missing_ok=True)


def describe(result):
    if result.fail:
        return f"n/a ({result.fail})"
    if isinstance(result, Idle):
        return (
            f"{result.still_open}/{result.wanted} open, "
            f"+{mb(result.rss_after - result.rss_before)} MB, "
            f"new client {fmt_ms(result.probe_p50)}/{fmt_ms(result.probe_max)} ms"
        )
    err = f", errors: {result.errors}" if result.errors else ""
    if result.lat_mean == result.lat_mean:  # h2load's
        lat = f"mean {fmt_ms(result.lat_mean)} ms, max {fmt_ms(result.lat_max)} ms"
    else:
        lat = f"p50 {fmt_ms(result.p50)} ms, p99 {fmt_ms(result.p99)} ms"
    return (
        f"{fmt_rps(result.rps)} req/s, {lat}, CPU {result.cpu_us:.1f} us/response,"
        f" {result.switches:.2f} switches/response,"
        f" peak RSS {mb(result.rss)} MB{err}"
    )


def better(a, b):
    """The better of two results of one server and workload (the one that has numbers)."""
    if a is None or a.fail:
        return b
    if b.fail:
        return a
    if isinstance(a, Idle):
        return b if (b.still_open, -b.rss_after) > (a.still_open, -a.rss_after) else a
    return b if b.rps > a.rps else a


def run_all(servers, workloads, broken, ctx, opts, results):
    plan = []
    for w in workloads:
        for s in servers:
            if s.key in broken:
                results.runs[(s.key, w.key)] = Run(fail=broken[s.key])
                continue
            if w.app == "flask_app" and not dist_version("flask"):
                results.runs[(s.key, w.key)] = Run(fail="flask not installed")
                continue
            variants = s.variants(w, ctx)
            if isinstance(variants, str):
                results.runs[(s.key, w.key)] = Run(fail=variants)
                continue
            plan += [(s, v, w) for v in variants]
    for i, (s, v, w) in enumerate(plan, 1):
        say(f"[{i}/{len(plan)}] {w.title}: {s.title} ({v.label}) ...")
        result = bench_one(s, v, w, opts)
        say(f"    {describe(result)}")
        results.tried.setdefault((s.key, w.key), []).append(result)
        results.runs[(s.key, w.key)] = better(results.runs.get((s.key, w.key)), result)
