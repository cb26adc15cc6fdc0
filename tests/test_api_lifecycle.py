"""Cheroot's names and signatures, the server lifecycle (prepare/serve/start/stop/interrupt)
and the error log, end to end over real sockets."""

import errno
import http.client
import inspect
import logging
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import connect_unix, hello_app, http_get, plain_signature, running, wait_for
from stogie import errors, server, wsgi


def refused(addr):
    """Whether a TCP connection to ``addr`` is refused (nobody listens)."""
    try:
        with socket.create_connection(addr, timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(100) == b""
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def call_in_thread(fn):
    """Start ``fn()`` in a daemon thread: ``(thread, outcome)``, where ``outcome`` gets
    ``"returned"`` or the exception ``fn`` raised."""
    outcome = []

    def run():
        try:
            fn()
            outcome.append("returned")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# --- names and signatures ------------------------------------------------------------------

# Cheroot's parameters in Cheroot's order, then stogie's own, keyword-only.
WSGI_SERVER_SIGNATURE = (
    "(bind_addr, wsgi_app, numthreads=10, server_name=None, max=-1, request_queue_size=5,"
    " timeout=10, shutdown_timeout=5, accepted_queue_size=-1, accepted_queue_timeout=10,"
    " peercreds_enabled=False, peercreds_resolve_enabled=False, reuse_port=False, *, workers=1,"
    " extra_bind_addrs=(), max_requests=0, max_requests_jitter=0, max_worker_memory=0,"
    " worker_lifetime=0, worker_timeout=30)"
)
HTTP_SERVER_SIGNATURE = (
    "(bind_addr, gateway, minthreads=10, maxthreads=-1, server_name=None,"
    " peercreds_enabled=False, peercreds_resolve_enabled=False, reuse_port=False)"
)


def test_wsgi_names_and_signatures():
    assert str(plain_signature(wsgi.Server)) == WSGI_SERVER_SIGNATURE
    assert wsgi.WSGIServer is wsgi.Server
    assert wsgi.WSGIGateway is wsgi.Gateway
    assert wsgi.WSGIGateway_10 is wsgi.Gateway_10
    assert wsgi.WSGIGateway_u0 is wsgi.Gateway_u0
    assert wsgi.WSGIPathInfoDispatcher is wsgi.PathInfoDispatcher
    assert issubclass(wsgi.CherryPyWSGIServer, wsgi.Server)
    assert issubclass(wsgi.Server, server.HTTPServer)
    assert issubclass(wsgi.Gateway, server.Gateway)
    assert issubclass(wsgi.Gateway_10, wsgi.Gateway)
    assert issubclass(wsgi.Gateway_u0, wsgi.Gateway_10)
    assert wsgi.Gateway_10.version == (1, 0)
    assert wsgi.Gateway_u0.version == ("u", 0)
    for gw in (wsgi.Gateway, wsgi.Gateway_10, wsgi.Gateway_u0, server.Gateway):
        assert str(plain_signature(gw)) == "(req)"
    assert str(plain_signature(wsgi.PathInfoDispatcher)) == "(apps)"


def test_server_names_and_signatures():
    assert str(plain_signature(server.HTTPServer)) == HTTP_SERVER_SIGNATURE
    for name, sig in [
        ("prepare", "(self)"),
        ("serve", "(self)"),
        ("start", "(self)"),
        ("safe_start", "(self)"),
        ("stop", "(self)"),
        ("clear_stats", "(self)"),
        ("runtime", "(self)"),
        ("error_log", "(self, msg='', level=20, traceback=False)"),
    ]:
        assert str(plain_signature(getattr(server.HTTPServer, name))) == sig, name
    s = wsgi.Server(("127.0.0.1", 0), hello_app)
    assert (s.numthreads, s.requests.min, s.requests.max) == (10, 10, -1)
    assert (s.request_queue_size, s.timeout, s.shutdown_timeout) == (5, 10, 5)
    assert (s.requests.accepted_queue_size, s.requests.accepted_queue_timeout) == (-1, 10)
    assert s.server_name == s.version and s.version.startswith("Stogie/")
    # Module names that CherryPy reads.
    assert b"Accept-Encoding" in server.comma_separated_headers
    assert s.socket is None  # the listening socket, once prepared
    assert (s.ready, s.interrupt, s.ssl_adapter) == (False, None, None)
    assert (s.max_request_header_size, s.max_request_body_size, s.nodelay) == (0, 0, True)
    assert s.protocol == "HTTP/1.1"


def test_errors_names():
    for exc in (errors.MaxSizeExceeded, errors.NoSSLError, errors.FatalSSLAlert):
        assert issubclass(exc, Exception)
    assert str(plain_signature(errors.plat_specific_errors)) == "(*errnames)"
    assert errors.plat_specific_errors("EPIPE", "NO_SUCH_ERRNO_NAME") == [errno.EPIPE]
    assert sorted(errors.plat_specific_errors("EPIPE", "ECONNRESET")) == sorted(
        [errno.EPIPE, errno.ECONNRESET]
    )
    assert errno.EPIPE in errors.socket_errors_to_ignore
    assert errno.EAGAIN in errors.socket_errors_nonblocking
    assert errno.EPIPE in errors.acceptable_sock_shutdown_error_codes
    assert errors.acceptable_sock_shutdown_exceptions == (BrokenPipeError, ConnectionResetError)


def assert_extends(ours, theirs, name):
    """``ours`` is ``theirs`` plus keyword-only parameters with defaults: any call that
    Cheroot accepts means the same here."""
    cheroot_params = list(theirs.parameters.values())
    own = list(ours.parameters.values())
    assert own[: len(cheroot_params)] == cheroot_params, name
    for extra in own[len(cheroot_params) :]:
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY, (name, extra)
        assert extra.default is not inspect.Parameter.empty, (name, extra)


def test_signatures_match_installed_cheroot():
    cheroot_wsgi = pytest.importorskip("cheroot.wsgi")
    cheroot_server = pytest.importorskip("cheroot.server")
    cheroot_errors = pytest.importorskip("cheroot.errors")
    for name in [
        "Server",
        "Gateway",
        "Gateway_10",
        "Gateway_u0",
        "PathInfoDispatcher",
        "WSGIServer",
        "WSGIGateway",
        "WSGIGateway_10",
        "WSGIGateway_u0",
        "WSGIPathInfoDispatcher",
    ]:
        ours, theirs = getattr(wsgi, name), getattr(cheroot_wsgi, name)
        assert_extends(plain_signature(ours), inspect.signature(theirs), name)
    for name in ["HTTPServer", "Gateway"]:
        ours, theirs = getattr(server, name), getattr(cheroot_server, name)
        assert plain_signature(ours) == inspect.signature(theirs), name
    public = [
        n
        for n, v in vars(cheroot_server.HTTPServer).items()
        if not n.startswith("_") and inspect.isfunction(v)
    ]
    # Methods that only make sense around Cheroot's Python sockets are left out.
    socket_plumbing = {"bind_socket", "bind_unix_socket", "prepare_socket", "process_conn"}
    socket_plumbing |= {"put_conn"}
    for name in sorted(set(public) - socket_plumbing):
        ours = getattr(server.HTTPServer, name)
        theirs = getattr(cheroot_server.HTTPServer, name)
        assert plain_signature(ours) == inspect.signature(theirs), name
    for name in ["MaxSizeExceeded", "NoSSLError", "FatalSSLAlert", "plat_specific_errors"]:
        assert hasattr(errors, name), name
    assert plain_signature(errors.plat_specific_errors) == inspect.signature(
        cheroot_errors.plat_specific_errors
    )


# --- lifecycle -----------------------------------------------------------------------------


def test_prepare_then_serve_in_a_thread():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    assert srv.ready is False
    srv.prepare()
    try:
        assert srv.ready is True
        host, port = srv.bind_addr
        assert host == "127.0.0.1" and isinstance(port, int) and port > 0
        thread = threading.Thread(target=srv.serve, daemon=True)
        thread.start()
        assert http_get(srv.bind_addr) == (200, b"Hello, World!")
    finally:
        srv.stop()
    assert srv.ready is False
    thread.join(5)
    assert not thread.is_alive()
    assert refused(srv.bind_addr)


def test_start_in_a_thread():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    thread = threading.Thread(target=srv.start, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: srv.ready)
        assert srv.bind_addr[1] > 0
        assert http_get(srv.bind_addr) == (200, b"Hello, World!")
    finally:
        srv.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert srv.ready is False


def test_safe_start_returns_after_stop():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    thread, outcome = call_in_thread(srv.safe_start)
    assert wait_for(lambda: srv.ready)
    assert http_get(srv.bind_addr)[0] == 200
    srv.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert outcome == ["returned"]


def test_safe_start_reraises_interrupt():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    thread, outcome = call_in_thread(srv.safe_start)
    assert wait_for(lambda: srv.ready)
    interrupt = KeyboardInterrupt()
    srv.interrupt = interrupt
    thread.join(5)
    assert not thread.is_alive()
    assert len(outcome) == 1 and outcome[0] is interrupt
    assert srv.ready is False


SAFE_START_SCRIPT = """
import sys, threading, time
from stogie import wsgi

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]

srv = wsgi.Server(("127.0.0.1", 0), app)

def announce():
    while not srv.ready:
        time.sleep(0.01)
    print(srv.bind_addr[1], flush=True)

threading.Thread(target=announce, daemon=True).start()
try:
    srv.safe_start()
except KeyboardInterrupt as exc:
    print("interrupted", srv.ready, srv.interrupt is exc, flush=True)
    sys.exit(0)
print("returned", flush=True)
"""


def test_safe_start_in_the_main_thread_stops_on_sigint():
    proc = subprocess.Popen(
        [sys.executable, "-c", SAFE_START_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(proc.stdout.readline())
        assert http_get(("127.0.0.1", port)) == (200, b"ok")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=8)
        assert proc.returncode == 0, err
        assert out.split() == ["interrupted", "False", "True"], (out, err)
        assert refused(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_stop_before_start_and_twice():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    srv.stop()  # never started: nothing to do
    assert srv.ready is False
    with running(srv):
        assert http_get(srv.bind_addr)[0] == 200
        srv.stop()
        srv.stop()
        assert srv.ready is False
    srv.stop()
    assert refused(srv.bind_addr)


def test_server_can_start_again_after_stop():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    with running(srv):
        assert http_get(srv.bind_addr)[0] == 200
    srv.bind_addr = ("127.0.0.1", 0)
    with running(srv):
        assert srv.ready
        assert http_get(srv.bind_addr) == (200, b"Hello, World!")


def test_stop_waits_for_request_in_flight():
    entered = threading.Event()

    def slow_app(environ, start_response):
        entered.set()
        time.sleep(1.0)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow but complete"]

    srv = wsgi.Server(("127.0.0.1", 0), slow_app, shutdown_timeout=5)
    results = []
    with running(srv):
        addr = srv.bind_addr
        client = threading.Thread(target=lambda: results.append(http_get(addr)), daemon=True)
        client.start()
        assert entered.wait(5)
        started = time.monotonic()
        srv.stop()
        elapsed = time.monotonic() - started
        client.join(5)
    assert results and results[0][0] == 200
    assert results[0][1] == b"slow but complete"
    assert 0.5 < elapsed < 4.5
    assert refused(addr)


def test_stop_gives_up_after_shutdown_timeout():
    entered, release = threading.Event(), threading.Event()

    def stuck_app(environ, start_response):
        entered.set()
        release.wait(8)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]

    srv = wsgi.Server(("127.0.0.1", 0), stuck_app, shutdown_timeout=0.5)
    srv.prepare()
    thread = threading.Thread(target=srv.serve, daemon=True)
    thread.start()
    sock = socket.create_connection(srv.bind_addr, timeout=5)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(5)
        started = time.monotonic()
        srv.stop()
        elapsed = time.monotonic() - started
        assert elapsed < 3, elapsed
        thread.join(5)
        assert not thread.is_alive()
    finally:
        release.set()
        sock.close()


def test_stop_with_idle_keepalive_connection_is_prompt():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app, shutdown_timeout=5)
    srv.prepare()
    thread = threading.Thread(target=srv.serve, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection(*srv.bind_addr, timeout=5)
    try:
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"Hello, World!"
        started = time.monotonic()
        srv.stop()
        # An idle keep-alive connection has nothing in flight: stop() need not wait for it.
        assert time.monotonic() - started < 2
    finally:
        conn.close()
    thread.join(5)


def test_stop_called_by_the_app_inside_a_request():
    # CherryPy's engine.exit() from a request handler ends up here: Cheroot's stop() does
    # not wait for the very request that called it, and that request still gets answered.
    timings = {}

    def app(environ, start_response):
        started = time.monotonic()
        environ["test.server"].stop()
        timings["stop"] = time.monotonic() - started
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"bye"]

    srv = wsgi.Server(("127.0.0.1", 0), None, shutdown_timeout=3)
    srv.wsgi_app = lambda environ, start_response: app(
        dict(environ, **{"test.server": srv}), start_response
    )
    srv.prepare()
    thread = threading.Thread(target=srv.serve, daemon=True)
    thread.start()
    addr = srv.bind_addr
    started = time.monotonic()
    status, body = http_get(addr)
    assert (status, body) == (200, b"bye")
    assert timings["stop"] < 1.5
    assert time.monotonic() - started < 2
    thread.join(5)
    assert not thread.is_alive()
    assert srv.ready is False
    assert wait_for(lambda: refused(addr), timeout=3)


def test_ready_flips():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    assert srv.ready is False
    with running(srv):
        assert srv.ready is True
    assert srv.ready is False


def test_interrupt_from_another_thread_raises_in_serve():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    srv.prepare()
    thread, outcome = call_in_thread(srv.serve)
    assert http_get(srv.bind_addr)[0] == 200
    interrupt = KeyboardInterrupt()
    threading.Thread(target=setattr, args=(srv, "interrupt", interrupt)).start()
    thread.join(5)
    assert not thread.is_alive()
    assert len(outcome) == 1 and outcome[0] is interrupt
    assert srv.interrupt is interrupt
    assert srv.ready is False
    assert refused(srv.bind_addr)


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("mode", ["wsgi", "native"])
def test_an_app_raising_an_interrupt_stops_the_server(caplog, kind, mode):
    # As in Cheroot: KeyboardInterrupt or SystemExit from the app is a request to stop the
    # server, not an application error. The connection closes without an answer (Cheroot's
    # worker thread ends with it; CherryPy's test_2_KeyboardInterrupt expects no status
    # line). It becomes the server's interrupt (logged as Cheroot logs it), the server
    # stops, and safe_start() re-raises it in its thread.
    def app(environ, start_response):
        raise kind("simulated handler interrupt")

    class Interrupting(server.Gateway):
        def respond(self):
            raise kind("simulated handler interrupt")

    if mode == "wsgi":
        srv = wsgi.Server(("127.0.0.1", 0), app)
    else:
        srv = server.HTTPServer(("127.0.0.1", 0), Interrupting)
    with caplog.at_level(logging.DEBUG, logger="stogie.error"):
        thread, outcome = call_in_thread(srv.safe_start)
        assert wait_for(lambda: srv.ready)
        with pytest.raises(http.client.RemoteDisconnected):
            http_get(srv.bind_addr)
        thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], kind)
    assert srv.interrupt is outcome[0]
    assert srv.ready is False
    assert refused(srv.bind_addr)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages[0][0] == logging.DEBUG
    assert messages[0][1].startswith(
        "Got a server shutdown request while handling a connection from 127.0.0.1:"
    )
    assert messages[0][1].endswith("(simulated handler interrupt)")
    assert messages[1] == (
        logging.DEBUG,
        f"Setting the server interrupt flag to {kind.__name__}('simulated handler interrupt')",
    )
    shutting = "Keyboard Interrupt" if kind is KeyboardInterrupt else "SystemExit raised"
    assert messages[2] == (logging.INFO, f"{shutting}: shutting down")
    assert not [m for level, m in messages if level >= logging.ERROR]


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_socket_is_the_listening_socket_while_prepared(tmp_path, family):
    # Cheroot's HTTPServer.socket: CherryPy reads the port bound for port 0 from it.
    addr = ("127.0.0.1", 0) if family == "tcp" else str(tmp_path / "s.sock")
    srv = wsgi.Server(addr, hello_app)
    assert srv.socket is None
    srv.prepare()
    try:
        bound = srv.socket.getsockname()
        if family == "tcp":
            assert bound == ("127.0.0.1", srv.bind_addr[1]) and bound[1] != 0
        else:
            assert bound == addr
        assert srv.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        thread, _ = call_in_thread(srv.serve)
        # Closing the duplicate does not stop the server.
        srv.socket.close()
        target = srv.bind_addr if family == "tcp" else (lambda: connect_unix(addr))
        assert http_get(target)[0] == 200
    finally:
        srv.stop()
    assert srv.socket is None
    thread.join(5)


