"""The ``stogie`` command (``python -m stogie`` and the console script), run as a user runs
it: in a subprocess, reached over real sockets, stopped with signals."""

import argparse
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import stogie
from conftest import Proc, connect_tcp, connect_unix, free_port, wait_for, wait_until_serving

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")

CONSOLE_SCRIPT = Path(sys.executable).with_name("stogie")
COMMANDS = {
    "module": [sys.executable, "-m", "stogie"],
    "script": [str(CONSOLE_SCRIPT)],
}

APP_MODULE = """
import os
import time


def application(environ, start_response):
    body = b"application says hi"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def other(environ, start_response):
    body = ("other|%s|%s" % (environ["SERVER_NAME"], os.getcwd())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def slow(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        open(os.environ["STOGIE_TEST_MARKER"], "w").close()
        time.sleep(1.5)
    body = b"slow and complete"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


not_callable = {"a": "dict"}
"""


@pytest.fixture
def app_dir(tmp_path):
    """A directory with ``cliapp.py`` in it (a fresh module name per test)."""
    (tmp_path / "cliapp.py").write_text(textwrap.dedent(APP_MODULE))
    return tmp_path


class Running(Proc):
    """A ``stogie`` process and what it wrote."""

    def __init__(self, proc, out_path, err_path):
        super().__init__(proc, err_path)
        self.out_path = out_path

    @property
    def stdout(self):
        return Path(self.out_path).read_text()


