"""systemd: socket activation (``LISTEN_FDS``, with systemd's own ``systemd-socket-activate``,
and ``--bind fd://N``), ``sd_notify`` (READY, STATUS, RELOADING with MONOTONIC_USEC,
STOPPING) and the watchdog, heard by a NOTIFY_SOCKET listener of our own; the sample units in
``deploy/`` checked by ``systemd-analyze verify``."""

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_workers import children_of

from conftest import Proc, connect_tcp, connect_unix, free_port, wait_for, wait_until_serving
from stogie import systemd

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd is Linux")

ROOT = Path(__file__).resolve().parent.parent
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

APP = """
import ctypes
import os


def application(environ, start_response):
    if environ["PATH_INFO"] == "/hang":
        # Holds the GIL for 2 s, as a C extension stuck in a call would.
        ctypes.PyDLL(None).sleep(2)
    port = environ["SERVER_PORT"] or "-"
    body = ("%d %s %s" % (os.getpid(), port, environ.get("LISTEN_FDS"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def need(tool, name):
    # scripts/test installs the Debian package `systemd`: a missing tool is a broken setup,
    # never a reason to skip.
    if tool is None:
        pytest.fail(f"{name} is missing: install the Debian package 'systemd' (scripts/test does)")
    return tool


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "sapp.py").write_text(textwrap.dedent(APP))
    return tmp_path


def connect_when_listening(connect, running, timeout=10.0):
    """``connect`` once something listens (systemd-socket-activate takes a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect()
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline or running.proc.poll() is not None:
                raise
            time.sleep(0.05)


def get(connect, path="/"):
    conn = http.client.HTTPConnection("localhost", timeout=10)
    conn.sock = connect()
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


class NotifyListener:
    """The service manager's end of NOTIFY_SOCKET: a UNIX datagram socket that collects
    every message, with the time it came."""

    def __init__(self, path=None, abstract=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.sock.bind("\0" + abstract)
            self.address = "@" + abstract
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.05)
        self.messages = []  # (monotonic time, {field: value})

    def poll(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, field, value=None, timeout=10.0, after=0):
        """The first message from index ``after`` on with ``field`` (equal to ``value``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, (_, fields) in enumerate(self.poll()[after:], after):
                if field in fields and (value is None or fields[field] == value):
                    return index, fields
        pytest.fail(f"no {field}={value} in {[m for _, m in self.messages]}")

    def pings(self, since):
        """The pings received since ``since`` (a time from :meth:`mark`)."""
        return [t for t, f in self.poll() if f.get("WATCHDOG") == "1" and t >= since]

    def mark(self):
        """Now, once every message sent before is taken (they are timed as they are read)."""
        self.poll()
        return time.monotonic()

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path_factory):
    listener = NotifyListener(tmp_path_factory.mktemp("n") / "notify.sock")
    yield listener
    listener.close()


@contextlib.contextmanager
def run(args, cwd, env=None, pass_fds=()):
    err_path = cwd / "stderr.txt"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("STOGIE_", "LISTEN_"))}
    full_env.pop("PYTHONPATH", None)
    full_env.pop("NOTIFY_SOCKET", None)
    full_env.update(PYTHONUNBUFFERED="1", **(env or {}))
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            pass_fds=pass_fds,
        )
    running = Proc(proc, err_path)
    try:
        yield running
    finally:
        kids = children_of(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


STOGIE = [sys.executable, "-m", "stogie"]


# --- socket activation -------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_socket_activation_with_systemd_socket_activate_tcp_and_unix(
    app_dir, tmp_path_factory, workers
):
    tool = need(SOCKET_ACTIVATE, "systemd-socket-activate")
    port = free_port()
    path = tmp_path_factory.mktemp("a") / "s.sock"
    args = [tool, "-l", f"127.0.0.1:{port}", "-l", str(path), "--fdname=web:local"]
    args += [*STOGIE, "--workers", workers, "sapp"]
    with run(args, app_dir) as running:
        # systemd-socket-activate listens, and starts stogie at the first connection: that
        # first request waits in the backlog and is answered.
        tcp = lambda: connect_tcp(port)  # noqa: E731
        first = connect_when_listening(tcp, running)
        status, body = get(lambda: first)
        assert status == 200, running.stderr
        assert body.split()[1:] == [str(port), "None"]  # SERVER_PORT; LISTEN_FDS consumed
        status, body = get(lambda: connect_unix(path))
        assert status == 200 and body.split()[1] == "-"
        assert wait_for(lambda: "serving sapp" in running.stderr), running.stderr
        line = next(x for x in running.stderr.splitlines() if "serving sapp" in x)
        assert f"http://127.0.0.1:{port}" in line and f"unix:{path}" in line
        if workers == "2":
            assert running.pid not in {int(get(tcp)[1].split()[0]) for _ in range(10)}
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(10) == 0, running.stderr
        # The socket file is systemd's: stogie leaves it.
        assert path.exists()


def test_socket_activation_ignores_sockets_meant_for_another_process(app_dir):
    port = free_port()
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1"}  # inherited, not ours
    with run([*STOGIE, "--bind", f"127.0.0.1:{port}", "sapp"], app_dir, env) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        assert get(lambda: connect_tcp(port))[0] == 200


def test_bind_fd_serves_an_inherited_listening_socket(app_dir):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        fd = sock.fileno()
        with run(
            [*STOGIE, "--bind", f"fd://{fd}", "--workers", "2", "sapp"], app_dir, pass_fds=[fd]
        ) as running:
            sock.close()  # only stogie holds it now
            connect = lambda: connect_tcp(port)  # noqa: E731
            wait_until_serving(running, connect)
            status, body = get(connect)
            assert status == 200 and body.split()[1] == str(port)
            assert wait_for(lambda: f"on http://127.0.0.1:{port}" in running.stderr)


@pytest.mark.parametrize(
    ("bind", "words"),
    [("fd://x", "expected fd:// and a descriptor number"), ("fd://97", "cannot listen on fd://97")],
)
def test_bad_bind_fd(app_dir, bind, words):
    proc = subprocess.run(
        [*STOGIE, "--bind", bind, "sapp"], cwd=app_dir, capture_output=True, text=True, timeout=10
    )
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and words in proc.stderr, proc.stderr


# --- sd_notify ---------------------------------------------------------------------------------


def test_notify_ready_status_reloading_and_stopping(app_dir, notify):
    port = free_port()
    env = {"NOTIFY_SOCKET": notify.address}
    args = [*STOGIE, "--workers", "2", "--bind", f"127.0.0.1:{port}", "sapp"]
    with run(args, app_dir, env) as running:
        index, ready = notify.wait_for("READY", "1")
        # READY comes once the workers serve.
        assert get(lambda: connect_tcp(port))[0] == 200
        assert ready["MAINPID"] == str(running.pid)
        assert ready["STATUS"] == f"serving on http://127.0.0.1:{port} with 2 workers"
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        running.proc.send_signal(signal.SIGHUP)
        index, reloading = notify.wait_for("RELOADING", "1", after=index + 1)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        # Type=notify-reload wants the monotonic clock of the moment the reload began.
        assert before <= int(reloading["MONOTONIC_USEC"]) <= after
        index, ready = notify.wait_for("READY", "1", after=index + 1)
        assert ready["STATUS"] == "reloaded: 2 workers serving"
        running.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", "1", after=index + 1)
        assert running.proc.wait(10) == 0, running.stderr


def test_notify_in_one_process_and_on_an_abstract_socket(app_dir):
    listener = NotifyListener(abstract=f"stogie-test-{os.getpid()}")
    try:
        port = free_port()
        env = {"NOTIFY_SOCKET": listener.address}
        with run([*STOGIE, "--bind", f"127.0.0.1:{port}", "sapp"], app_dir, env) as running:
            _, ready = listener.wait_for("READY", "1")
            assert ready["STATUS"] == f"serving on http://127.0.0.1:{port}"
            # No supervisor: a SIGHUP is no reload, and does not kill the server either.
            running.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: "SIGHUP ignored" in running.stderr)
            assert get(lambda: connect_tcp(port))[0] == 200
            running.proc.send_signal(signal.SIGTERM)
            listener.wait_for("STOPPING", "1")
            assert running.proc.wait(10) == 0
    finally:
        listener.close()


def test_a_reload_that_fails_still_ends_with_ready(app_dir, notify):
    port = free_port()
    env = {"NOTIFY_SOCKET": notify.address}
    args = [*STOGIE, "--workers", "2", "--bind", f"127.0.0.1:{port}", "sapp"]
    with run(args, app_dir, env) as running:
        index, _ = notify.wait_for("READY", "1")
        (app_dir / "sapp.py").write_text("raise ImportError('nope')\n")
        running.proc.send_signal(signal.SIGHUP)
        index, _ = notify.wait_for("RELOADING", "1", after=index + 1)
        # systemd's reload job ends either way; the status says what happened.
        _, ready = notify.wait_for("READY", "1", after=index + 1)
        assert ready["STATUS"].startswith("reload failed: cannot import module 'sapp'")
        assert get(lambda: connect_tcp(port))[0] == 200


# --- the watchdog ------------------------------------------------------------------------------


def test_watchdog_pings_while_the_workers_engines_run_and_stops_when_they_hang(app_dir, notify):
    port = free_port()
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000"}
    args = [*STOGIE, "--workers", "2", "--bind", f"127.0.0.1:{port}", "sapp"]
    with run(args, app_dir, env) as running:
        notify.wait_for("READY", "1")
        start = notify.mark()
        time.sleep(1.5)
        pings = notify.pings(start)
        # Half the watchdog interval apart: about 7 in 1.5 s.
        assert 4 <= len(pings) <= 10, pings
        kids = children_of(running.pid)
        for pid in kids:
            os.kill(pid, signal.SIGSTOP)  # hung, as far as anyone can tell
        try:
            time.sleep(3.0)  # heartbeats go stale after 2 s
            hung = notify.mark()
            time.sleep(1.0)
            assert notify.pings(hung) == []
        finally:
            for pid in kids:
                os.kill(pid, signal.SIGCONT)
        back = notify.mark()
        assert wait_for(lambda: notify.pings(back), 5)


def test_watchdog_stops_when_the_app_holds_the_gil_in_one_process(app_dir, notify):
    port = free_port()
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "300000"}
    with run([*STOGIE, "--bind", f"127.0.0.1:{port}", "sapp"], app_dir, env) as running:
        notify.wait_for("READY", "1")
        start = notify.mark()
        time.sleep(0.8)
        assert len(notify.pings(start)) >= 3
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/hang")
        time.sleep(0.5)
        stuck = notify.mark()
        time.sleep(1.0)
        assert notify.pings(stuck) == []
        assert conn.getresponse().status == 200
        conn.close()
        back = notify.mark()
        assert wait_for(lambda: notify.pings(back), 5), running.stderr


def test_notifier_without_a_service_manager_does_nothing():
    notifier = systemd.Notifier(environ={})
    assert not notifier.enabled
    notifier.ready("x")
    notifier.tick(True)
    assert notifier.interval() >= 60


def test_listen_fds_reads_names_and_unsets_the_variables():
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0", "LISTEN_FDNAMES": ""}
    assert systemd.listen_fds(env) == []
    assert env == {}


# --- the sample units --------------------------------------------------------------------------


def test_sample_units_verify_and_their_sockets_serve(app_dir, tmp_path):
    analyze = need(SYSTEMD_ANALYZE, "systemd-analyze")
    tool = need(SOCKET_ACTIVATE, "systemd-socket-activate")
    service = (ROOT / "deploy" / "stogie.service").read_text()
    sockets = (ROOT / "deploy" / "stogie.socket").read_text()
    exec_start = re.search(r"^ExecStart=(\S+) (.*)$", service, re.M)
    assert exec_start and exec_start.group(1).endswith("/bin/stogie")
    # The units as they would be installed, with this checkout's stogie.
    stogie_bin = Path(sys.executable).parent / "stogie"
    (tmp_path / "stogie.service").write_text(service.replace(exec_start.group(1), str(stogie_bin)))
    (tmp_path / "stogie.socket").write_text(sockets)
    proc = subprocess.run(
        [analyze, "verify", str(tmp_path / "stogie.socket"), str(tmp_path / "stogie.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Type=notify" in service and "ExecReload=/bin/kill -HUP $MAINPID" in service
    listens = re.findall(r"^ListenStream=(\S+)$", sockets, re.M)
    assert any(":" in x for x in listens) and any(x.startswith("/") for x in listens)
    # The service's own options, on sockets of the same kinds, passed the same way.
    options = exec_start.group(2).split()
    options[options.index("--chdir") + 1] = str(app_dir)
    options[-1] = "sapp"
    port = free_port()
    path = tmp_path / "s.sock"
    args = [tool, "-l", f"127.0.0.1:{port}", "-l", str(path), str(stogie_bin), *options]
    with run(args, app_dir) as running:
        first = connect_when_listening(lambda: connect_tcp(port), running)
        assert get(lambda: first)[0] == 200, running.stderr
        assert get(lambda: connect_unix(path))[0] == 200
        assert wait_for(lambda: "(4 workers" in running.stderr), running.stderr