def test_stop_returns_once_serve_has_returned():
    # Cheroot's stop() returns only after the serve loop ended: a caller may join the
    # serving thread, or start the next server, right away.
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    srv.prepare()
    thread, outcome = call_in_thread(srv.serve)
    assert http_get(srv.bind_addr)[0] == 200
    srv.stop()
    assert not thread.is_alive()
    assert outcome == ["returned"]


def test_run_in_thread():
    # Cheroot's private helper that other projects' test suites use.
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    with srv._run_in_thread() as thread:
        assert thread.is_alive() and thread.daemon
        assert http_get(srv.bind_addr)[0] == 200
    assert not thread.is_alive()
    assert refused(srv.bind_addr)


def test_bind_addr_port_zero_is_resolved():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    assert srv.bind_addr == ("127.0.0.1", 0)
    with running(srv):
        host, port = srv.bind_addr
        assert host == "127.0.0.1" and port != 0
        with socket.create_connection((host, port), timeout=2):
            pass


@pytest.mark.parametrize("host", ["", None])
def test_empty_host_is_refused(host):
    with pytest.raises(ValueError, match="0.0.0.0"):
        wsgi.Server((host, 80), hello_app)
    with pytest.raises(ValueError):
        server.HTTPServer((host, 80), wsgi.Gateway_10)
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    with pytest.raises(ValueError):
        srv.bind_addr = (host, 80)


