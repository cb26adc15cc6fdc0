"""Worker processes (``workers=N``, ``stogie --workers N``): several processes serving one
listening socket under a supervisor, run as users run them (in a subprocess), reached over
real sockets, stopped and killed with signals."""

import contextlib
import http.client
import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import (
    Proc,
    connect_tcp,
    connect_unix,
    free_port,
    http_get,
    wait_for,
    wait_until_serving,
)
from stogie import workers, wsgi

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc")

APP_MODULE = """
import os
import time


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        open(os.environ["STOGIE_TEST_MARKER"], "w").close()
        time.sleep(1.5)
    elif path == "/crash":
        os._exit(3)
    body = ("%d %s" % (os.getpid(), environ["wsgi.multiprocess"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

# The Python API in a program of its own: forking the test runner is no test of anything.
API_SCRIPT = """
import sys, threading
from stogie import wsgi
from wapp import application

mode = sys.argv[1]
server = wsgi.Server(("127.0.0.1", 0), application, workers=2, shutdown_timeout=5)
server.prepare()
print(server.bind_addr[1], server.ready, flush=True)
if mode in ("thread", "no-serve"):
    # serve() in a thread and stop() from the main one, or stop() with no serve() at all
    thread = threading.Thread(target=server.serve if mode == "thread" else lambda: None)
    thread.start()
    sys.stdin.readline()
    server.stop()
    thread.join(10)
    print("stopped", thread.is_alive(), server.ready, flush=True)
    sys.exit(0)
try:
    server.serve()
except KeyboardInterrupt:
    print("interrupted", server.ready, flush=True)
    sys.exit(0)
