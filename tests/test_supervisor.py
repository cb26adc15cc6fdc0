"""Zero-downtime reload (SIGHUP), more or fewer workers (SIGTTIN, SIGTTOU) and recycling
(``--max-requests``, ``--max-worker-memory``, ``--worker-lifetime``) and hung workers
(``--worker-timeout``): ``stogie`` run as users
run it, in a subprocess, with clients sending requests all the while and every response
counted."""

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from test_workers import alive, children_of, process, stogie

from conftest import connect_tcp, connect_unix, free_port, wait_for, wait_until_serving
from stogie import wsgi

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc")

# VERSION is read when the module is imported: a reload shows in the answers.
APP = """
import os

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as f:
    VERSION = f.read().strip()
if VERSION.startswith("slow"):
    import time

    time.sleep(1)  # a slow import: signals come while the new workers start
HOARD = []


def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        import time

        time.sleep(float(environ["QUERY_STRING"]))
    if environ["PATH_INFO"] == "/grow":
        HOARD.append(bytearray(40 * 2**20))
        for i in range(0, len(HOARD[-1]), 4096):
            HOARD[-1][i] = 1
    body = ("%d %s" % (os.getpid(), VERSION)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "rapp.py").write_text(textwrap.dedent(APP))
    (tmp_path / "version.txt").write_text("one")
    return tmp_path


class Load:
    """Clients sending GET / in a loop until stopped, each on a keep-alive connection (as a
    browser or a proxy's pool would), or on a new connection per request. Every response and
    every failure is counted: a failure is any request that got no complete 200."""

    def __init__(self, connect, clients=4, keep_alive=True):
        self.connect = connect
        self.keep_alive = keep_alive
        self.ok = 0
        self.errors = []
        self.seen = {}  # body -> count
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self):
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("localhost", timeout=10)
                    conn.sock = self.connect()
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
                if resp.will_close or not self.keep_alive:
                    conn.close()
                    conn = None
                with self._lock:
                    self.ok += 1
                    self.seen[body] = self.seen.get(body, 0) + 1
            except Exception as exc:  # noqa: BLE001 - every failure counts
                with self._lock:
                    self.errors.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def versions(self):
        with self._lock:
            return {body.split()[1].decode() for body in self.seen}

    def pids(self):
        with self._lock:
            return {int(body.split()[0]) for body in self.seen}

    def count(self):
        with self._lock:
            return self.ok


def serve(app_dir, *args):
    return process(stogie(*args, "rapp"), app_dir)


def serving(running, timeout=10.0):
    """Wait until the supervisor says its workers serve (they imported the app)."""
    assert wait_for(lambda: "serving rapp" in running.stderr, timeout), running.stderr


@contextlib.contextmanager
def two_workers(app_dir, *args):
    """``stogie --workers 2 ARGS rapp`` on a fresh port, once both workers imported the app:
    ``(running, connect, workers)``."""
    port = free_port()
    connect = lambda: connect_tcp(port)  # noqa: E731
    with serve(app_dir, "--workers", "2", *args, "--bind", f"127.0.0.1:{port}") as running:
        wait_until_serving(running, connect)
        serving(running)
        yield running, connect, workers_of(running, 2)


def workers_of(running, count, timeout=8.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert running.proc.poll() is None, running.stderr
        kids = children_of(running.pid)
        if len(kids) == count:
            return set(kids)
        time.sleep(0.02)
    pytest.fail(f"not {count} workers: {children_of(running.pid)}\n{running.stderr}")


def pids_answering(connect, count, timeout=5.0):
    """Request on fresh connections until ``count`` different workers answered."""
    seen = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        conn = http.client.HTTPConnection("localhost", timeout=5)
        conn.sock = connect()
        try:
            conn.request("GET", "/")
            seen.add(int(conn.getresponse().read().split()[0]))
        finally:
            conn.close()
    return seen


def keep_loading(load, seconds):
    before = load.count()
    time.sleep(seconds)
    assert load.count() > before, "no request got through"


# --- reload ------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "new-connections"])
def test_sighup_reloads_the_app_under_load_without_losing_a_request(app_dir, keep_alive):
    with two_workers(app_dir) as (running, connect, old):
        with Load(connect, clients=4, keep_alive=keep_alive) as load:
            keep_loading(load, 0.5)
            (app_dir / "version.txt").write_text("two")
            running.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: "two" in load.versions(), 10), running.stderr
            assert wait_for(lambda: not any(alive(pid) for pid in old), 10), running.stderr
            keep_loading(load, 0.5)
            # A second reload straight after, still under load.
            (app_dir / "version.txt").write_text("three")
            running.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: "three" in load.versions(), 10), running.stderr
            keep_loading(load, 0.5)
        assert load.errors == [], (load.errors[:5], running.stderr)
        assert load.ok > 100
        new = set(children_of(running.pid))
        assert len(new) == 2 and not new & old
        assert "reloaded: 2 workers serving rapp:application" in running.stderr
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(10) == 0, running.stderr


def test_reload_on_a_unix_socket_under_load(app_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("r") / "s.sock"
    connect = lambda: connect_unix(path)  # noqa: E731
    with serve(app_dir, "--workers", "2", "--bind", str(path)) as running:
        wait_until_serving(running, connect)
        serving(running)
        with Load(connect, clients=4) as load:
            keep_loading(load, 0.3)
            (app_dir / "version.txt").write_text("two")
            running.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: "two" in load.versions(), 10), running.stderr
            keep_loading(load, 0.5)
        assert load.errors == [], (load.errors[:5], running.stderr)
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(10) == 0, running.stderr
    assert not path.exists()


def test_a_reload_whose_app_fails_to_import_leaves_the_old_workers_serving(app_dir):
    with two_workers(app_dir) as (running, connect, old):
        good = (app_dir / "rapp.py").read_text()
        (app_dir / "rapp.py").write_text("raise RuntimeError('the new code is broken')\n")
        with Load(connect, clients=2) as load:
            keep_loading(load, 0.3)
            running.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: "reload failed" in running.stderr, 10), running.stderr
            keep_loading(load, 0.5)
        assert load.errors == [], load.errors[:5]
        assert load.pids() <= old and load.versions() == {"one"}
        line = next(x for x in running.stderr.splitlines() if "reload failed" in x)
        assert "RuntimeError: the new code is broken" in line
        assert "the old workers go on serving" in line
        assert "Traceback" in running.stderr  # the module's own traceback, for its author
        assert wait_for(lambda: set(children_of(running.pid)) == old, 5)
        # Fixed, the next reload goes through.
        (app_dir / "rapp.py").write_text(good)
        (app_dir / "version.txt").write_text("fixed")
        running.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: pids_answering(connect, 1) and _version(connect) == "fixed", 10)


def _version(connect):
    conn = http.client.HTTPConnection("localhost", timeout=5)
    conn.sock = connect()
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().split()[1].decode()
    finally:
        conn.close()


def test_an_idle_keep_alive_client_of_an_old_worker_gets_its_next_request_answered(app_dir):
    port = free_port()
    connect = lambda: connect_tcp(port)  # noqa: E731
    args = ["--workers", "1", "--max-requests", "1000000", "--bind", f"127.0.0.1:{port}"]
    args += ["--timeout", "5"]
    with serve(app_dir, *args) as running:
        wait_until_serving(running, connect)
        (old,) = workers_of(running, 1)
        conn = http.client.HTTPConnection("localhost", timeout=5)
        conn.sock = connect()
        conn.request("GET", "/")
        assert conn.getresponse().read().split()[0] == str(old).encode()
        running.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: len(children_of(running.pid)) == 2 or "reloaded" in running.stderr)
        assert wait_for(lambda: "reloaded" in running.stderr, 10)
        time.sleep(0.5)
        # The old worker drains: it still answers this connection's next request, and says
        # the connection closes.
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read().split()[0] == str(old).encode()
        assert resp.getheader("Connection") == "close"
        conn.close()
        assert wait_for(lambda: not alive(old), 5)


# --- more or fewer workers -----------------------------------------------------------------------


def test_sigttin_adds_a_worker_and_sigttou_removes_one_under_load(app_dir):
    port = free_port()
    connect = lambda: connect_tcp(port)  # noqa: E731
    with serve(app_dir, "--workers", "2", "--bind", f"127.0.0.1:{port}") as running:
        wait_until_serving(running, connect)
        workers_of(running, 2)
        with Load(connect, clients=4, keep_alive=False) as load:
            keep_loading(load, 0.3)
            running.proc.send_signal(signal.SIGTTIN)
            three = workers_of(running, 3)
            assert wait_for(lambda: pids_answering(connect, 3) == three, 10), running.stderr
            running.proc.send_signal(signal.SIGTTOU)
            two = workers_of(running, 2, timeout=10)
            keep_loading(load, 0.5)
            running.proc.send_signal(signal.SIGTTOU)
            workers_of(running, 1, timeout=10)
            keep_loading(load, 0.3)
            running.proc.send_signal(signal.SIGTTOU)  # one is the fewest
            keep_loading(load, 0.3)
        assert load.errors == [], (load.errors[:5], running.stderr)
        assert two < three
        assert len(children_of(running.pid)) == 1
        assert "one worker is the fewest" in running.stderr
        # The connections go where a worker serves: every one of many is answered.
        for _ in range(50):
            assert _version(connect) == "one"


@pytest.mark.parametrize("change", ["SIGTTIN", "SIGTTOU"])
def test_adding_or_removing_a_worker_during_a_reload(app_dir, change):
    with two_workers(app_dir) as (running, connect, _):
        with Load(connect, clients=2, keep_alive=False) as load:
            (app_dir / "version.txt").write_text("slow two")
            running.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: "reloading" in running.stderr)
            running.proc.send_signal(getattr(signal, change))
            assert wait_for(lambda: "reloaded" in running.stderr, 10), running.stderr
            count = 3 if change == "SIGTTIN" else 1
            final = workers_of(running, count, timeout=10)
            assert wait_for(lambda: pids_answering(connect, count) == final, 10)
            keep_loading(load, 0.3)
        assert load.errors == [], (load.errors[:5], running.stderr)
        assert "reload failed" not in running.stderr
        assert all(_version(connect) == "slow" for _ in range(10))


def test_a_worker_draining_when_a_reload_ends_finishes_its_requests(app_dir):
    # The removed slot's worker drains while the reload's workers import the app, and the
    # reload ends before its slow requests do. It was killed then: its clients' requests went
    # unanswered (a reset), as one of test_adding_or_removing_a_worker_during_a_reload's did
    # on a loaded machine.
    with two_workers(app_dir) as (running, connect, old):
        answers, errors = [], []

        def slow():
            conn = http.client.HTTPConnection("localhost", timeout=10)
            conn.sock = connect()
            try:
                conn.request("GET", "/slow?2")
                resp = conn.getresponse()
                answers.append((resp.status, int(resp.read().split()[0])))
            except Exception as exc:  # noqa: BLE001 - every failure counts
                errors.append(repr(exc))
            finally:
                conn.close()

        # Connections are hashed over the two slots' sockets: among 12, both get some.
        clients = [threading.Thread(target=slow) for _ in range(12)]
        for client in clients:
            client.start()
        time.sleep(0.2)
        (app_dir / "version.txt").write_text("slow two")
        running.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reloading" in running.stderr)
        running.proc.send_signal(signal.SIGTTOU)
        assert wait_for(lambda: "reloaded" in running.stderr, 10), running.stderr
        for client in clients:
            client.join(15)
        assert errors == [], (errors, running.stderr)
        assert sorted(status for status, _ in answers) == [200] * 12
        assert {pid for _, pid in answers} == old  # both old workers answered theirs
        assert wait_for(lambda: not any(alive(pid) for pid in old), 10)
        assert "killing it" not in running.stderr


def test_connections_open_when_a_tcp_slot_is_removed_are_all_answered(app_dir):
    # SO_REUSEPORT hashes connections over the group's sockets. The removed slot's socket is
    # first taken out of the rotation (a socket filter), its worker takes what waits in its
    # backlog, then drains: it answers the requests of the connections it holds.
    port = free_port()
    connect = lambda: connect_tcp(port)  # noqa: E731
    with serve(app_dir, "--workers", "3", "--bind", f"127.0.0.1:{port}") as running:
        wait_until_serving(running, connect)
        workers_of(running, 3)
        waiting = [connect() for _ in range(60)]  # in every slot, no request sent yet
        running.proc.send_signal(signal.SIGTTOU)
        assert wait_for(lambda: "removing a worker" in running.stderr)
        time.sleep(0.3)
        try:
            for sock in waiting:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answers = [_read_all(sock) for sock in waiting]
        finally:
            for sock in waiting:
                sock.close()
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers), [a[:20] for a in answers]
        survivors = workers_of(running, 2, timeout=10)
        assert pids_answering(connect, 2) == survivors
        assert "cannot steer" not in running.stderr
        for _ in range(40):
            assert _version(connect) == "one"


def _read_all(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


# --- recycling ---------------------------------------------------------------------------------


def test_max_requests_replaces_workers_under_load_without_losing_a_request(app_dir):
    port = free_port()
    connect = lambda: connect_tcp(port)  # noqa: E731
    args = ["--workers", "2", "--max-requests", "300", "--max-requests-jitter", "50"]
    with serve(app_dir, *args, "--bind", f"127.0.0.1:{port}") as running:
        wait_until_serving(running, connect)
        with Load(connect, clients=4) as load:
            assert wait_for(lambda: len(load.pids()) >= 6, 20), (load.pids(), running.stderr)
        assert load.errors == [], (load.errors[:5], running.stderr)
        assert "reached its limit of 3" in running.stderr and "replaced by" in running.stderr
        assert wait_for(lambda: len(children_of(running.pid)) == 2, 8)
        # Each worker goes on serving until its replacement serves: a few more than its limit.
        counts = {}
        for body, n in load.seen.items():
            pid = int(body.split()[0])
            counts[pid] = counts.get(pid, 0) + n
        assert min(counts[pid] for pid in counts if not alive(pid)) >= 300, counts


def test_max_requests_with_one_worker(app_dir):
    port = free_port()
    connect = lambda: connect_tcp(port)  # noqa: E731
    args = ["--max-requests", "50", "--bind", f"127.0.0.1:{port}"]
    with serve(app_dir, *args) as running:
        wait_until_serving(running, connect)
        with Load(connect, clients=2) as load:
            assert wait_for(lambda: len(load.pids()) >= 3, 20), running.stderr
        assert load.errors == []
        assert running.pid not in load.pids()
        assert "1 process" not in running.stderr


def test_worker_lifetime(app_dir):
    port = free_port()
    connect = lambda: connect_tcp(port)  # noqa: E731
    args = ["--workers", "2", "--worker-lifetime", "1", "--bind", f"127.0.0.1:{port}"]
    with serve(app_dir, *args) as running:
        wait_until_serving(running, connect)
        first = workers_of(running, 2)
        with Load(connect, clients=2) as load:
            assert wait_for(lambda: not any(alive(p) for p in first), 8), running.stderr
            keep_loading(load, 0.3)
        assert load.errors == []
        assert "ran 1 s: replacing it" in running.stderr


def test_max_worker_memory(app_dir):
    port = free_port()
    connect = lambda: connect_tcp(port)  # noqa: E731
    args = ["--workers", "2", "--max-worker-memory", "100", "--bind", f"127.0.0.1:{port}"]
    with serve(app_dir, *args) as running:
        wait_until_serving(running, connect)
        first = workers_of(running, 2)
        # Each /grow keeps 40 MiB more in the worker that answers it.
        for _ in range(6):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/grow")
            assert conn.getresponse().status == 200
            conn.close()
        assert wait_for(lambda: not first <= set(children_of(running.pid)), 8), running.stderr
        assert "MB, over 100 MB: replacing it" in running.stderr
        assert wait_for(lambda: len(children_of(running.pid)) == 2, 8)


# --- hung workers ------------------------------------------------------------------------------


def two_workers_with_timeout(app_dir, seconds):
    """``stogie --workers 2 --worker-timeout SECONDS``, serving: ``(running, connect,
    workers)``."""
    return two_workers(app_dir, "--worker-timeout", str(seconds))


def test_a_hung_worker_is_killed_and_replaced_and_what_waited_for_it_is_served(app_dir):
    with two_workers_with_timeout(app_dir, 1) as (running, connect, first):
        hung, other = sorted(first)
        os.kill(hung, signal.SIGSTOP)  # as a deadlocked engine: alive, silent
        stopped_at = time.monotonic()
        # New connections land in both workers' sockets; those in the stopped one's wait
        # in its backlog until its replacement takes them.
        with Load(connect, clients=4, keep_alive=False) as load:
            assert wait_for(lambda: not alive(hung), 5), running.stderr
            killed_after = time.monotonic() - stopped_at
            assert wait_for(lambda: len(set(children_of(running.pid)) - first) == 1, 5)
            keep_loading(load, 0.5)
        assert load.errors == [], (load.errors[:5], running.stderr)
        # Its last heartbeat left up to a quarter second before it stopped.
        assert 0.5 <= killed_after < 3, killed_after
        assert f"worker {hung} sent no heartbeat for 1 s" in running.stderr
        assert "killing it" in running.stderr
        assert alive(other)
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(10) == 0, running.stderr


def test_workers_stopped_with_their_supervisor_are_not_taken_for_hung(app_dir):
    # Ctrl-Z on a terminal stops the whole group; after fg nobody is hung.
    with two_workers_with_timeout(app_dir, 1) as (running, connect, first):
        group = [running.pid, *first]
        for pid in group:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(5)
        for pid in group:
            os.kill(pid, signal.SIGCONT)
        time.sleep(2)
        assert set(children_of(running.pid)) == first, running.stderr
        assert "no heartbeat" not in running.stderr
        assert pids_answering(connect, 2) == first


def test_worker_timeout_zero_never_kills(app_dir):
    with two_workers_with_timeout(app_dir, 0) as (running, _, first):
        hung = min(first)
        os.kill(hung, signal.SIGSTOP)
        try:
            time.sleep(3)
            assert set(children_of(running.pid)) == first
        finally:
            os.kill(hung, signal.SIGCONT)
        assert "no heartbeat" not in running.stderr


def test_a_replacement_that_never_serves_is_killed_and_tried_again(app_dir):
    # A worker that dies is replaced; if the replacement hangs importing the app, it would
    # hold the slot for good. After START_TIMEOUT (2 s here) it is killed and tried again.
    (app_dir / "hangapp.py").write_text(
        textwrap.dedent(
            """
            import os, time
            while os.path.exists(os.path.join(os.path.dirname(__file__), "hang")):
                time.sleep(0.05)
            from rapp import application
            """
        )
    )
    port = free_port()
    connect = lambda: connect_tcp(port)  # noqa: E731
    script = (
        "import sys, stogie._workers.replacing as w; w.START_TIMEOUT = 2.0;"
        " from stogie import cli; sys.exit(cli.main(sys.argv[1:]))"
    )
    args = [sys.executable, "-c", script, "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    with process([*args, "hangapp"], app_dir) as running:
        wait_until_serving(running, connect)
        # The socket takes connections before the workers serve: wait until they do, or the
        # file below makes the first ones hang too.
        assert wait_for(lambda: "serving hangapp" in running.stderr, 10), running.stderr
        first = workers_of(running, 2)
        (app_dir / "hang").write_text("")
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: "did not serve within 2 s: killing it" in running.stderr, 10), (
            running.stderr
        )
        (app_dir / "hang").unlink()
        assert wait_for(lambda: len(set(children_of(running.pid)) - first) == 1, 10), running.stderr
        assert wait_for(lambda: len(pids_answering(connect, 2)) == 2, 10), running.stderr


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"max_requests": -1}, "max_requests must be a whole number of at least 0"),
        ({"max_requests": 1.5}, "max_requests must be a whole number"),
        ({"max_requests_jitter": 5}, "max_requests_jitter needs max_requests"),
        ({"max_worker_memory": "big"}, "max_worker_memory must be a number of at least 0"),
        ({"worker_lifetime": -3}, "worker_lifetime must be a number of at least 0"),
        ({"worker_timeout": "30"}, "worker_timeout must be a number of at least 0"),
        ({"worker_timeout": float("nan")}, "worker_timeout must be a number of at least 0"),
        ({"extra_bind_addrs": ("127.0.0.1", 80)}, "extra_bind_addrs must be a list"),
    ],
)
def test_api_refuses_bad_values_where_they_are_given(kwargs, words):
    with pytest.raises(ValueError, match=words):
        wsgi.Server(("127.0.0.1", 0), lambda e, s: [], **kwargs)


def test_api_reload_needs_worker_processes():
    server = wsgi.Server(("127.0.0.1", 0), lambda e, s: [])
    with pytest.raises(RuntimeError, match="no worker processes"):
        server.reload()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-requests", "-1"], "--max-requests"),
        (["--max-requests-jitter", "10"], "--max-requests-jitter needs --max-requests"),
        (["--max-worker-memory", "lots"], "not a number of megabytes"),
        (["--worker-lifetime", "soon"], "--worker-lifetime"),
        (["--worker-timeout", "-1"], "--worker-timeout"),
    ],
)
def test_cli_refuses_bad_recycling_values(app_dir, args, words):
    proc = subprocess.run(
        stogie(*args, "rapp"), cwd=app_dir, capture_output=True, text=True, timeout=10
    )
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and words in proc.stderr, proc.stderr


def test_cli_workers_that_cannot_import_the_app_is_one_line_and_status_2(app_dir):
    (app_dir / "rapp.py").write_text("import no_such_module_here\n")
    proc = subprocess.run(
        stogie("--workers", "2", "rapp"), cwd=app_dir, capture_output=True, text=True, timeout=10
    )
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.startswith("stogie: ")]
    assert lines == [
        "stogie: cannot import module 'rapp': No module named 'no_such_module_here'"
    ], proc.stderr


API_RELOAD = """
import sys, threading
from stogie import wsgi
from rapp import application

server = wsgi.Server(("127.0.0.1", 0), application, workers=2, max_requests=10**9)
server.prepare()
print(server.bind_addr[1], flush=True)
thread = threading.Thread(target=server.serve)
thread.start()
for line in sys.stdin:
    getattr(server, line.strip())()
    print("done", flush=True)
server.stop()
thread.join(10)
"""


def test_api_reload_add_and_remove_workers_from_another_thread(app_dir):
    (app_dir / "api_reload.py").write_text(API_RELOAD)
    with process([sys.executable, "api_reload.py"], app_dir, stdin=subprocess.PIPE) as running:
        port = int(running.proc.stdout.readline())
        connect = lambda: connect_tcp(port)  # noqa: E731
        old = workers_of(running, 2)

        def call(name):
            running.proc.stdin.write(name + "\n")
            running.proc.stdin.flush()
            assert running.proc.stdout.readline().strip() == "done"

        with Load(connect, clients=2) as load:
            call("reload")
            assert wait_for(lambda: not any(alive(p) for p in old), 10), running.stderr
            call("add_worker")
            workers_of(running, 3)
            call("remove_worker")
            workers_of(running, 2, timeout=10)
        assert load.errors == [], load.errors[:5]
        running.proc.stdin.close()
        assert running.proc.wait(10) == 0, running.stderr


def test_log_lines_say_one_worker_one_request_one_thread_in_the_singular(app_dir):
    port = free_port()
    connect = lambda: connect_tcp(port)  # noqa: E731
    args = ["--bind", f"127.0.0.1:{port}", "--max-requests", "1000", "--threads", "1"]
    with process(stogie(*args, "--shutdown-timeout", "0", "rapp"), app_dir) as running:
        wait_until_serving(running, connect)
        (first,) = workers_of(running, 1)
        assert pids_answering(connect, 1) == {first}  # its one request
        running.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "after answering" in running.stderr, 10), running.stderr
        (second,) = workers_of(running, 1)
        # A worker that cannot stop (stopped itself) is killed once the stop's time is up.
        os.kill(second, signal.SIGSTOP)
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(10) == 0, running.stderr
    err = running.stderr
    assert "(1 thread, TLS off)" in err
    assert "reloading: starting 1 worker\n" in err
    assert "reloaded: 1 worker serving rapp:application; 1 old one draining" in err
    assert f"worker {first} exited with status 0 after answering 1 request\n" in err
    assert "SIGTERM received: stopping 1 worker\n" in err
    assert "1 worker still running 3.0 s after SIGTERM: killing it" in err