def test_no_connections_accepted_after_stop():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    with running(srv):
        addr = srv.bind_addr
        assert http_get(addr)[0] == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(addr, timeout=2).close()


def test_prepare_with_non_callable_app_fails():
    srv = wsgi.Server(("127.0.0.1", 0), 42)
    with pytest.raises(TypeError):
        srv.prepare()
    assert srv.ready is False


def test_app_may_be_set_once_the_server_runs(caplog):
    # Cheroot allows wsgi.Server(addr, None) (its test fixtures set the app later); until an
    # app is set, requests get a 500 and the log says what is missing.
    srv = wsgi.Server(("127.0.0.1", 0), None)
    with caplog.at_level(logging.ERROR, logger="stogie.error"), running(srv):
        assert http_get(srv.bind_addr)[0] == 500
        assert "no WSGI application is set" in caplog.text
        srv.wsgi_app = hello_app
        assert http_get(srv.bind_addr)[0] == 200


# --- the error log -------------------------------------------------------------------------


def test_error_log_goes_to_stogie_error_logger(caplog):
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    with caplog.at_level(logging.DEBUG, logger="stogie.error"):
        srv.error_log("plain message", level=logging.WARNING)
        try:
            raise RuntimeError("with traceback")
        except RuntimeError:
            srv.error_log("failed here", level=logging.ERROR, traceback=True)
    records = [r for r in caplog.records if r.name == "stogie.error"]
    assert [(r.getMessage(), r.levelno) for r in records] == [
        ("plain message", logging.WARNING),
        ("failed here", logging.ERROR),
    ]
    assert not records[0].exc_info
    assert records[1].exc_info[0] is RuntimeError
    assert "with traceback" in caplog.text


def test_app_exception_is_logged_with_traceback(serve, caplog):
    def broken_app(environ, start_response):
        raise ZeroDivisionError("the app broke on purpose")

    with caplog.at_level(logging.DEBUG, logger="stogie.error"):
        srv = serve(broken_app)
        status, body = http_get(srv.bind_addr)
        assert status == 500
        assert b"the app broke on purpose" not in body
        assert wait_for(lambda: any(r.exc_info for r in caplog.records))
    records = [r for r in caplog.records if r.name == "stogie.error" and r.exc_info]
    assert records, caplog.text
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info[0] is ZeroDivisionError
    assert "broken_app" in caplog.text  # the traceback names the app's frame
