"""The servers under test: for each, the configurations (Variants) tried per workload."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.base import BENCH, BIN, HOST, IDLE_TIMEOUT, LOGS, PY, TLS_CERT, TLS_KEY


@dataclass
class Variant:
    label: str
    argv: list  # "{port}" and "{app}" are filled in
    # On an HTTP/2 workload: speak HTTP/1.1 to it over the same transport and connections
    # (h2load --h1), the baseline stogie's HTTP/2 is held to.
    h1: bool = False


@dataclass
class Server:
    key: str
    title: str
    packages: tuple  # PyPI distributions it needs
    peer: bool  # counts for "best peer"
    variants: Callable  # (Workload, Context) -> list of Variant, or a str: why not run
    family: str = ""  # "stogie" for stogie's own modes
    # Two builds compared (--stogie-a/-b): the build asked for, and its stogie command.
    build: str | None = None
    stogie: Path | None = None


@dataclass
class Context:
    hello_bin: Path
    stogie_workers: str | None = None  # None: --workers supported; else why not
    help_texts: dict = field(default_factory=dict)  # stogie command -> its --help


HTTP_WORKLOADS = ("hello", "hello-256", "idle")
NO_H2 = "no HTTP/2"


def ceiling_variants(w, ctx):
    if w.key not in HTTP_WORKLOADS:
        return "-"
    threads = (1,) if w.idle else (1, 2)
    return [Variant(f"{n} I/O thread(s)", [str(ctx.hello_bin), "{port}", str(n)]) for n in threads]


def no_tls(variants):
    """A server without TLS of its own: no TLS workloads."""

    def pick(w, ctx):
        return "no TLS" if w.tls else variants(w, ctx)

    return pick


def h1_only(variants):
    """A server without HTTP/2: not run on the HTTP/2 workloads (left out of their tables)."""

    def pick(w, ctx):
        return "-" if w.h2 else variants(w, ctx)

    return pick


def stogie_help(ctx, stogie):
    """``stogie --help`` of this build (cached), or "" when it cannot run."""
    if stogie not in ctx.help_texts:
        try:
            out = subprocess.run(
                [str(stogie), "--help"],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
            ctx.help_texts[stogie] = out.stdout
        except (OSError, subprocess.TimeoutExpired):
            ctx.help_texts[stogie] = ""
    return ctx.help_texts[stogie]


def stogie_h2_options(w, ctx, stogie):
    """The options that turn HTTP/2 on for this workload (issue 18), or a str: why not.

    Over TLS, ALPN offers h2 and http/1.1 (`--http-protocols h2,h1`, the default, given
    explicitly); cleartext h2c by prior knowledge is `--http2-cleartext`, served to peers in
    --forwarded-allow-ips, whose default (127.0.0.1,::1) covers the benchmark's client. A build
    whose CLI has neither is reported as "no HTTP/2" without being started."""
    option = "--http-protocols" if w.tls else "--http2-cleartext"
    if option not in stogie_help(ctx, stogie):
        return NO_H2
    return ("--http-protocols", "h2,h1") if w.tls else ("--http2-cleartext",)


def stogie_argv(w, extra=(), stogie=None):
    argv = [
        str(stogie or BIN / "stogie"),
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
    if w.idle:
        argv += ["--timeout", str(IDLE_TIMEOUT)]
    return argv + ["apps:{app}"]


def stogie_variants(w, ctx, stogie=None):
    extra = ()
    if w.h2:
        extra = stogie_h2_options(w, ctx, stogie or BIN / "stogie")
        if isinstance(extra, str):
            return extra
    return [Variant("threads 10, max -1", stogie_argv(w, extra, stogie))]


def stogie_h1_variants(w, ctx):
    # Issue 18: stogie's HTTP/2 hello at least 90% of its own HTTP/1.1 over the same transport
    # and the same number of connections. The same server without HTTP/2, and h2load --h1.
    if not w.h2 or w.idle:
        return "-"
    return [Variant("threads 10, max -1, h2load --h1", stogie_argv(w), h1=True)]


def stogie_log_variants(w, ctx):
    # The access log's cost (issue 12: at most 10% at hello), against plain stogie in the
    # same run: the same command with the log on, written to a file.
    if w.key != "hello":
        return "-"
    # A file per run, removed after it (a run of five rounds wrote hundreds of MB to one).
    log = str(LOGS / "access-{port}.log")
    return [Variant("access log on", stogie_argv(w, ("--access-log", log)))]


def stogie_workers_variants(w, ctx):
    if ctx.stogie_workers:
        return ctx.stogie_workers
    extra = ()
    if w.h2:
        extra = stogie_h2_options(w, ctx, BIN / "stogie")
        if isinstance(extra, str):
            return extra
    # Two processes for two CPUs, and three: wrk takes less than a CPU at the heavier
    # workloads, and a third process uses what is left. Granian gets the same choice.
    variants = [Variant("2 workers x threads 10", stogie_argv(w, ("--workers", "2", *extra)))]
    if w.key != "sleep" and not w.idle:
        three = stogie_argv(w, ("--workers", "3", *extra))
        variants.append(Variant("3 workers x threads 10", three))
    return variants


def ab_server(key, title, build):
    """One of two builds of stogie compared in alternating rounds (--stogie-a, --stogie-b):
    plain stogie's command, with that build's executable (``stogie``, set once it is built)."""
    server = Server(key, title, (), False, None, family="ab", build=build)

    def variants(w, ctx):
        if server.stogie is None:
            return "not built"
        return stogie_variants(w, ctx, server.stogie)

    server.variants = variants
    return server


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
    if w.h2:
        # gunicorn 25+ with the h2 package: h2 by ALPN over TLS; h2c by prior knowledge needs
        # --http2-cleartext (26.2+; only from --forwarded-allow-ips, 127.0.0.1 by default).
        base += ["--http-protocols", "h2,h1"]
        if not w.tls:
            base += ["--http2-cleartext", "prior-knowledge"]

    def gthread(workers, threads):
        argv = base + ["-w", str(workers), "-k", "gthread", "--threads", str(threads)]
        if w.idle:
            argv += ["--keep-alive", str(IDLE_TIMEOUT), "--worker-connections", "10000"]
        return Variant(f"gthread {workers}x{threads}", argv + ["apps:{app}"])

    if w.h2:
        # An HTTP/2 connection holds a gthread thread (seen with gunicorn 27.0.1 over TLS:
        # with fewer threads in a worker than connections, h2load -D never finished), so
        # each worker gets as many threads as there are connections, up to 100. At the idle
        # test that is 200 connections served of 1,000, and the arbiter then kills the
        # workers whose threads are all held (WORKER TIMEOUT), closing those too.
        return [gthread(2, max(4, min(w.connections, 100)))]
    if w.key == "sleep":
        return [gthread(2, 32)]
    if w.idle:
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
    if w.idle:
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
        "2" if w.h2 else "1",
        "--no-ws",
        "--log-level",
        "warning",
    ]
    if w.tls:
        base += ["--ssl-certificate", str(TLS_CERT), "--ssl-keyfile", str(TLS_KEY)]
    auto = Variant("2 workers", base + ["apps:{app}"])
    if w.key == "sleep" or w.idle:
        return [auto]
    one = Variant("2 workers, 1 blocking thread", base + ["--blocking-threads", "1", "apps:{app}"])
    base3 = [a if a != "2" or base[i - 1] != "--workers" else "3" for i, a in enumerate(base)]
    blocking = ["--blocking-threads", "1", "apps:{app}"]
    three = Variant("3 workers, 1 blocking thread", base3 + blocking)
    return [auto, one, three]


def pyruvate_variants(w, ctx):
    if w.key == "sleep":
        return [Variant("64 workers", serve_py("pyruvate", 64))]
    if w.idle:
        return [Variant("2 workers", serve_py("pyruvate", 2))]
    return [Variant(f"{n} workers", serve_py("pyruvate", n)) for n in (2, 4)]


def bjoern_variants(w, ctx):
    return [Variant("1 process", serve_py("bjoern"))]


def hypercorn_variants(w, ctx):
    # An ASGI server that also serves WSGI apps (the "wsgi:" prefix says which), with HTTP/2 by
    # ALPN over TLS and h2c by prior knowledge on a cleartext port. Run on the HTTP/2
    # workloads only: at HTTP/1.1 it is no contender (about 1k req/s at hello here).
    if not w.h2:
        return "-"
    argv = [str(BIN / "hypercorn"), "-b", HOST + ":{port}", "--backlog", "4096"]
    argv += ["-w", "2", "--log-level", "warning", "--keep-alive", str(IDLE_TIMEOUT)]
    if w.tls:
        argv += ["--certfile", str(TLS_CERT), "--keyfile", str(TLS_KEY)]
    return [Variant("2 workers (asyncio)", argv + ["wsgi:apps:{app}"])]


SERVERS = [
    Server("ceiling", "ceiling (Rust, no Python)", (), False, h1_only(ceiling_variants)),
    Server("stogie", "stogie", (), False, stogie_variants, family="stogie"),
    Server(
        "stogie-workers", "stogie --workers N", (), False, stogie_workers_variants, family="stogie"
    ),
    Server("stogie-h1", "stogie, HTTP/1.1", (), False, stogie_h1_variants, family="stogie-h1"),
    Server("stogie-log", "stogie --access-log FILE", (), False, h1_only(stogie_log_variants)),
    Server("cheroot", "Cheroot", ("cheroot",), True, h1_only(cheroot_variants)),
    Server("gunicorn", "gunicorn", ("gunicorn",), True, gunicorn_variants),
    Server("waitress", "waitress", ("waitress",), True, h1_only(no_tls(waitress_variants))),
    Server("granian", "Granian", ("granian",), True, granian_variants),
    Server("pyruvate", "pyruvate", ("pyruvate",), True, h1_only(no_tls(pyruvate_variants))),
    Server("bjoern", "bjoern", ("bjoern",), True, h1_only(no_tls(bjoern_variants))),
    Server("hypercorn", "hypercorn", ("hypercorn",), True, hypercorn_variants),
]
SERVER_KEYS = [s.key for s in SERVERS]
AB_KEYS = ["stogie-a", "stogie-b"]  # added by --stogie-a / --stogie-b (cli.py)
QUICK_PEER = "granian"


def stogie_workers_support(ctx):
    """None when the stogie CLI has --workers, else why not."""
    text = stogie_help(ctx, BIN / "stogie")
    if not text:
        return "stogie --help failed"
    if "--workers" not in text:
        return "no --workers in the CLI yet"
    return None
