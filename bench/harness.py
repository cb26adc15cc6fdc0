"""stogie's side-by-side benchmark (issue 4). Run it through ``bench/run``, which installs wrk and
makes the virtualenv this runs in.

For every server and workload: start the server on a fresh port (its own process group), wait
until it answers correctly, warm up with wrk, measure with ``wrk -t1 -cN --latency`` while sampling
the RSS of the server's process tree, kill the whole group. Servers with several candidate
configurations run each and keep the best. Prints the tables and writes them, with the date and
machine, to bench/RESULTS.md (a full run) or bench/.logs/RESULTS-partial.md (a filtered run).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime
import http.client
import importlib.metadata
import json
import os
import re
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOGS = BENCH / ".logs"
BIN = Path(sys.executable).parent
PY = sys.executable
HOST = "127.0.0.1"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")

HELLO = b"Hello, World!"
POST_BODY = b"x" * 4096  # what post4k.lua sends
IDLE_TIMEOUT = 60  # keep-alive timeout given to every server for the idle test, where it can
# The TLS workloads' certificate and key: ECDSA P-256, self-signed, made by tls_files().
TLS_CERT = LOGS / "tls" / "cert.pem"
TLS_KEY = LOGS / "tls" / "key.pem"


# --------------------------------------------------------------------------------------------
# Workloads


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    app: str  # callable in apps.py
    connections: int
    path: str = "/"
    script: str | None = None  # wrk lua script in bench/
    method: str = "GET"
    body: bytes | None = None
    # what a correct response body is
    expect: Callable[[bytes], bool] = lambda body: body == HELLO
    tls: bool = False  # HTTPS (the certificate from tls_files())
    close: bool = False  # "Connection: close": a new connection (and handshake) per request


def _json_ok(body):
    try:
        return json.loads(body) == {"message": "Hello, World!"}
    except ValueError:
        return False


WORKLOADS = [
    Workload("hello", "hello", "hello", 64),
    Workload("hello-256", "hello, 256 connections", "hello", 256),
    Workload("big", "64 KiB body", "big", 64, expect=lambda b: b == b"x" * 65536),
    Workload(
        "post",
        "POST 4 KiB echo",
        "echo",
        64,
        script="post4k.lua",
        method="POST",
        body=POST_BODY,
        expect=lambda b: b == POST_BODY,
    ),
    Workload("stream", "stream 100 x 1 KiB", "stream", 64, expect=lambda b: b == b"y" * 102400),
    Workload("flask", "Flask JSON", "flask_app", 64, path="/json", expect=_json_ok),
    Workload("sleep", "sleep 10 ms, 256 connections", "sleep", 256),
    Workload("tls", "hello over TLS", "hello", 64, tls=True),
    Workload("tls-handshake", "hello, a TLS handshake each", "hello", 64, tls=True, close=True),
    Workload("idle", "10k idle keep-alive", "hello", 10000),
]
WORKLOAD_KEYS = [w.key for w in WORKLOADS]


# --------------------------------------------------------------------------------------------
# Servers


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


# --------------------------------------------------------------------------------------------
# Processes: every server runs in its own session; all of them are killed on the way out.

RUNNING: dict = {}  # pid -> Popen
_seen_pids: dict = {}  # root pid -> set of pids seen in its tree


def tree_pids(root):
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    return pids


def tree_rss(root):
    """RSS in bytes summed over the process tree under ``root``."""
    total = 0
    pids = tree_pids(root)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    _seen_pids.setdefault(root, set()).update(pids)
    return total


def tree_cpu(root):
    """CPU seconds (user + system) used so far by the processes now in the tree under
    ``root``, all of their threads included."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                # The command name may hold spaces: count fields after its closing paren.
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def children_cpu():
    """CPU seconds used by the children this process has waited for (wrk, here)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_server(proc):
    pid = proc.pid
    pids = set(tree_pids(pid)) | _seen_pids.pop(pid, set())
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(pid, sig)
        except OSError:
            pass
        for p in pids - {pid}:
            if _alive(p):
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait
        while any(_alive(p) for p in pids - {pid}) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(_alive(p) for p in pids):
            break
    RUNNING.pop(pid, None)


def cleanup():
    for proc in list(RUNNING.values()):
        kill_server(proc)


def _on_signal(signum, frame):
    raise KeyboardInterrupt


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(argv, log_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(BENCH) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    log = open(log_path, "wb")
    try:
        proc = subprocess.Popen(
            argv,
            cwd=BENCH,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # A process group of its own (to kill the whole tree), but not a session: Linux
            # puts each session in its own scheduling autogroup, and CPU is then shared
            # between groups, not threads, capping a server at one CPU while wrk has the
            # other, however many threads or processes it runs. In the same autogroup as wrk,
            # every server's threads compete with wrk's on equal terms, as when both are
            # started from one shell (as the figures in issue 4 were).
            process_group=0,
        )
    finally:
        log.close()
    RUNNING[proc.pid] = proc
    return proc


def last_line(path, limit=90):
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:limit] if lines else ""


# --------------------------------------------------------------------------------------------
# Checking a response, and waiting for readiness


class WrongResponse(Exception):
    pass


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


def wait_ready(proc, port, w, log_path, timeout=60.0):
    """None when the server answers correctly, else why not."""
    deadline = time.monotonic() + timeout
    while True:
        rc = proc.poll()
        if rc is not None:
            return f"exited ({rc}): {last_line(log_path)}"
        try:
            check_response(port, w)
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


@dataclass
class Run:
    rps: float = 0.0
    p50: float = 0.0  # ms
    p99: float = 0.0
    rss: int = 0  # peak bytes
    cpu_server: float = float("nan")  # % of one CPU over the run, the server's process tree
    cpu_wrk: float = float("nan")  # % of one CPU over the run, wrk
    cpu_us: float = float("nan")  # the server tree's CPU time per response, microseconds
    requests: int = 0
    errors: str = ""
    variant: str = ""
    fail: str | None = None  # why there is no number


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


class RssSampler(threading.Thread):
    def __init__(self, root, interval=0.2):
        super().__init__(daemon=True)
        self.root, self.interval, self.peak = root, interval, 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.peak = max(self.peak, tree_rss(self.root))
            self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, tree_rss(self.root))
        return self.peak


# --------------------------------------------------------------------------------------------
# The idle keep-alive test


@dataclass
class Idle:
    wanted: int = 0
    opened: int = 0
    still_open: int = 0
    open_errors: str = ""
    open_seconds: float = 0.0
    rss_before: int = 0
    rss_after: int = 0
    probe_p50: float = float("nan")  # ms
    probe_max: float = float("nan")
    probe_failed: int = 0
    variant: str = ""
    fail: str | None = None


REQUEST = b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"


async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    if not m:
        raise WrongResponse("no Content-Length")
    body = await reader.readexactly(int(m.group(1)))
    if not head.startswith(b"HTTP/1.1 200") or body != HELLO:
        raise WrongResponse("wrong response")


async def _idle_clients(port, n, quiet, root, result):
    sem = asyncio.Semaphore(200)
    conns = []
    failures: dict = {}

    async def one():
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
            except (OSError, asyncio.TimeoutError) as e:
                failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
                return
            try:
                writer.write(REQUEST)
                await asyncio.wait_for(_read_response(reader), 5)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, WrongResponse) as e:
                failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
                writer.transport.abort()
                return
            except BaseException:  # cancelled at the deadline
                writer.transport.abort()
                raise
            conns.append((reader, writer))

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    _, pending = await asyncio.wait(tasks, timeout=max(60.0, n / 200))
    for t in pending:
        t.cancel()
    if pending:
        failures["not done in time"] = len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    result.open_seconds = time.monotonic() - t0
    result.opened = len(conns)
    result.open_errors = ", ".join(f"{v} {k}" for k, v in failures.items())

    await asyncio.sleep(quiet)
    result.rss_after = tree_rss(root)

    latencies = []
    for _ in range(20):
        t1 = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
            writer.write(REQUEST)
            await asyncio.wait_for(_read_response(reader), 5)
            latencies.append((time.perf_counter() - t1) * 1e3)
            writer.transport.abort()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, WrongResponse):
            result.probe_failed += 1
        await asyncio.sleep(0.05)
    if latencies:
        result.probe_p50 = statistics.median(latencies)
        result.probe_max = max(latencies)

    await asyncio.sleep(0.2)
    result.still_open = sum(
        1
        for reader, writer in conns
        if not reader.at_eof() and reader.exception() is None and not writer.is_closing()
    )
    for _, writer in conns:
        writer.transport.abort()


def idle_test(port, proc, n, quiet):
    result = Idle(wanted=n)
    time.sleep(1.0)
    result.rss_before = tree_rss(proc.pid)
    asyncio.run(_idle_clients(port, n, quiet, proc.pid, result))
    return result


# --------------------------------------------------------------------------------------------
# Setup: packages, the stogie build, the ceiling binary


def dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def pip_install(args, log_name):
    log_path = LOGS / log_name
    with open(log_path, "w") as log:
        rc = subprocess.call(
            [PY, "-m", "pip", "install", "--disable-pip-version-check", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return None if rc == 0 else f"pip install failed: {last_line(log_path, 60)}"


def tls_files():
    """The TLS workloads' certificate and key (openssl's command line; made once)."""
    if TLS_CERT.exists() and TLS_KEY.exists():
        return None
    TLS_CERT.parent.mkdir(parents=True, exist_ok=True)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    argv += ["-nodes", "-days", "3650", "-subj", "/CN=127.0.0.1"]
    argv += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    argv += ["-keyout", str(TLS_KEY), "-out", str(TLS_CERT)]
    out = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return None if out.returncode == 0 else f"openssl req failed: {out.stderr.strip()[:60]}"


def setup(servers, workloads, opts):
    """Installs what the selected servers need. Returns {server key: why it cannot run}."""
    broken: dict = {}
    if any(w.tls for w in workloads):
        why = tls_files()
        if why:
            say(f"no TLS workloads: {why}")
            workloads[:] = [w for w in workloads if not w.tls]
    needed = {pkg for s in servers for pkg in s.packages}
    if any(w.key == "flask" for w in workloads):
        needed.add("flask")
    for pkg in sorted(needed):
        if dist_version(pkg) or opts.no_install:
            continue
        say(f"installing {pkg} from PyPI")
        why = pip_install([pkg], f"pip-{pkg}.log")
        if why:
            say(f"  {why}")
        importlib.invalidate_caches()
    for s in servers:
        missing = [p for p in s.packages if not dist_version(p)]
        if missing:
            broken[s.key] = f"{', '.join(missing)} not installed"

    if any(s.family == "stogie" for s in servers):
        if not opts.no_build:
            say("building stogie in release mode from this checkout (pip install .)")
            t0 = time.monotonic()
            why = pip_install(["--force-reinstall", "--no-deps", str(ROOT)], "pip-stogie.log")
            say(f"  {'done' if not why else why} in {time.monotonic() - t0:.0f} s")
            if why:
                for s in servers:
                    if s.family == "stogie":
                        broken[s.key] = f"build failed, see {LOGS / 'pip-stogie.log'}"
        if not (BIN / "stogie").exists():
            for s in servers:
                if s.family == "stogie":
                    broken.setdefault(s.key, "stogie not installed")

    hello_bin = target_dir() / "release" / "examples" / "hello"
    if any(s.key == "ceiling" for s in servers):
        if not opts.no_build:
            say("building the ceiling (cargo build --release --example hello)")
            log_path = LOGS / "cargo-hello.log"
            with open(log_path, "w") as log:
                rc = subprocess.call(
                    ["cargo", "build", "--release", "-p", "stogie-http", "--example", "hello"],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if rc != 0:
                broken["ceiling"] = f"cargo build failed: {last_line(log_path, 60)}"
        if not hello_bin.exists():
            broken.setdefault("ceiling", "hello example not built")
    return broken, hello_bin


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


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


# --------------------------------------------------------------------------------------------
# Running everything


@dataclass
class Results:
    runs: dict = field(default_factory=dict)  # (server, workload) -> Run | Idle
    tried: dict = field(default_factory=dict)  # (server, workload) -> [Run | Idle] per variant


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def bench_one(server, variant, w, opts):
    """Starts one configuration, measures one workload, kills it."""
    port = free_port()
    argv = [a.replace("{port}", str(port)).replace("{app}", w.app) for a in variant.argv]
    slug = re.sub(r"[^a-z0-9]+", "-", f"{server.key}-{variant.label}-{w.key}".lower())
    log_path = LOGS / f"{slug}.log"
    proc = start_server(argv, log_path)
    cls = Idle if w.key == "idle" else Run
    try:
        why = wait_ready(proc, port, w, log_path)
        if why:
            return cls(variant=variant.label, fail=why)
        time.sleep(0.5)  # every worker of a multi-process server up
        if w.key == "idle":
            result = idle_test(port, proc, opts.idle_connections, opts.idle_quiet)
            result.variant = variant.label
            return result
        with open(LOGS / f"{slug}.wrk.txt", "w") as wlog:
            if opts.warmup > 0:
                run_wrk(port, w, opts.warmup, wlog)
            sampler = RssSampler(proc.pid)
            sampler.start()
            cpu0, wrk0, t0 = tree_cpu(proc.pid), children_cpu(), time.monotonic()
            try:
                run = run_wrk(port, w, opts.duration, wlog)
            finally:
                peak = sampler.stop()
            # Where the machine's time went: a server that is far from its CPUs' limit is
            # waiting on something, one at the limit is spending it.
            wall = time.monotonic() - t0
            cpu = tree_cpu(proc.pid) - cpu0
            run.cpu_server = 100 * cpu / wall
            run.cpu_us = 1e6 * cpu / run.requests if run.requests else float("nan")
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


# --------------------------------------------------------------------------------------------
# Operations: load through a reload and through recycling (issue 12)


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
    return (
        f"{fmt_rps(result.rps)} req/s, p50 {fmt_ms(result.p50)} ms, p99 {fmt_ms(result.p99)} ms,"
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
            if w.key == "flask" and not dist_version("flask"):
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


# --------------------------------------------------------------------------------------------
# Reporting


def fmt_rps(x):
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def fmt_ms(x):
    if x != x:  # nan
        return "?"
    if x < 1:
        return f"{x:.2f}"
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def mb(n):
    return f"{n / 2**20:.1f}" if abs(n) < 10 * 2**20 else f"{n / 2**20:.0f}"


def md_table(header, rows):
    cols = list(zip(header, *rows, strict=True))
    widths = [max(len(str(c)) for c in col) for col in cols]
    out = ["| " + " | ".join(str(h).ljust(wd) for h, wd in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for row in rows:
        cells = (str(c).ljust(wd) for c, wd in zip(row, widths, strict=True))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def best_peer(results, servers, w):
    best = None
    for s in servers:
        r = results.runs.get((s.key, w.key))
        if s.peer and isinstance(r, Run) and not r.fail and (best is None or r.rps > best[1].rps):
            best = (s, r)
    return best


def best_stogie(results, servers, w):
    best = None
    for s in servers:
        r = results.runs.get((s.key, w.key))
        if s.family == "stogie" and isinstance(r, Run) and not r.fail:
            if best is None or r.rps > best[1].rps:
                best = (s, r)
    return best


def cell(r, fmt):
    if r is None:
        return ""
    if r.fail:
        return "-" if r.fail == "-" else f"n/a ({r.fail})"
    return fmt(r)


def report(results, servers, workloads):
    parts = []
    load_workloads = [w for w in workloads if w.key != "idle"]
    stogies = [s for s in servers if s.family == "stogie"]
    if load_workloads:
        header = ["workload"] + [s.title for s in servers]
        if any(s.peer for s in servers):
            header += ["best peer"] + [f"{s.title} / best peer" for s in stogies]
        rows = []
        for w in load_workloads:
            row = [w.title] + [cell(results.runs.get((s.key, w.key)), rps_cell) for s in servers]
            if any(s.peer for s in servers):
                bp = best_peer(results, servers, w)
                row.append(f"{bp[0].title} {fmt_rps(bp[1].rps)}" if bp else "")
                for s in stogies:
                    r = results.runs.get((s.key, w.key))
                    ok = bp and isinstance(r, Run) and not r.fail and bp[1].rps > 0
                    row.append(f"{r.rps / bp[1].rps:.2f}x" if ok else "")
            rows.append(row)
        parts.append("### Requests per second\n\n" + md_table(header, rows))

        header = ["workload"] + [s.title for s in servers]
        rows = [
            [w.title] + [cell(results.runs.get((s.key, w.key)), lat_cell) for s in servers]
            for w in load_workloads
        ]
        parts.append("### Latency p50 / p99 (ms)\n\n" + md_table(header, rows))
        rows = [
            [w.title] + [cell(results.runs.get((s.key, w.key)), rss_cell) for s in servers]
            for w in load_workloads
        ]
        parts.append("### Peak RSS of the server's process tree (MB)\n\n" + md_table(header, rows))
        rows = [
            [w.title] + [cell(results.runs.get((s.key, w.key)), cpu_cell) for s in servers]
            for w in load_workloads
        ]
        cpus = os.cpu_count()
        parts.append(
            f"### CPU used during the run, % of one CPU: server / wrk (the machine has {cpus})"
            "\n\n" + md_table(header, rows)
        )
        rows = [
            [w.title] + [cell(results.runs.get((s.key, w.key)), cpu_us_cell) for s in servers]
            for w in load_workloads
        ]
        parts.append(
            "### Server CPU time per response (us; its whole process tree)\n\n"
            + md_table(header, rows)
        )

    idle_w = next((w for w in workloads if w.key == "idle"), None)
    if idle_w:
        header = [
            "server",
            "answered",
            "open after quiet",
            "RSS before (MB)",
            "RSS after (MB)",
            "added per connection",
            "new client p50 / max (ms)",
            "open errors",
        ]
        rows = []
        for s in servers:
            r = results.runs.get((s.key, "idle"))
            if r is None:
                continue
            if r.fail:
                rows.append([s.title, cell(r, str), "", "", "", "", "", ""])
                continue
            per = (r.rss_after - r.rss_before) / max(r.opened, 1)
            probe = f"{fmt_ms(r.probe_p50)} / {fmt_ms(r.probe_max)}"
            if r.probe_failed:
                probe += f" ({r.probe_failed} failed)"
            rows.append(
                [
                    s.title,
                    f"{r.opened} / {r.wanted}",
                    f"{r.still_open} / {r.wanted}",
                    mb(r.rss_before),
                    mb(r.rss_after),
                    f"{per / 1024:.2f} KB",
                    probe,
                    r.open_errors or "-",
                ]
            )
        parts.append(
            f"### {idle_w.title} ({results_idle_n(results, servers)} connections, one request"
            " each, then quiet)\n\n" + md_table(header, rows)
        )

    plain = results.runs.get(("stogie", "hello"))
    logged = results.runs.get(("stogie-log", "hello"))
    if isinstance(plain, Run) and isinstance(logged, Run) and not (plain.fail or logged.fail):
        cost = 1 - logged.rps / plain.rps if plain.rps else 0
        parts.append(
            "### The access log's cost at hello (issue 12: at most 10%)\n\n"
            f"stogie {fmt_rps(plain.rps)} req/s, with `--access-log FILE` {fmt_rps(logged.rps)}"
            f": {cost:.1%} fewer ({'met' if cost <= 0.10 else 'not met'}). One round each in this"
            " run: compare alternating rounds before trusting a few percent."
        )

    targets = target_rows(results, servers, workloads)
    if targets:
        parts.append(
            "### Targets (issue 4; stogie = its best mode in this run)\n\n"
            + md_table(["target", "required", "measured", "met"], targets)
        )

    configs, errors = [], []
    for s in servers:
        used, labels, alternatives = [], set(), False
        for w in workloads:
            tried = results.tried.get((s.key, w.key), [])
            r = results.runs.get((s.key, w.key))
            if not tried or r is None or r.fail:
                continue
            others = [f"{t.variant}: {short(t)}" for t in tried if t is not r]
            alternatives = alternatives or bool(others)
            labels.add(r.variant)
            used.append(
                f"{w.title}: {r.variant}" + (f" (also {'; '.join(others)})" if others else "")
            )
            if isinstance(r, Run) and r.errors:
                errors.append(f"- {s.title}, {w.title}: {r.errors}")
        if used and len(labels) == 1 and not alternatives:
            configs.append(f"- {s.title}: {labels.pop()}")
        elif used:
            configs.append(f"- {s.title}: " + "; ".join(used))
    if configs:
        parts.append("### Configurations (the best of those tried)\n\n" + "\n".join(configs))
    if errors:
        parts.append(
            "### Errors reported by wrk\n\n"
            "A server that closes the connection after each response (gunicorn sync, pyruvate)"
            " shows up as read errors.\n\n" + "\n".join(errors)
        )
    return "\n\n".join(parts)


def commands(servers, workloads, ctx):
    """Every command line run, for the results file."""
    lines = []
    for s in servers:
        seen = []
        for w in workloads:
            variants = s.variants(w, ctx)
            if isinstance(variants, str):
                continue
            for v in variants:
                cmd = " ".join(v.argv).replace(str(BIN) + "/", "").replace(PY, "python")
                cmd = cmd.replace(str(BENCH) + "/", "").replace(str(ROOT) + "/", "")
                if cmd not in seen:
                    seen.append(cmd)
        lines += [f"- {s.title}: `{c}`" for c in seen]
    return (
        "### Commands ({port} fresh for each run, {app} the workload's callable)\n\n"
        + "\n".join(lines)
    )


def results_idle_n(results, servers):
    for s in servers:
        r = results.runs.get((s.key, "idle"))
        if isinstance(r, Idle) and r.wanted:
            return f"{r.wanted:,}"
    return "?"


def short(r):
    if r.fail:
        return f"n/a ({r.fail})"
    if isinstance(r, Idle):
        return f"{r.still_open} open"
    return fmt_rps(r.rps)


def rps_cell(r):
    return fmt_rps(r.rps) + (" !" if r.errors else "")


def lat_cell(r):
    return f"{fmt_ms(r.p50)} / {fmt_ms(r.p99)}"


def rss_cell(r):
    return mb(r.rss)


def cpu_cell(r):
    return f"{r.cpu_server:.0f} / {r.cpu_wrk:.0f}"


def cpu_us_cell(r):
    return f"{r.cpu_us:.0f}" if r.cpu_us == r.cpu_us else "?"


def target_rows(results, servers, workloads):
    rows = []
    keys = {w.key: w for w in workloads}
    ratios = {"hello": 1.1, "hello-256": 1.1, "post": 1.1, "flask": 1.1, "big": 1.2, "stream": 2.0}
    for key, need in ratios.items():
        w = keys.get(key)
        if not w:
            continue
        bs, bp = best_stogie(results, servers, w), best_peer(results, servers, w)
        if bs and bp and bp[1].rps:
            ratio = bs[1].rps / bp[1].rps
            rows.append(
                [
                    f"{w.title}: stogie / best peer ({bp[0].title})",
                    f">= {need}x",
                    f"{ratio:.2f}x ({bs[0].title})",
                    yes(ratio >= need),
                ]
            )
    w = keys.get("hello")
    if w:
        bs = best_stogie(results, servers, w)
        ceil = results.runs.get(("ceiling", "hello"))
        if bs and isinstance(ceil, Run) and not ceil.fail and ceil.rps:
            share = bs[1].rps / ceil.rps
            rows.append(["hello: stogie / ceiling", ">= 80%", f"{share:.0%}", yes(share >= 0.8)])
        bp = best_peer(results, servers, w)
        if bs and bp:
            rows.append(
                [
                    f"hello p99: stogie vs best peer ({bp[0].title})",
                    f"<= {fmt_ms(bp[1].p99)} ms",
                    f"{fmt_ms(bs[1].p99)} ms",
                    yes(bs[1].p99 <= bp[1].p99),
                ]
            )
    # Issue 11: TLS keep-alive >= 1.3x the best peer and within 20% of stogie's plain hello;
    # handshakes at least as fast as the best peer's.
    for key, need in (("tls", 1.3), ("tls-handshake", 1.0)):
        w = keys.get(key)
        bs = best_stogie(results, servers, w) if w else None
        bp = best_peer(results, servers, w) if w else None
        if bs and bp and bp[1].rps:
            ratio = bs[1].rps / bp[1].rps
            rows.append(
                [
                    f"{w.title}: stogie / best peer ({bp[0].title})",
                    f">= {need}x",
                    f"{ratio:.2f}x ({bs[0].title}, {fmt_rps(bs[1].rps)})",
                    yes(ratio >= need),
                ]
            )
    if "tls" in keys and "hello" in keys:
        bt = best_stogie(results, servers, keys["tls"])
        bh = best_stogie(results, servers, keys["hello"])
        if bt and bh and bh[1].rps:
            share = bt[1].rps / bh[1].rps
            label = "hello over TLS: stogie / its plain hello"
            rows.append([label, ">= 80%", f"{share:.0%}", yes(share >= 0.8)])
    w = keys.get("sleep")
    if w:
        bs = best_stogie(results, servers, w)
        gr = results.runs.get(("granian", "sleep"))
        if bs and isinstance(gr, Run) and not gr.fail and gr.rps:
            ratio = bs[1].rps / gr.rps
            rows.append(
                [
                    "sleep 10 ms, 256 conns: stogie / Granian",
                    ">= 0.95x",
                    f"{ratio:.2f}x ({fmt_rps(bs[1].rps)})",
                    yes(ratio >= 0.95),
                ]
            )
    if "idle" in keys:
        for s in servers:
            r = results.runs.get((s.key, "idle"))
            if s.family != "stogie" or not isinstance(r, Idle) or r.fail:
                continue
            added = r.rss_after - r.rss_before
            rows.append(
                [
                    f"idle ({s.title}): all stay open",
                    f"{r.wanted}",
                    f"{r.still_open}",
                    yes(r.still_open == r.wanted),
                ]
            )
            rows.append(
                [f"idle ({s.title}): RSS added", "<= 10 MB", f"{mb(added)} MB", yes(added <= 10e6)]
            )
            ok = r.probe_failed == 0 and r.probe_max <= 5
            rows.append(
                [f"idle ({s.title}): new client", "<= 5 ms", f"{fmt_ms(r.probe_max)} ms", yes(ok)]
            )
    return rows


def yes(ok):
    return "yes" if ok else "**no**"


def machine_info():
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": os.uname().release,
        "memory": mem_total(),
    }


def mem_total():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "?"


def versions(servers, workloads, rev):
    out = {}
    for s in servers:
        for p in s.packages:
            out[p] = dist_version(p) or "not installed"
    if any(s.family == "stogie" for s in servers):
        out["stogie"] = f"{dist_version('stogie') or 'not installed'} ({rev})"
    if any(w.key == "flask" for w in workloads):
        out["flask"] = dist_version("flask") or "not installed"
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        first = (wrk.stdout + wrk.stderr).split("\n")[0].split(" [")[0].strip()
        out["wrk"] = first.removeprefix("wrk ")
    except (OSError, subprocess.TimeoutExpired):
        pass
    out["python"] = sys.version.split()[0]
    return out


def git_rev():
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + (" with uncommitted changes" if dirty else "")
    except OSError:
        return "?"


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    env_duration = os.environ.get("BENCH_DURATION")
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark stogie side by side with other WSGI servers (issue 4).",
        epilog=(
            f"servers: {', '.join(SERVER_KEYS)}; workloads: {', '.join(WORKLOAD_KEYS)}."
            " Environment: BENCH_DURATION (seconds per measured run, default 10)."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: stogie and {QUICK_PEER} (or --only), hello only, 3 s runs",
    )
    p.add_argument("--only", metavar="SERVER,...", help="run only these servers")
    p.add_argument("--workloads", metavar="WORKLOAD,...", help="run only these workloads")
    p.add_argument(
        "--duration",
        type=int,
        help="seconds per measured run (default: BENCH_DURATION or 10; 3 with --quick)",
    )
    p.add_argument("--warmup", type=int, help="seconds of warm-up before each run (default 2)")
    p.add_argument(
        "--idle-connections", type=int, default=10000, help="connections for the idle test"
    )
    p.add_argument(
        "--idle-quiet", type=float, default=3.0, help="seconds of quiet before measuring idle RSS"
    )
    p.add_argument(
        "--ops",
        action="store_true",
        help="only the operations runs: load through SIGHUP reloads and max-requests recycling",
    )
    p.add_argument("--no-install", action="store_true", help="do not install missing packages")
    p.add_argument(
        "--no-build", action="store_true", help="do not rebuild stogie or the ceiling binary"
    )
    p.add_argument(
        "--output",
        metavar="PATH",
        help="where to write the results (default: bench/RESULTS.md for a full run,"
        " bench/.logs/RESULTS-partial.md otherwise)",
    )
    opts = p.parse_args(argv)

    def pick(text, known, what):
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            p.error(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
        return names

    opts.server_keys = SERVER_KEYS
    opts.workload_keys = [k for k in WORKLOAD_KEYS]
    if opts.quick:
        opts.server_keys = ["stogie", QUICK_PEER]
        opts.workload_keys = ["hello"]
    if opts.only:
        opts.server_keys = pick(opts.only, SERVER_KEYS, "server")
    if opts.workloads:
        opts.workload_keys = pick(opts.workloads, WORKLOAD_KEYS, "workload")
    if opts.ops:
        opts.server_keys = ["stogie"]
        opts.workload_keys = []
    opts.partial = (
        opts.ops
        or opts.quick
        or opts.only is not None
        or opts.workloads is not None
        or opts.idle_connections != 10000
    )
    if opts.duration is None:
        if env_duration:
            try:
                opts.duration = max(1, round(float(env_duration)))
            except ValueError:
                p.error(f"BENCH_DURATION={env_duration!r} is not a number of seconds")
        else:
            opts.duration = 3 if opts.quick else 10
    if opts.warmup is None:
        opts.warmup = 1 if opts.quick else 2
    if opts.duration < 10 and not opts.quick:
        opts.partial = True
    return opts


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    elif hard == resource.RLIM_INFINITY and soft < 65536:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv=None):
    opts = parse_args(argv)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(cleanup)
    LOGS.mkdir(exist_ok=True)
    nofile = raise_nofile()
    # the client and the server each hold one descriptor per idle connection, plus slack
    if "idle" in opts.workload_keys and nofile < opts.idle_connections + 200:
        say(
            f"note: RLIMIT_NOFILE is {nofile}; the idle test asks for"
            f" {opts.idle_connections} connections and some will fail"
        )
    servers = [s for s in SERVERS if s.key in opts.server_keys]
    workloads = [w for w in WORKLOADS if w.key in opts.workload_keys]
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = loadavg()
    results = Results()
    # The checkout as it is built, not as it is when the run ends half an hour later.
    rev = git_rev()
    ctx = Context(hello_bin=target_dir() / "release" / "examples" / "hello")
    interrupted = False
    ops = []
    try:
        broken, ctx.hello_bin = setup(servers, workloads, opts)
        if any(s.key == "stogie-workers" for s in servers) and "stogie-workers" not in broken:
            ctx.stogie_workers = stogie_workers_support()
            if ctx.stogie_workers:
                say(f"skipping stogie --workers N: {ctx.stogie_workers}")
        run_all(servers, workloads, broken, ctx, opts, results)
        if opts.ops or not opts.partial:
            ops = ops_all(opts)
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted: stopping servers")
    finally:
        cleanup()

    table = report(results, servers, workloads) if workloads else ""
    if ops:
        table = (table + "\n\n" if table else "") + ops_report(ops, opts.duration)
    print()
    print(table)
    if interrupted:
        say("interrupted: no results file written")
        return 130
    info = machine_info()
    vers = versions(servers, workloads, rev)
    head = [
        "# stogie benchmark results",
        "",
        "Written by `bench/run`" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "") + ".",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']}, Linux {info['kernel']}",
        f"- load average before / after: {load_before} / {loadavg()}",
        f"- wrk -t1 -cN --latency, {opts.duration} s per run after {opts.warmup} s of warm-up,"
        " on loopback; peak RSS sampled every 0.2 s over the server's process tree",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        "- `!` after a number: wrk reported socket errors or non-2xx responses (listed at the end)",
    ]
    text = "\n".join(head) + "\n\n" + table + "\n\n" + commands(servers, workloads, ctx) + "\n"
    out = (
        Path(opts.output)
        if opts.output
        else (LOGS / "RESULTS-partial.md" if opts.partial else BENCH / "RESULTS.md")
    )
    out.write_text(text)
    say(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