@contextlib.contextmanager
def stogie_process(args, tmp_path, cwd=None, command="module", env=None):
    """Start ``stogie args``; always terminated (then killed) on exit."""
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full_env.pop("PYTHONPATH", None)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            COMMANDS[command] + list(args),
            cwd=cwd or tmp_path,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=full_env,
        )
    running = Running(proc, out_path, err_path)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def get(connect, path="/", headers=None, method="GET", body=None):
    """One request over ``connect()``; returns (status, headers dict, body)."""
    sock = connect()
    conn = http.client.HTTPConnection("localhost", timeout=5)
    conn.sock = sock
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def run_to_exit(args, tmp_path, cwd=None, command="module", timeout=8):
    """Run ``stogie args`` expecting it to exit on its own: (code, stdout, stderr)."""
    proc = subprocess.run(
        COMMANDS[command] + list(args),
        cwd=cwd or tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout, proc.stderr


# --- serving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["module", "script"])
def test_demo_page_without_an_app(tmp_path, command):
    if command == "script" and not CONSOLE_SCRIPT.exists():
        pytest.skip("the stogie console script is not installed in this environment")
    port = free_port()
    with stogie_process(["--bind", f"127.0.0.1:{port}"], tmp_path, command=command) as running:
        connect = lambda: connect_tcp(port)  # noqa: E731
        wait_until_serving(running, connect)
        status, headers, body = get(
            connect, "/some/path?q=question", headers={"X-Probe": "probe-value-42"}
        )
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        page = body.decode()
        assert stogie.__version__ in page
        assert "/some/path" in page
        assert "q=question" in page
        assert "probe-value-42" in page
        assert "GET" in page
        # the form posts back and the demo echoes its fields
        status, _, body = get(
            connect,
            "/",
            method="POST",
            body=b"name=Ada&message=hello+there",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200
        assert "Ada" in body.decode() and "hello there" in body.decode()
    assert f"127.0.0.1:{port}" in running.stderr + running.stdout


@pytest.mark.parametrize("command", ["module", "script"])
def test_module_and_attr_from_the_current_directory(app_dir, command):
    if command == "script" and not CONSOLE_SCRIPT.exists():
        pytest.skip("the stogie console script is not installed in this environment")
    port = free_port()
    args = ["--bind", f"127.0.0.1:{port}", "--server-name", "cli.example", "cliapp:other"]
    with stogie_process(args, app_dir, cwd=app_dir, command=command) as running:
        connect = lambda: connect_tcp(port)  # noqa: E731
        wait_until_serving(running, connect)
        status, _, body = get(connect)
        assert status == 200
        assert body.decode() == f"other|cli.example|{app_dir}"


def test_module_without_attr_serves_application(app_dir):
    port = free_port()
    with stogie_process(["--bind", f"127.0.0.1:{port}", "cliapp"], app_dir, cwd=app_dir) as r:
        connect = lambda: connect_tcp(port)  # noqa: E731
        wait_until_serving(r, connect)
        assert get(connect)[::2] == (200, b"application says hi")


def test_chdir(app_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    port = free_port()
    args = ["--chdir", str(app_dir), "--bind", f"127.0.0.1:{port}", "cliapp:other"]
    with stogie_process(args, elsewhere, cwd=elsewhere) as running:
        connect = lambda: connect_tcp(port)  # noqa: E731
        wait_until_serving(running, connect)
        status, _, body = get(connect)
        assert status == 200
        assert body.decode().endswith(f"|{app_dir}")


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_bind_ipv6(app_dir):
    port = free_port()
    with stogie_process(["--bind", f"[::1]:{port}", "cliapp"], app_dir, cwd=app_dir) as running:
        connect = lambda: socket.create_connection(("::1", port), timeout=5)  # noqa: E731
        wait_until_serving(running, connect)
        assert get(connect)[::2] == (200, b"application says hi")
    assert f"[::1]:{port}" in running.stderr


def test_bind_unix_socket_path(app_dir):
    path = f"/tmp/stogie-cli-{uuid.uuid4().hex[:12]}.sock"
    with stogie_process(["--bind", path, "cliapp"], app_dir, cwd=app_dir) as running:
        connect = lambda: connect_unix(path)  # noqa: E731
        wait_until_serving(running, connect)
        assert get(connect)[::2] == (200, b"application says hi")
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(8) == 0
    assert not os.path.exists(path), "the socket file is removed on exit"


def test_bind_abstract_socket(app_dir):
    name = f"stogie-cli-{uuid.uuid4().hex[:12]}"
    with stogie_process(["--bind", f"@{name}", "cliapp"], app_dir, cwd=app_dir) as running:
        connect = lambda: connect_unix("\0" + name)  # noqa: E731
        wait_until_serving(running, connect)
        assert get(connect)[::2] == (200, b"application says hi")


@pytest.mark.parametrize("relative", [True, False], ids=["bare-name", "path"])
def test_bind_without_a_port_is_a_unix_socket_and_the_startup_line_says_so(app_dir, relative):
    # Cheroot's rule: an address without a port is a UNIX socket path. `--bind localhost`
    # serves a socket file named "localhost", which the start-up line must point out.
    path = app_dir / "localhost"
    bind = "localhost" if relative else str(path)
    with stogie_process(["--bind", bind, "cliapp"], app_dir, cwd=app_dir) as running:
        connect = lambda: connect_unix(path)  # noqa: E731
        wait_until_serving(running, connect)
        assert get(connect)[::2] == (200, b"application says hi")
        assert wait_for(lambda: "serving cliapp" in running.stderr), running.stderr
    line = next(line for line in running.stderr.splitlines() if "serving cliapp" in line)
    hint = "(a UNIX socket; give HOST:PORT for TCP)"
    if relative:
        assert "on unix:localhost (a UNIX socket; give HOST:PORT for TCP)" in line, line
    else:
        assert hint not in line, line


@pytest.mark.parametrize(
    ("bind", "suggestion"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("https://0.0.0.0:8443/", "0.0.0.0:8443"),
        ("unix:/run/app.sock", "/run/app.sock"),
    ],
)
def test_error_bind_with_a_scheme_says_to_drop_it(app_dir, bind, suggestion):
    result = run_to_exit(["--bind", bind, "cliapp"], app_dir, cwd=app_dir)
    assert_one_line_error(*result, "drop the scheme", f"as in --bind {suggestion}")


def test_options_reach_the_server(app_dir):
    port = free_port()
    args = [
        "--bind",
        f"127.0.0.1:{port}",
        "--threads",
        "3",
        "--max-threads",
        "6",
        "--timeout",
        "1",
        "--shutdown-timeout",
        "2",
        "--request-queue-size",
        "20",
        "--accepted-queue-size",
        "50",
        "--accepted-queue-timeout",
        "3",
        "--log-level",
        "warning",
        "cliapp",
    ]
    with stogie_process(args, app_dir, cwd=app_dir) as running:
        connect = lambda: connect_tcp(port)  # noqa: E731
        wait_until_serving(running, connect)
        assert get(connect)[0] == 200
        # --timeout 1: a silent connection is closed after about a second
        with connect() as sock:
            started = time.monotonic()
            assert sock.recv(10) == b""
            assert time.monotonic() - started < 3


def test_version_and_help(tmp_path):
    code, out, err = run_to_exit(["--version"], tmp_path)
    assert code == 0
    assert stogie.__version__ in out + err
    code, out, err = run_to_exit(["--help"], tmp_path)
    assert code == 0
    for option in (
        "--bind",
        "--chdir",
        "--server-name",
        "--threads",
        "--max-threads",
        "--timeout",
        "--shutdown-timeout",
        "--request-queue-size",
        "--accepted-queue-size",
        "--accepted-queue-timeout",
        "--log-level",
    ):
        assert option in out, option


TEXT_APPS = """
def text(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return "Hello, World!"


class Listing:
    def __call__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["Hello, World!"]


listing = Listing()


def nothing(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
"""


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("textapp:text", "the WSGI application textapp.text returned a str;"),
        (
            "textapp:listing",
            "the WSGI application (an instance of textapp.Listing) returned a list holding a str;",
        ),
        ("textapp:nothing", "the WSGI application textapp.nothing returned None;"),
    ],
)
def test_an_app_that_returns_no_bytes_is_named_with_what_it_returned(app_dir, spec, said):
    # A 500 as ever, and one line that names the app and what it gave: a traceback would
    # point into stogie only (the app raised nothing).
    (app_dir / "textapp.py").write_text(TEXT_APPS)
    port = free_port()
    with stogie_process(["--bind", f"127.0.0.1:{port}", spec], app_dir, cwd=app_dir) as running:
        connect = lambda: connect_tcp(port)  # noqa: E731
        wait_until_serving(running, connect)
        assert get(connect)[0] == 500
        assert wait_for(lambda: said in running.stderr), running.stderr
    line = next(line for line in running.stderr.splitlines() if said in line)
    assert "ERROR stogie.error: " in line
    assert line.endswith("; it must return an iterable of bytes"), line
    assert "Traceback" not in running.stderr


# --- start-up errors: one line on stderr, exit status 2 ---------------------------------------


def assert_one_line_error(code, out, err, *needles):
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].strip()
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in err