print("returned", server.ready, flush=True)
"""


@pytest.fixture
def app_dir(tmp_path):
    """A directory with ``wapp.py`` (the app) and ``api.py`` (a program using the API)."""
    (tmp_path / "wapp.py").write_text(textwrap.dedent(APP_MODULE))
    (tmp_path / "api.py").write_text(textwrap.dedent(API_SCRIPT))
    return tmp_path


def _stat(pid):
    """(state, ppid) of a process, or None once it is gone (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return fields[0], int(fields[1])


def alive(pid):
    return _stat(pid) is not None


def children_of(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[1] == pid:
                found.append(int(entry))
    return sorted(found)


def answer(connect):
    """(pid, wsgi.multiprocess) of the worker answering a request on a fresh connection."""
    status, body = http_get(connect)
    assert status == 200, body
    pid, multiprocess = body.split()
    return int(pid), multiprocess == b"True"


def pids_answering(connect, count, timeout=5.0):
    """Request on fresh connections until ``count`` different workers answered."""
    seen = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        pid, multiprocess = answer(connect)
        assert multiprocess
        seen.add(pid)
    return seen


def refused(connect):
    try:
        connect().close()
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    return False


@contextlib.contextmanager
def process(args, cwd, env=None, stdin=subprocess.DEVNULL):
    """Start ``args``; on exit, kill it and every worker it left."""
    err_path = cwd / "stderr.txt"
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full_env.pop("PYTHONPATH", None)
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=stdin,
            env=full_env,
            text=True,
        )
    known = set()
    try:
        yield Proc(proc, err_path)
    finally:
        known.update(children_of(proc.pid))
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pid in known:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
        if proc.stdin:
            proc.stdin.close()


def stogie(*args):
    return [sys.executable, "-m", "stogie", *args]


def start_cli(args, app_dir, env=None):
    return process(stogie(*args), app_dir, env=env)


def wait_for_workers(running, count, timeout=8.0):
    """The PIDs of ``count`` workers, once they exist; fails early if stogie exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            pytest.fail(f"stogie exited with {running.proc.returncode}: {running.stderr}")
        kids = children_of(running.pid)
        if len(kids) == count:
            return kids
        time.sleep(0.02)
    pytest.fail(f"{count} workers did not start: {children_of(running.pid)} {running.stderr}")


# --- the Python API ----------------------------------------------------------------------------


def test_api_workers_answer_from_different_processes(app_dir):
    with process([sys.executable, "api.py", "main"], app_dir) as running:
        port, ready = running.proc.stdout.readline().split()
        port = int(port)
        assert port != 0 and ready == "True"  # bind_addr is the real address after prepare()
        kids = wait_for_workers(running, 2)
        connect = lambda: connect_tcp(port)  # noqa: E731
        seen = pids_answering(connect, 2)
        assert seen == set(kids), (seen, kids, running.stderr)
        assert running.pid not in seen  # the parent only supervises
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(8) == 0, running.stderr
        assert running.proc.stdout.read().split() == ["returned", "False"]
        assert wait_for(lambda: not any(alive(pid) for pid in kids), 2)
        assert refused(connect)
    assert "Traceback" not in running.stderr


def test_tcp_connections_spread_evenly_over_the_workers(app_dir):
    # One listening socket per worker in an SO_REUSEPORT group: the kernel hashes new
    # connections over the workers. With one shared socket, a burst of connections went
    # mostly (54 of 64) to whichever worker woke first.
    with process([sys.executable, "api.py", "main"], app_dir) as running:
        port = int(running.proc.stdout.readline().split()[0])
        kids = wait_for_workers(running, 2)
        wait_until_serving(running, lambda: connect_tcp(port))
        conns = [connect_tcp(port) for _ in range(64)]
        try:
            for sock in conns:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            counts = dict.fromkeys(kids, 0)
            for sock in conns:
                reply = b""
                while b"\r\n\r\n" not in reply or not reply.endswith((b"True", b"False")):
                    chunk = sock.recv(4096)
                    assert chunk, reply
                    reply += chunk
                counts[int(reply.rsplit(b"\r\n\r\n", 1)[1].split()[0])] += 1
        finally:
            for sock in conns:
                sock.close()
        # Binomial(64, 1/2): fewer than 12 on one side happens about once in 10 million runs.
        assert min(counts.values()) >= 12, counts


def test_api_sigint_stops_the_workers_then_raises_keyboard_interrupt(app_dir):
    with process([sys.executable, "api.py", "main"], app_dir) as running:
        port = int(running.proc.stdout.readline().split()[0])
        kids = wait_for_workers(running, 2)
        assert answer(lambda: connect_tcp(port))[0] in kids
        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(8) == 0, running.stderr
        assert running.proc.stdout.read().split() == ["interrupted", "False"]
        assert not any(alive(pid) for pid in kids)


@pytest.mark.parametrize("mode", ["thread", "no-serve"])
def test_api_stop_from_another_thread_stops_the_workers(app_dir, mode):
    args = [sys.executable, "api.py", mode]
    with process(args, app_dir, stdin=subprocess.PIPE) as running:
        port = int(running.proc.stdout.readline().split()[0])
        kids = wait_for_workers(running, 2)
        assert answer(lambda: connect_tcp(port))[0] in kids
        running.proc.stdin.write("stop\n")
        running.proc.stdin.flush()
        assert running.proc.wait(8) == 0, running.stderr
        assert running.proc.stdout.read().split() == ["stopped", "False", "False"]
        assert not any(alive(pid) for pid in kids)
        assert refused(lambda: connect_tcp(port))


def test_killed_worker_is_replaced(app_dir):
    with process([sys.executable, "api.py", "main"], app_dir) as running:
        port = int(running.proc.stdout.readline().split()[0])
        connect = lambda: connect_tcp(port)  # noqa: E731
        victim, survivor = wait_for_workers(running, 2)
        wait_until_serving(running, connect)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: not alive(victim))
        # A new worker appears, and the server answers all the while.
        assert wait_for(lambda: len(children_of(running.pid)) == 2 and answer(connect))
        kids = children_of(running.pid)
        assert survivor in kids and victim not in kids
        (replacement,) = set(kids) - {survivor}
        assert pids_answering(connect, 2) == {survivor, replacement}
        assert "was killed by SIGKILL" in running.stderr
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(8) == 0, running.stderr
        assert not any(alive(pid) for pid in kids)


def test_worker_crashing_in_a_request_is_replaced(app_dir):
    port = free_port()
    args = ["--workers", "2", "--bind", f"127.0.0.1:{port}", "wapp"]
    with start_cli(args, app_dir) as running:
        connect = lambda: connect_tcp(port)  # noqa: E731
        kids = wait_for_workers(running, 2)
        wait_until_serving(running, connect)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            http_get(connect, "/crash")
        assert wait_for(lambda: "exited with status 3; starting another" in running.stderr)
        assert wait_for(lambda: len(children_of(running.pid)) == 2)
        assert len(set(children_of(running.pid)) & set(kids)) == 1
        assert answer(connect)[0] in children_of(running.pid)


def test_prepare_refuses_to_fork_with_threads_running():
    release = threading.Event()
    helper = threading.Thread(target=release.wait, name="helper-thread")
    helper.start()
    try:
        server = wsgi.Server(("127.0.0.1", 0), lambda e, s: [], workers=2)
        with pytest.raises(RuntimeError, match="helper-thread"):
            server.prepare()
        assert server.ready is False
        server.stop()
    finally:
        release.set()
        helper.join()


@pytest.mark.parametrize("value", [0, -1, "2", 1.5, True])
def test_workers_must_be_a_whole_number_of_at_least_one(value):
    with pytest.raises(ValueError, match="workers"):
        wsgi.Server(("127.0.0.1", 0), lambda e, s: [], workers=value)


def test_restart_delay_doubles_and_restarts_are_capped_per_minute():
    supervisor = workers.Supervisor(None, 1)
    try:
        start = time.monotonic()
        for _ in range(workers.MAX_RESTARTS_PER_MINUTE + 1):
            supervisor._schedule(0)
        dues = [due for due, _ in supervisor._pending]
    finally:
        supervisor._wake_r.close()
        supervisor._wake_w.close()
    delays = [b - a for a, b in itertools.pairwise([start, *dues])]
    assert 0.09 < delays[0] < 0.2
    assert all(b >= a for a, b in itertools.pairwise(dues))
    assert max(delays[:-1]) <= workers.MAX_RESTART_DELAY + 0.05
    # one more than the cap waits until the first of the minute is a minute old
    assert dues[-1] >= dues[0] + 60


# --- the command -------------------------------------------------------------------------------


@contextlib.contextmanager
def cli_with_a_slow_request(app_dir):
    """``stogie --workers 2 --shutdown-timeout 5 wapp`` on a free port, serving, with a
    request to ``/slow`` (1.5 s in the app) made from a thread and already in the app.

    Yields ``(running, connect, kids, client, outcome)``: ``client`` is the thread and
    ``outcome`` gets the request's ``(status, body)`` or the OSError it raised.
    """
    port = free_port()
    marker = app_dir / "entered"
    args = ["--workers", "2", "--bind", f"127.0.0.1:{port}", "--shutdown-timeout", "5", "wapp"]
    with start_cli(args, app_dir, env={"STOGIE_TEST_MARKER": str(marker)}) as running:
        connect = lambda: connect_tcp(port)  # noqa: E731
        kids = wait_for_workers(running, 2)
        wait_until_serving(running, connect)
        outcome = []

        def slow_request():
            try:
                outcome.append(http_get(connect, "/slow"))
            except OSError as exc:  # http.client.RemoteDisconnected is one
                outcome.append(exc)

        client = threading.Thread(target=slow_request, daemon=True)
        client.start()
        assert wait_for(marker.exists), "the slow request never reached the app"
        yield running, connect, kids, client, outcome


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_signal_stops_all_workers_after_the_request_in_flight(app_dir, signum):
    with cli_with_a_slow_request(app_dir) as (running, connect, kids, client, outcome):
        started = time.monotonic()
        running.proc.send_signal(signum)
        client.join(8)
        assert not client.is_alive(), running.stderr
        assert len(outcome) == 1 and isinstance(outcome[0], tuple), (outcome, running.stderr)
        status, body = outcome[0]
        assert status == 200, running.stderr
        assert int(body.split()[0]) in kids
        assert running.proc.wait(8) == 0, running.stderr
        assert time.monotonic() - started < 5
        assert not any(alive(pid) for pid in kids), "workers left behind"
        assert refused(connect)
    assert "Traceback" not in running.stderr
    assert "(2 workers, 10 threads each, TLS off)" in running.stderr


def test_cli_second_signal_kills_the_workers_at_once(app_dir):
    with cli_with_a_slow_request(app_dir) as (running, _, kids, client, outcome):
        running.proc.send_signal(signal.SIGTERM)
        # A repeat within 0.5 s of the first signal's handling is taken for the same signal
        # delivered twice: wait until it was handled (late on a loaded machine), then more.
        assert wait_for(lambda: "SIGTERM received" in running.stderr), running.stderr
        time.sleep(0.6)
        started = time.monotonic()
        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(8) == 1, running.stderr
        assert time.monotonic() - started < 0.8  # the slow request was not waited for
        assert not any(alive(pid) for pid in kids)
        client.join(5)
        assert outcome and isinstance(outcome[0], OSError), outcome
    assert "SIGINT: stopped without waiting for running requests" in running.stderr


def test_cli_port_in_use(app_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            stogie("--workers", "2", "--bind", f"127.0.0.1:{port}", "wapp"),
            cwd=app_dir,
            capture_output=True,
            text=True,
            timeout=8,
            stdin=subprocess.DEVNULL,
        )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("stogie: ") and str(port) in lines[0]
    assert "in use" in lines[0]


def test_cli_workers_must_be_positive(app_dir):
    proc = subprocess.run(
        stogie("--workers", "0", "wapp"), cwd=app_dir, capture_output=True, text=True, timeout=8
    )
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "--workers" in proc.stderr


def test_workers_exit_when_the_supervisor_dies(app_dir):
    port = free_port()
    args = ["--workers", "2", "--bind", f"127.0.0.1:{port}", "wapp"]
    with start_cli(args, app_dir) as running:
        kids = wait_for_workers(running, 2)
        wait_until_serving(running, lambda: connect_tcp(port))
        running.proc.kill()
        running.proc.wait(5)
        assert wait_for(lambda: not any(alive(pid) for pid in kids), 3), "orphaned workers"


def test_cli_unix_socket_shared_by_workers(app_dir, tmp_path_factory):
    # A short directory: UNIX socket paths are limited to about 100 bytes.
    path = tmp_path_factory.mktemp("w") / "s.sock"
    connect = lambda: connect_unix(path)  # noqa: E731
    args = ["--workers", "2", "--bind", str(path), "wapp"]
    with start_cli(args, app_dir) as running:
        victim, survivor = wait_for_workers(running, 2)
        wait_until_serving(running, connect)
        assert pids_answering(connect, 2) == {victim, survivor}
        # One worker stopping alone (gracefully) must leave the socket file to the others.
        os.kill(victim, signal.SIGTERM)
        assert wait_for(lambda: not alive(victim))
        assert wait_for(lambda: len(children_of(running.pid)) == 2)
        assert path.exists()
        (replacement,) = set(children_of(running.pid)) - {survivor}
        assert pids_answering(connect, 2) == {survivor, replacement}
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(8) == 0, running.stderr
    assert not path.exists()
