"""Fixtures that run stogie servers on loopback for end-to-end tests over real sockets."""

import contextlib
import http.client
import inspect
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from stogie import wsgi


def plain_signature(obj):
    """``inspect.signature(obj)`` without its annotations: the names, kinds and defaults that
    calls depend on (Cheroot's runtime signatures have no annotations; its types are in
    stubs, stogie's inline)."""
    sig = inspect.signature(obj)
    empty = inspect.Parameter.empty
    return sig.replace(
        parameters=[p.replace(annotation=empty) for p in sig.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )


@contextlib.contextmanager
def running(server):
    """Prepare ``server``, serve it in a thread, and stop it on exit."""
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(10)
        assert not thread.is_alive(), "serve() did not return after stop()"


@pytest.fixture
def serve():
    """``serve(app, **server_kwargs)`` starts a WSGI server on 127.0.0.1:0.

    Extra attributes can be set with ``attrs={...}`` before prepare().
    """
    stack = contextlib.ExitStack()

    def start(app, bind_addr=("127.0.0.1", 0), attrs=None, **kwargs):
        server = wsgi.Server(bind_addr, app, **kwargs)
        for name, value in (attrs or {}).items():
            setattr(server, name, value)
        return stack.enter_context(running(server))

    with stack:
        yield start


def raw_request(addr, data, timeout=5.0, shut_write=False):
    """Send raw bytes, return everything the server sends until it closes."""
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def http_get(target, path="/", timeout=5):
    """One GET on a fresh connection: ``(status, body)``.

    ``target`` is a ``(host, port)`` address or a callable returning a connected socket
    (for UNIX and abstract sockets).
    """
    if callable(target):
        conn = http.client.HTTPConnection("localhost", timeout=timeout)
        conn.sock = target()
    else:
        conn = http.client.HTTPConnection(*target, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers in a subprocess)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect_tcp(port):
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def connect_unix(path):
    """A connected UNIX socket; ``path`` is a str or Path (``'\\0name'``: abstract)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return sock


def wait_for(predicate, timeout=5.0):
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def wait_closed(sock, limit):
    """Read until the server closes ``sock``; return (seconds it took, bytes received).

    ``limit`` is the timeout of each recv: ``socket.timeout`` if the server goes quiet
    without closing.
    """
    sock.settimeout(limit)
    started = time.monotonic()
    data = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data.append(chunk)
    except ConnectionResetError:
        pass
    return time.monotonic() - started, b"".join(data)


def wait_until_serving(running, connect, timeout=8.0):
    """Poll until ``connect()`` succeeds; fail early if the server process exits.

    ``running`` has ``proc`` (a Popen) and ``stderr`` (what it printed so far).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            pytest.fail(f"stogie exited with {running.proc.returncode}: {running.stderr}")
        try:
            connect().close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"stogie did not start serving: {running.stderr}")


def hello_app(environ, start_response):
    """13 bytes with Content-Length."""
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class ResponseReader:
    """Reads HTTP/1.x responses one by one from a raw socket (pipelining-safe).

    ``read_response(head=False)`` returns ``(status_line, headers, body, complete)``:
    ``status_line`` as bytes, ``headers`` a list of ``(name, value)`` str pairs in the
    server's spelling, ``body`` the de-chunked body, and ``complete`` False when the
    connection closed before the framing said the body ended. A 1xx response comes back
    alone (no body); call again for the final one. ``head=True`` for a HEAD request.
    """

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _more(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _line(self):
        while b"\r\n" not in self.buf:
            if not self._more():
                raise EOFError("connection closed before a full line: %r" % self.buf)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n):
        while len(self.buf) < n:
            if not self._more():
                data, self.buf = self.buf, b""
                return data, False
        data, self.buf = self.buf[:n], self.buf[n:]
        return data, True

    def read_response(self, head=False):
        status_line = self._line()
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        code = int(status_line.split()[1])
        lower = {k.lower(): v for k, v in headers}
        if head or code < 200 or code in (204, 304):
            return status_line, headers, b"", True
        if "chunked" in lower.get("transfer-encoding", "").lower():
            body = b""
            while True:
                try:
                    size_line = self._line()
                except EOFError:
                    return status_line, headers, body, False
                size = int(size_line.split(b";")[0], 16)
                data, ok = self._exactly(size + 2)
                body += data[:size]
                if not ok:
                    return status_line, headers, body, False
                if size == 0:
                    return status_line, headers, body, True
        if "content-length" in lower:
            body, ok = self._exactly(int(lower["content-length"]))
            return status_line, headers, body, ok
        while self._more():
            pass
        body, self.buf = self.buf, b""
        return status_line, headers, body, self.eof

    def closed(self, timeout=2.0):
        """Whether the server closes the connection (EOF) within ``timeout`` with no more data."""
        self.sock.settimeout(timeout)
        self._more()
        return self.eof and not self.buf


def header(headers, name):
    """All values of header ``name`` (case-insensitive) in a ResponseReader header list."""
    return [v for k, v in headers if k.lower() == name.lower()]


def stop(proc, grace=10):
    """Stops ``proc`` (a Popen) as a user would, with SIGTERM; kills it if it still runs
    ``grace`` seconds later."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Proc:
    """A process under test (``proc``, a Popen) and what it wrote to stderr so far."""

    def __init__(self, proc, err_path):
        self.proc = proc
        self.err_path = err_path

    @property
    def pid(self):
        return self.proc.pid

    @property
    def stderr(self):
        return Path(self.err_path).read_text()