def test_error_bad_module(app_dir):
    port = free_port()
    result = run_to_exit(["--bind", f"127.0.0.1:{port}", "no_such_module_xyz"], app_dir)
    assert_one_line_error(*result, "no_such_module_xyz")


def test_error_missing_attribute(app_dir):
    port = free_port()
    result = run_to_exit(["--bind", f"127.0.0.1:{port}", "cliapp:nope"], app_dir, cwd=app_dir)
    assert_one_line_error(*result, "nope")


def test_error_not_callable(app_dir):
    port = free_port()
    args = ["--bind", f"127.0.0.1:{port}", "cliapp:not_callable"]
    result = run_to_exit(args, app_dir, cwd=app_dir)
    assert_one_line_error(*result, "not_callable", "callable")


def test_error_port_in_use(app_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_to_exit(["--bind", f"127.0.0.1:{port}", "cliapp"], app_dir, cwd=app_dir)
    assert_one_line_error(*result, str(port))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_error_metrics_address_in_use_names_only_the_metrics_address(app_dir, workers):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics = "127.0.0.1:%d" % taken.getsockname()[1]
        args = ["--bind", f"127.0.0.1:{port}", "--workers", workers, "--metrics", metrics]
        code, _, err = run_to_exit([*args, "cliapp"], app_dir, cwd=app_dir)
    assert code == 2, err
    last = err.splitlines()[-1]
    assert last == f"stogie: cannot listen for metrics on {metrics}: Address already in use", err
    assert "Traceback" not in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_error_access_log_that_cannot_be_opened_names_only_the_access_log(app_dir, workers):
    log = app_dir / "no" / "such" / "access.log"
    args = ["--bind", f"127.0.0.1:{free_port()}", "--workers", workers, "--access-log", str(log)]
    code, _, err = run_to_exit([*args, "cliapp"], app_dir, cwd=app_dir)
    assert code == 2, err
    assert err.splitlines()[-1] == (
        f"stogie: cannot open the access log {log}: No such file or directory"
    ), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "bind", ["127.0.0.1:http", "127.0.0.1:99999", "::1:8080", "[::1]8080", "8080", "bad host:80"]
)
def test_error_bad_bind(app_dir, bind):
    result = run_to_exit(["--bind", bind, "cliapp"], app_dir, cwd=app_dir)
    assert_one_line_error(*result, "bind")


def test_error_bad_option_value(app_dir):
    result = run_to_exit(["--threads", "many", "cliapp"], app_dir, cwd=app_dir)
    assert_one_line_error(*result, "many")


def test_error_mistyped_option_is_named_with_the_closest_one(app_dir):
    result = run_to_exit(["--bnd", "127.0.0.1:8000", "cliapp"], app_dir, cwd=app_dir)
    assert_one_line_error(*result, "unknown option --bnd; did you mean --bind?")
    assert "cliapp" not in result[2]


