"""The access log and the Prometheus metrics, end to end: real requests over sockets, the
log read back from its file, the metrics scraped over HTTP and read with prometheus_client's
own text parser; through the Python API and the ``stogie`` command (with worker processes)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, raw_request, running, wait_for
from stogie import server, wsgi

COMBINED_LINE = re.compile(
    r"^(?P<h>\S+) - (?P<u>\S+) \[(?P<t>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "
    r'"(?P<r>[^"]*)" (?P<s>\d{3}) (?P<b>\d+|-) "(?P<f>[^"]*)" "(?P<a>[^"]*)"$'
)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/missing":
        start_response("404 Not Found", [("Content-Length", "0")])
        return []
    body = b"hello"
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5"), ("X-Id", "42")]
    )
    return [body]


def read_lines(path, count, timeout=5.0):
    """The first ``count`` lines of the log, once they are written (the writer ticks)."""
    assert wait_for(
        lambda: os.path.exists(path) and open(path).read().count("\n") >= count, timeout
    ), open(path).read() if os.path.exists(path) else "no log file"
    return open(path).read().splitlines()


def get(addr, target=b"/", headers=b"", version=b"HTTP/1.1"):
    req = b"GET " + target + b" " + version + b"\r\nHost: x\r\n" + headers
    return raw_request(addr, req + b"Connection: close\r\n\r\n")


# --- the access log --------------------------------------------------------------------------


def test_access_log_is_off_by_default(tmp_path):
    srv = wsgi.Server(("127.0.0.1", 0), app)
    assert srv.access_log is None
    assert srv.access_log_format == server.ACCESS_LOG_COMBINED


def test_combined_format_lines(tmp_path):
    path = str(tmp_path / "access.log")
    srv = wsgi.Server(("127.0.0.1", 0), app)
    srv.access_log = path
    with running(srv):
        get(srv.bind_addr, b"/a%20b?x=1", b'Referer: http://r/\r\nUser-Agent: t"ester\r\n')
        get(srv.bind_addr, b"/missing", b"Authorization: Basic YWxpY2U6cHc=\r\n")
        raw_request(srv.bind_addr, b"GET / HTTP/1.1\r\n\r\n")  # no Host: the engine's 400
        lines = read_lines(path, 3)
    first, second, refused = (COMBINED_LINE.match(line) for line in lines)
    assert first and second and refused, lines
    assert first["h"] == "127.0.0.1" and first["u"] == "-"
    assert first["r"] == "GET /a%20b?x=1 HTTP/1.1"
    assert (first["s"], first["b"]) == ("200", "5")
    assert first["f"] == "http://r/" and first["a"] == "t\\x22ester"
    assert (second["u"], second["s"], second["b"]) == ("alice", "404", "-")
    # A refusal by the engine itself is logged too, with its status.
    assert (refused["r"], refused["s"]) == ("GET / HTTP/1.1", "400")


def test_custom_format_and_json(tmp_path):
    path = str(tmp_path / "access.log")
    srv = wsgi.Server(("127.0.0.1", 0), app)
    srv.access_log = path
    srv.access_log_format = "%(m)s %(U)s %(q)s %(H)s %(s)s %(B)s %(D)s %(p)s %({x-id}o)s %({x-a}i)s"
    with running(srv):
        get(srv.bind_addr, b"/p?q=1", b"X-A: v\r\n", version=b"HTTP/1.0")
        (line,) = read_lines(path, 1)
        method, path_, query, proto, status, size, micros, pid, xid, xa = line.split(" ")
        assert (method, path_, query, proto, status, size) == (
            "GET",
            "/p",
            "q=1",
            "HTTP/1.0",
            "200",
            "5",
        )
        assert int(micros) > 0 and int(pid) == os.getpid()
        assert (xid, xa) == ("42", "v")
        # Changed on the running server: the next request has the new format.
        srv.access_log_format = "json"
        get(srv.bind_addr, b"/j")
        entry = json.loads(read_lines(path, 2)[1])
    assert entry["path"] == "/j" and entry["status"] == 200 and entry["bytes"] == 5
    assert entry["remote_addr"] == "127.0.0.1" and entry["pid"] == os.getpid()
    assert entry["duration_us"] >= 0 and re.match(r"\d{4}-\d\d-\d\dT", entry["time"])


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("access_log_format", "%(zz)s", "not an access log atom"),
        ("access_log_format", "%(h)", "must end with )s"),
        ("access_log_format", "%({x}e)s", "not supported"),
        ("access_log", "/nonexistent-dir/sub/access.log", "/nonexistent-dir/sub/access.log"),
        ("access_log", 42, "file path"),
    ],
)
def test_bad_access_log_settings_are_clear_errors(tmp_path, name, value, words):
    srv = wsgi.Server(("127.0.0.1", 0), app)
    srv.access_log = str(tmp_path / "a.log")
    with running(srv):
        with pytest.raises((ValueError, OSError)) as info:
            setattr(srv, name, value)
        assert words in str(info.value)
        # The server keeps its settings and goes on logging.
        get(srv.bind_addr)
        assert read_lines(srv.access_log, 1)


def test_a_slow_log_never_holds_a_response(tmp_path):
    # The log goes to a pipe nobody reads: once the pipe is full the writer blocks, yet
    # requests keep being answered, and the lines past the buffer are dropped and counted.
    read_end, write_end = os.pipe()
    fifo = f"/proc/self/fd/{write_end}"
    srv = wsgi.Server(("127.0.0.1", 0), app)
    srv.access_log = fifo
    srv.access_log_format = "%(r)s " + "x" * 2000
    try:
        with running(srv):
            started = time.monotonic()
            for _ in range(300):
                assert get(srv.bind_addr).startswith(b"HTTP/1.1 200")
            assert time.monotonic() - started < 20
    finally:
        os.close(read_end)
        os.close(write_end)


CLI_APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


def start_cli(tmp_path, *args):
    (tmp_path / "opsapp.py").write_text(textwrap.dedent(CLI_APP))
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stogie", "--bind", f"127.0.0.1:{port}", *args, "opsapp"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )

    def serving():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    assert wait_for(serving, 15), proc.stderr.read1() if proc.poll() is not None else "slow"
    return proc, ("127.0.0.1", port)


def stop_cli(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigusr1_reopens_the_log_after_logrotate(tmp_path, workers):
    path = tmp_path / "access.log"
    proc, addr = start_cli(
        tmp_path, "--access-log", str(path), "--workers", str(workers), "--threads", "2"
    )
    try:
        for _ in range(4):
            assert get(addr).startswith(b"HTTP/1.1 200")
        read_lines(path, 4)
        # What logrotate does: move the file away, then signal.
        os.rename(path, tmp_path / "access.log.1")
        proc.send_signal(signal.SIGUSR1)
        assert wait_for(path.exists, 5), "the log was not reopened"
        # Every worker reopens on its own signal: give the last of them a moment (lines
        # written before it did go to the rotated file, as with any server and logrotate).
        time.sleep(0.5)
        for _ in range(4):
            assert get(addr).startswith(b"HTTP/1.1 200")
        assert len(read_lines(path, 4)) == 4
        assert len(read_lines(tmp_path / "access.log.1", 4)) == 4
    finally:
        assert stop_cli(proc) == 0


def test_access_log_to_stdout(tmp_path):
    proc, addr = start_cli(tmp_path, "--access-log", "-", "--access-log-format", "%(s)s %(U)s")
    try:
        get(addr, b"/out")
    finally:
        stop_cli(proc)
    assert "200 /out" in proc.stdout.read().decode().splitlines()


# --- metrics ---------------------------------------------------------------------------------


def scrape(addr):
    with urllib.request.urlopen(f"http://{addr[0]}:{addr[1]}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(samples, name, **labels):
    """The sum of the series of ``name`` whose labels include ``labels`` (a series has more,
    such as ``protocol``, than a test asks about)."""
    found = [
        v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have)
    ]
    assert found, (name, labels)
    return sum(found)


def test_metrics_endpoint_counts_what_the_engine_saw():
    srv = wsgi.Server(("127.0.0.1", 0), app, numthreads=3)
    srv.metrics_bind = "127.0.0.1:0"
    with running(srv):
        maddr = srv.metrics_bind_addr
        assert maddr[1] not in (0, srv.bind_addr[1]), "its own listener"
        for _ in range(3):
            get(srv.bind_addr)
        get(srv.bind_addr, b"/missing")
        raw_request(srv.bind_addr, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n")
        raw_request(srv.bind_addr, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
        idle = socket.create_connection(srv.bind_addr)
        try:
            assert wait_for(lambda: sample(scrape(maddr), "stogie_connections_open") == 1)
            s = scrape(maddr)
        finally:
            idle.close()
        # The app's port never answers for the metrics: /metrics there is the app's.
        assert get(srv.bind_addr, b"/metrics").endswith(b"\r\n\r\nhello")
    assert sample(s, "stogie_requests_total", method="GET", status="2xx") == 3
    assert sample(s, "stogie_requests_total", method="GET", status="4xx") == 1
    # The engine's own refusals: a bad Content-Length, a request line over its limit.
    assert sample(s, "stogie_refused_total", reason="parse_error") == 1
    assert sample(s, "stogie_refused_total", reason="limit") == 1
    assert sample(s, "stogie_requests_total", method="other", status="4xx") >= 1
    assert sample(s, "stogie_request_duration_seconds_count") >= 4
    assert sample(s, "stogie_request_duration_seconds_bucket", le="+Inf") >= 4
    assert sample(s, "stogie_request_bytes_total") > 8000
    assert sample(s, "stogie_response_bytes_total") > 0
    assert sample(s, "stogie_threads") == 3
    assert sample(s, "stogie_threads_busy") == 0
    assert sample(s, "stogie_requests_queued") == 0
    assert sample(s, "stogie_connections_idle") == 1
    # Cheroot's stats read the same counters.
    assert srv.metrics().startswith("# HELP")


def test_stats_read_the_metrics_counters():
    srv = wsgi.Server(("127.0.0.1", 0), app)
    srv.metrics_bind = ("127.0.0.1", 0)
    with running(srv):
        srv.stats["Enabled"] = True
        for _ in range(5):
            get(srv.bind_addr)
        requests = srv.stats["Requests"](srv.stats)
        s = scrape(srv.metrics_bind_addr)
    assert requests == 5
    assert sample(s, "stogie_requests_total", method="GET", status="2xx") == 5


def test_busy_threads_and_the_queue_show():
    gate = __import__("threading").Event()

    def slow(environ, start_response):
        gate.wait(10)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    srv = wsgi.Server(("127.0.0.1", 0), slow, numthreads=1, max=1)
    srv.metrics_bind = "127.0.0.1:0"
    socks = []
    with running(srv):
        try:
            for _ in range(3):
                sock = socket.create_connection(srv.bind_addr)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                socks.append(sock)

            def loaded():
                s = scrape(srv.metrics_bind_addr)
                return (
                    sample(s, "stogie_threads_busy") == 1
                    and sample(s, "stogie_requests_queued") == 2
                )

            assert wait_for(loaded, 5)
        finally:
            gate.set()
            for sock in socks:
                sock.close()


@pytest.mark.parametrize("bind", ["nonsense", "127.0.0.1:99999", ("127.0.0.1",)])
def test_bad_metrics_address_is_a_clear_error(bind):
    srv = wsgi.Server(("127.0.0.1", 0), app)
    srv.metrics_bind = bind
    with pytest.raises(ValueError, match="metrics_bind"):
        srv.prepare()
    assert not srv.ready


def test_metrics_port_in_use_is_a_clear_error():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    srv = wsgi.Server(("127.0.0.1", 0), app)
    srv.metrics_bind = "127.0.0.1:%d" % taken.getsockname()[1]
    try:
        with pytest.raises(OSError, match="metrics"):
            srv.prepare()
        assert not srv.ready
    finally:
        taken.close()


def test_metrics_summed_over_worker_processes(tmp_path):
    mport = free_port()
    proc, addr = start_cli(
        tmp_path, "--workers", "2", "--threads", "2", "--metrics", f"127.0.0.1:{mport}"
    )
    try:
        for _ in range(20):
            assert get(addr).startswith(b"HTTP/1.1 200")
        s = scrape(("127.0.0.1", mport))
        assert sample(s, "stogie_requests_total", method="GET", status="2xx") == 20
        assert sample(s, "stogie_workers") == 2
        assert sample(s, "stogie_threads") == 4
        per_worker = [v for (name, _), v in s.items() if name == "stogie_worker_requests_total"]
        assert len(per_worker) == 2 and sum(per_worker) == 20
        # A worker that dies is replaced; its counts stay in the sums.
        pids = [
            dict(labels)["pid"] for (name, labels) in s if name == "stogie_worker_requests_total"
        ]
        os.kill(int(pids[0]), signal.SIGKILL)

        def replaced():
            s = scrape(("127.0.0.1", mport))
            return (
                sample(s, "stogie_worker_restarts_total") == 1 and sample(s, "stogie_workers") == 2
            )

        assert wait_for(replaced, 15)
        s = scrape(("127.0.0.1", mport))
        assert sample(s, "stogie_requests_total", method="GET", status="2xx") == 20
    finally:
        assert stop_cli(proc) == 0
