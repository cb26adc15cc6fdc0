"""Operations: load through a reload and through recycling (issue 12)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness.base import LOGS, fmt_ms, fmt_rps, last_line, say
from harness.measure import run_wrk, wait_ready
from harness.procs import free_port, kill_server, start_server
from harness.report import md_table
from harness.servers import stogie_argv
from harness.workloads import WORKLOADS


@dataclass
class OpsRun:
    title: str
    argv_extra: tuple
    hup_every: float | None = None  # seconds between SIGHUPs, or None
    requests: int = 0
    rps: float = 0.0
    p99: float = 0.0
    errors: str = ""
    reloads: int = 0
    replaced: int = 0
    fail: str | None = None


OPS = [
    ("reload", "hello, 2 workers, SIGHUP every second", ("--workers", "2"), 1.0),
    (
        "recycle",
        "hello, 2 workers, --max-requests 20000 --max-requests-jitter 2000",
        ("--workers", "2", "--max-requests", "20000", "--max-requests-jitter", "2000"),
        None,
    ),
]
OPS_KEYS = [key for key, *_ in OPS]


def ops_one(key, title, extra, hup_every, opts):
    """wrk on stogie while its workers are replaced: every response counted, errors listed."""
    w = next(w for w in WORKLOADS if w.key == "hello")
    result = OpsRun(title, extra, hup_every)
    port = free_port()
    # Info logging: the reloads and replacements are counted from the log.
    argv = stogie_argv(w, extra)
    argv[argv.index("--log-level") + 1] = "info"
    argv = [a.replace("{port}", str(port)).replace("{app}", w.app) for a in argv]
    log_path = LOGS / f"ops-{key}.log"
    proc = start_server(argv, log_path)
    try:
        why = wait_ready(proc, port, w, log_path)
        if why:
            result.fail = why
            return result
        time.sleep(0.5)
        done = threading.Event()

        def hup():
            while not done.wait(hup_every):
                os.kill(proc.pid, signal.SIGHUP)

        sender = threading.Thread(target=hup, daemon=True) if hup_every else None
        if sender:
            sender.start()
        try:
            with open(LOGS / f"ops-{key}.wrk.txt", "w") as wlog:
                run = run_wrk(port, w, opts.duration, wlog)
        finally:
            done.set()
            if sender:
                sender.join()
        time.sleep(0.5)
        text = Path(log_path).read_text(errors="replace")
        result.requests, result.rps, result.p99, result.errors = (
            run.requests,
            run.rps,
            run.p99,
            run.errors,
        )
        result.reloads = text.count("reloaded:")
        result.replaced = text.count(" replaced by ")
        failed = text.count("reload failed")
        if failed:
            result.errors = ", ".join(filter(None, [result.errors, f"{failed} failed reloads"]))
        if proc.poll() is not None:
            result.fail = f"died during the run: {last_line(log_path)}"
        return result
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        result.fail = str(e)[:90]
        return result
    finally:
        kill_server(proc)


def ops_all(opts):
    results = []
    for key, title, extra, hup_every in OPS:
        say(f"ops: {title} ...")
        r = ops_one(key, title, extra, hup_every, opts)
        say(f"  {r.fail or f'{r.requests} requests, errors: {r.errors or 0}'}")
        results.append(r)
    return results


def ops_report(results, duration):
    rows = []
    for r in results:
        if r.fail:
            rows.append([r.title, r.fail, "", "", "", "", ""])
            continue
        rows.append(
            [
                r.title,
                f"{r.requests:,}",
                fmt_rps(r.rps),
                fmt_ms(r.p99),
                str(r.reloads),
                str(r.replaced),
                r.errors or "0",
            ]
        )
    table = md_table(
        ["run", "responses", "req/s", "p99 ms", "reloads", "workers replaced", "errors"], rows
    )
    return (
        f"### Operations: wrk -t1 -c64 for {duration} s while stogie replaces its workers\n\n"
        "Every response wrk counted, and every error it saw (socket errors, non-2xx); a reload\n"
        "is counted once its new workers serve and the old ones drain.\n\n" + table
    )