def test_gunicorns_short_options_b_and_w_but_not_t(app_dir):
    # -t is gunicorn's --timeout (a worker's), which is not Cheroot's --timeout (a client's).
    assert_one_line_error(*run_to_exit(["-t", "30", "cliapp"], app_dir), "unknown option -t")
    port = free_port()
    args = ["-b", f"127.0.0.1:{port}", "-w", "2", "cliapp"]
    with stogie_process(args, app_dir, cwd=app_dir) as running:
        connect = lambda: connect_tcp(port)  # noqa: E731
        wait_until_serving(running, connect)
        assert get(connect)[::2] == (200, b"application says hi")
        assert wait_for(lambda: "serving cliapp" in running.stderr), running.stderr
    assert f"on http://127.0.0.1:{port} (2 workers, 10 threads each" in running.stderr


def test_error_unknown_host(app_dir):
    result = run_to_exit(["--bind", "no-such-host.invalid:8080", "cliapp"], app_dir, cwd=app_dir)
    assert_one_line_error(*result, "no-such-host.invalid")


# --- stopping --------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully_after_the_request_in_flight(app_dir, signum):
    port = free_port()
    marker = app_dir / "entered"
    args = ["--bind", f"127.0.0.1:{port}", "--shutdown-timeout", "5", "cliapp:slow"]
    env = {"STOGIE_TEST_MARKER": str(marker)}
    with stogie_process(args, app_dir, cwd=app_dir, env=env) as running:
        connect = lambda: connect_tcp(port)  # noqa: E731
        wait_until_serving(running, connect)
        results = []
        client = threading.Thread(target=lambda: results.append(get(connect, "/slow")))
        client.start()
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), "the slow request never reached the app"
        running.proc.send_signal(signum)
        client.join(8)
        assert results and results[0][0] == 200
        assert results[0][2] == b"slow and complete"
        assert running.proc.wait(8) == 0, running.stderr
        # and nothing listens any more
        with pytest.raises(ConnectionRefusedError):
            connect().close()
    assert "Traceback" not in running.stderr


def test_sigterm_with_an_idle_keepalive_client_exits_promptly(app_dir):
    port = free_port()
    args = ["--bind", f"127.0.0.1:{port}", "--shutdown-timeout", "5", "cliapp"]
    with stogie_process(args, app_dir, cwd=app_dir) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"application says hi"
            started = time.monotonic()
            running.proc.send_signal(signal.SIGTERM)
            assert running.proc.wait(8) == 0, running.stderr
            # nothing was in flight: no waiting out the shutdown timeout
            assert time.monotonic() - started < 3
        finally:
            conn.close()


# --- Cheroot's command-line API, for code that imports it --------------------------------


@pytest.mark.parametrize(
    ("text", "bind_addr"),
    [
        ("192.168.1.1:80", ("192.168.1.1", 80)),
        ("[::1]:8000", ("::1", 8000)),
        ("localhost:5000", ("localhost", 5000)),
        ("foo@bar:5000", ("bar", 5000)),
        ("foo", ("foo", None)),
        ("/tmp/app.sock", "/tmp/app.sock"),
        ("@name", "\0name"),
    ],
)
def test_cheroots_bind_parsing_keeps_cheroots_results(text, bind_addr):
    # parse_wsgi_bind_addr is Cheroot's function, lax results and all; the `stogie`
    # command reads --bind with its own stricter parser (see test_error_bad_bind).
    from stogie import cli

    assert cli.parse_wsgi_bind_addr(text) == bind_addr
    location = cli.parse_wsgi_bind_location(text)
    assert isinstance(location, cli.BindLocation)
    assert location.bind_addr == bind_addr


def test_cheroots_application_classes(tmp_path, monkeypatch):
    from stogie import cli, server, wsgi

    name = f"cheroot_cli_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from stogie import server

            def application(environ, start_response):
                start_response("200 OK", [])
                return [b""]

            class Hello(server.Gateway):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = cli.Application.resolve(name)
    assert isinstance(app, cli.Application) and callable(app.wsgi_app)
    args = argparse.Namespace(bind_addr=("127.0.0.1", 0), numthreads=3, max=None)
    srv = app.server(args)
    assert isinstance(srv, wsgi.Server) and srv.numthreads == 3
    assert srv.bind_addr == ("127.0.0.1", 0)

    gateway = cli.Application.resolve(f"{name}:Hello")
    assert isinstance(gateway, cli.GatewayYo)
    srv = gateway.server(args)
    assert type(srv) is server.HTTPServer and srv.gateway is gateway.gateway
    assert srv.requests.min == 3

    with pytest.raises(TypeError, match="callable"):
        cli.Application(42)
