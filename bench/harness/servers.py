"""The servers under test: for each, the configurations (Variants) tried per workload."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.base import BENCH, BIN, HOST, IDLE_TIMEOUT, LOGS, PY, TLS_CERT, TLS_KEY


@dataclass
class Variant:
    label: str
    argv: list  # "{port}" and "{app}" are filled in


@dataclass
class Server:
    key: str
    title: str
    packages: tuple  # PyPI distributions it needs
    peer: bool  # counts for "best peer"
    variants: Callable  # (Workload, Context) -> list of Variant, or a str: why not run
    family: str = ""  # "stogie" for stogie's own modes


@dataclass
class Context:
    hello_bin: Path
    stogie_workers: str | None = None  # None: --workers supported; else why not


HTTP_WORKLOADS = ("hello", "hello-256", "idle")


def ceiling_variants(w, ctx):
    if w.key not in HTTP_WORKLOADS:
        return "-"
    threads = (1,) if w.key == "idle" else (1, 2)
    return [Variant(f"{n} I/O thread(s)", [str(ctx.hello_bin), "{port}", str(n)]) for n in threads]


def no_tls(variants):
    """A server without TLS of its own: no TLS workloads."""

    def pick(w, ctx):
        return "no TLS" if w.tls else variants(w, ctx)

    return pick


def stogie_argv(w, extra=()):
    argv = [
        str(BIN / "stogie"),
        "--bind",
        HOST + ":{port}",
        "--threads",
        "10",
        "--max-threads",
        "-1",
        "--request-queue-size",
        "4096",
        "--log-level",
        "warning",
        *extra,
    ]
    if w.tls:
        argv += ["--ssl-certificate", str(TLS_CERT), "--ssl-private-key", str(TLS_KEY)]
    if w.key == "idle":
        argv += ["--timeout", str(IDLE_TIMEOUT)]
    return argv + ["apps:{app}"]


def stogie_variants(w, ctx):
    return [Variant("threads 10, max -1", stogie_argv(w))]


def stogie_log_variants(w, ctx):
    # The access log's cost (issue 12: at most 10% at hello), against plain stogie in the
    # same run: the same command with the log on, written to a file.
    if w.key != "hello":
        return "-"
    return [Variant("access log on", stogie_argv(w, ("--access-log", str(LOGS / "access.log"))))]


def stogie_workers_variants(w, ctx):
    if ctx.stogie_workers:
        return ctx.stogie_workers
    # Two processes for two CPUs, and three: wrk takes less than a CPU at the heavier
    # workloads, and a third process uses what is left. Granian gets the same choice.
    variants = [Variant("2 workers x threads 10", stogie_argv(w, ("--workers", "2")))]
    if w.key not in ("sleep", "idle"):
        variants.append(Variant("3 workers x threads 10", stogie_argv(w, ("--workers", "3"))))
    return variants


def serve_py(kind, threads=None, tls=False):
    argv = [PY, str(BENCH / "serve.py"), kind, "{port}", "apps:{app}"]
    if threads:
        argv += ["--threads", str(threads)]
    if tls:
        argv += ["--certfile", str(TLS_CERT), "--keyfile", str(TLS_KEY)]
    return argv + ["--timeout", str(IDLE_TIMEOUT)]


def cheroot_variants(w, ctx):
    n = 64 if w.key == "sleep" else 10
    label = f"numthreads {n}" + (", BuiltinSSLAdapter" if w.tls else "")
    return [Variant(label, serve_py("cheroot", n, w.tls))]


def gunicorn_variants(w, ctx):
    base = [str(BIN / "gunicorn"), "-b", HOST + ":{port}", "--backlog", "4096"]
    base += ["--log-level", "warning"]
    if w.tls:
        base += ["--certfile", str(TLS_CERT), "--keyfile", str(TLS_KEY)]

    def gthread(workers, threads):
        argv = base + ["-w", str(workers), "-k", "gthread", "--threads", str(threads)]
        if w.key == "idle":
            argv += ["--keep-alive", str(IDLE_TIMEOUT), "--worker-connections", "10000"]
        return Variant(f"gthread {workers}x{threads}", argv + ["apps:{app}"])

    if w.key == "sleep":
        return [gthread(2, 32)]
    if w.key == "idle":
        return [gthread(2, 4)]
    return [Variant("sync x4", base + ["-w", "4", "-k", "sync", "apps:{app}"]), gthread(2, 4)]


def waitress_variants(w, ctx):
    def threads(n):
        argv = [
            str(BIN / "waitress-serve"),
            "--listen=" + HOST + ":{port}",
            f"--threads={n}",
            "--backlog=4096",
            "--connection-limit=20000",
            f"--channel-timeout={IDLE_TIMEOUT}",
            "--asyncore-use-poll",
            "apps:{app}",
        ]
        return Variant(f"threads {n}", argv)

    if w.key == "sleep":
        return [threads(8), threads(64)]
    if w.key == "idle":
        return [threads(4)]
    return [threads(4), threads(8)]


def granian_variants(w, ctx):
    base = [
        str(BIN / "granian"),
        "--interface",
        "wsgi",
        "--host",
        HOST,
        "--port",
        "{port}",
        "--workers",
        "2",
        "--http",
        "1",
        "--no-ws",
        "--log-level",
        "warning",
    ]
    if w.tls:
        base += ["--ssl-certificate", str(TLS_CERT), "--ssl-keyfile", str(TLS_KEY)]
    auto = Variant("2 workers", base + ["apps:{app}"])
    if w.key in ("sleep", "idle"):
        return [auto]
    one = Variant("2 workers, 1 blocking thread", base + ["--blocking-threads", "1", "apps:{app}"])
    base3 = [a if a != "2" or base[i - 1] != "--workers" else "3" for i, a in enumerate(base)]
    blocking = ["--blocking-threads", "1", "apps:{app}"]
    three = Variant("3 workers, 1 blocking thread", base3 + blocking)
    return [auto, one, three]


def pyruvate_variants(w, ctx):
    if w.key == "sleep":
        return [Variant("64 workers", serve_py("pyruvate", 64))]
    if w.key == "idle":
        return [Variant("2 workers", serve_py("pyruvate", 2))]
    return [Variant(f"{n} workers", serve_py("pyruvate", n)) for n in (2, 4)]


def bjoern_variants(w, ctx):
    return [Variant("1 process", serve_py("bjoern"))]


SERVERS = [
    Server("ceiling", "ceiling (Rust, no Python)", (), False, ceiling_variants),
    Server("stogie", "stogie", (), False, stogie_variants, family="stogie"),
    Server(
        "stogie-workers", "stogie --workers N", (), False, stogie_workers_variants, family="stogie"
    ),
    Server("stogie-log", "stogie --access-log FILE", (), False, stogie_log_variants),
    Server("cheroot", "Cheroot", ("cheroot",), True, cheroot_variants),
    Server("gunicorn", "gunicorn", ("gunicorn",), True, gunicorn_variants),
    Server("waitress", "waitress", ("waitress",), True, no_tls(waitress_variants)),
    Server("granian", "Granian", ("granian",), True, granian_variants),
    Server("pyruvate", "pyruvate", ("pyruvate",), True, no_tls(pyruvate_variants)),
    Server("bjoern", "bjoern", ("bjoern",), True, no_tls(bjoern_variants)),
]
SERVER_KEYS = [s.key for s in SERVERS]
QUICK_PEER = "granian"


def stogie_workers_support():
    """None when the stogie CLI has --workers, else why not."""
    try:
        out = subprocess.run(
            [str(BIN / "stogie"), "--help"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"stogie --help failed: {e}"
    if "--workers" not in out.stdout:
        return "no --workers in the CLI yet"
    return None
