"""Pytest fixtures and helpers for testing applications with stogie.

The counterpart of ``cheroot.testing``. Load it as a pytest plugin, in a
``conftest.py``::

    pytest_plugins = ['stogie.testing']

and use the fixtures::

    from stogie.testing import get_server_client

    def test_hello(wsgi_server):
        wsgi_server.wsgi_app = my_app          # the app can be swapped while running
        client = get_server_client(wsgi_server)
        status, headers, body = client.get('/')
        assert status == '200 OK'

Fixtures:

- ``wsgi_server``: a running ``stogie.wsgi.Server`` on 127.0.0.1 and a free port,
  answering ``Hello world!`` until a test sets its ``wsgi_app``.
- ``native_server``: a running ``stogie.server.HTTPServer`` with a native
  ``Gateway`` (:class:`HelloGateway`) answering ``Hello world!``.
- ``thread_and_wsgi_server``, ``thread_and_native_server``: the same as
  ``(thread, server)`` pairs, as Cheroot has them.

Helpers that need no pytest: :func:`run_server` (run any prepared-or-not server
in a background thread for the length of a ``with`` block), :func:`stogie_server`
(also named ``cheroot_server``) and :func:`get_server_client`.
"""

import http.client
import socket
import ssl
import threading
import time
from contextlib import contextmanager

import pytest

import stogie.server
import stogie.wsgi

EPHEMERAL_PORT = 0
ANY_INTERFACE_IPV4 = "0.0.0.0"
ANY_INTERFACE_IPV6 = "::"
LOCALHOST = "127.0.0.1"

# How long run_server() waits for a server to become ready.
READY_TIMEOUT = 10.0
# Test servers need not wait long for requests in flight when they stop.
TEST_SHUTDOWN_TIMEOUT = 1


def hello_app(environ, start_response):
    """WSGI application answering ``Hello world!`` to any request."""
    body = b"Hello world!"
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


class HelloGateway(stogie.server.Gateway):
    """Native (non-WSGI) gateway answering ``Hello world!`` to any request."""

    def respond(self):
        """Write the response through the request object, as Cheroot's API does."""
        body = b"Hello world!"
        req = self.req
        req.status = b"200 OK"
        req.outheaders.extend(
            [
                (b"Content-Type", b"text/plain"),
                (b"Content-Length", str(len(body)).encode("ascii")),
            ]
        )
        req.ensure_headers_sent()
        req.write(body)


@contextmanager
def run_server(server):
    """Run ``server`` in a background thread for the length of a ``with`` block.

    ``prepare()`` runs in the calling thread, so a bind error is raised right
    here; ``serve()`` runs in a daemon thread. The block is entered once
    ``server.ready`` is true, and on exit the server is stopped and the thread
    joined. If ``serve()`` failed, its exception is raised on exit, so a test
    cannot pass over a crashed server.

    Yields:
        the server thread.
    """
    if not server.ready:
        server.prepare()
    failures = []

    def serve():
        try:
            server.serve()
        except BaseException as exc:  # re-raised in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=serve, name="stogie-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not server.ready:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not become ready")
            time.sleep(0.01)
        yield thread
    finally:
        server.stop()
        thread.join((getattr(server, "shutdown_timeout", 0) or 0) + 5)
    if failures:
        raise failures[0]


def _make_server(server_factory, **kwargs):
    """Build a test server of the class ``server_factory`` on a free local port."""
    kwargs.setdefault("bind_addr", (LOCALHOST, EPHEMERAL_PORT))
    # wsgi.Server first: it is an HTTPServer too.
    if issubclass(server_factory, stogie.wsgi.Server):
        kwargs.setdefault("wsgi_app", hello_app)
        kwargs.setdefault("shutdown_timeout", TEST_SHUTDOWN_TIMEOUT)
        return server_factory(**kwargs)
    if issubclass(server_factory, stogie.server.HTTPServer):
        kwargs.setdefault("gateway", HelloGateway)
        httpserver = server_factory(**kwargs)
        # A class attribute, not a constructor argument, for HTTPServer.
        httpserver.shutdown_timeout = TEST_SHUTDOWN_TIMEOUT
        return httpserver
    return server_factory(**kwargs)


@contextmanager
def stogie_server(server_factory, **kwargs):
    """Build, run and finally stop a server of the class ``server_factory``.

    It listens on 127.0.0.1 and a free port unless ``bind_addr`` is given; a
    ``stogie.wsgi.Server`` serves :func:`hello_app` unless ``wsgi_app`` is
    given, an ``HTTPServer`` uses :class:`HelloGateway` unless ``gateway`` is.
    Other keyword arguments go to the constructor.

    Yields:
        ``(thread, server)``, as ``cheroot.testing.cheroot_server`` does.
    """
    httpserver = _make_server(server_factory, **kwargs)
    with run_server(httpserver) as thread:
        yield thread, httpserver


# Cheroot's name, for test suites moving over from it.
cheroot_server = stogie_server


@pytest.fixture
def thread_and_wsgi_server():
    """A running ``stogie.wsgi.Server`` and its thread, as ``(thread, server)``."""
    with stogie_server(stogie.wsgi.Server) as (thread, srv):
        yield thread, srv


@pytest.fixture
def thread_and_native_server():
    """A running ``stogie.server.HTTPServer`` and its thread, as ``(thread, server)``."""
    with stogie_server(stogie.server.HTTPServer) as (thread, srv):
        yield thread, srv


@pytest.fixture
def wsgi_server(thread_and_wsgi_server):
    """A running ``stogie.wsgi.Server`` serving :func:`hello_app` on 127.0.0.1."""
    _thread, srv = thread_and_wsgi_server
    return srv


@pytest.fixture
def native_server(thread_and_native_server):
    """A running ``stogie.server.HTTPServer`` with :class:`HelloGateway`."""
    _thread, srv = thread_and_native_server
    return srv


# --- the client --------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client.HTTPConnection`` over a UNIX socket (``'\\0name'``: abstract)."""

    def __init__(self, path, timeout=socket._GLOBAL_DEFAULT_TIMEOUT):
        """Connect to the socket at ``path``; the Host header says ``localhost``."""
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        """Open the UNIX socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
            sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def _client_host(host):
    # A server listening on every interface is reached through loopback.
    if host in (ANY_INTERFACE_IPV4, "", None):
        return LOCALHOST
    if host == ANY_INTERFACE_IPV6:
        return "::1"
    return host


class ServerClient:
    """An HTTP client for one server, keeping one connection alive across requests.

    Every request method returns ``(status, headers, body)``: the status line
    without the protocol (``'200 OK'``), the response headers as a list of
    ``(name, value)`` pairs, and the body as bytes. ``client.put(...)``,
    ``client.delete(...)`` and so on work for any method name, as in Cheroot.
    """

    def __init__(self, server, timeout=10):
        """Make a client for ``server``, which must be prepared (bound)."""
        self.server_instance = server
        self.timeout = timeout
        bind_addr = server.bind_addr
        if isinstance(bind_addr, tuple):
            self.unix_path = None
            self.host = _client_host(bind_addr[0])
            self.port = bind_addr[1]
        else:
            self.unix_path = bind_addr
            self.host, self.port = "localhost", None
        self._conn = None
        self._uses = 0

    def get_connection(self):
        """Return a new ``http.client`` connection to the server."""
        if self.unix_path is not None:
            return UnixHTTPConnection(self.unix_path, timeout=self.timeout)
        if getattr(self.server_instance, "ssl_adapter", None) is not None:
            # Test servers use self-signed certificates.
            context = ssl._create_unverified_context()
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def close(self):
        """Close the kept-alive connection, if any."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method_or_uri,
        uri=None,
        body=None,
        headers=None,
        *,
        method=None,
        protocol="HTTP/1.1",
    ):
        """Send one request and return ``(status, headers, body)``.

        Two ways to call it: ``request('POST', '/path', body, headers)``, or
        Cheroot's ``request('/path', method='POST', headers=...)``. ``headers``
        is a dict or a list of pairs; ``Host`` is added when missing, and
        ``Content-Length`` when there is a body. ``protocol='HTTP/1.0'`` sends
        an HTTP/1.0 request.
        """
        if uri is None:
            uri, method = method_or_uri, method or "GET"
        elif method is not None:
            raise TypeError("give the method either first or as method=, not both")
        else:
            method = method_or_uri
        if isinstance(uri, bytes):
            uri = uri.decode("latin-1")
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = list(headers.items() if isinstance(headers, dict) else headers or ())

        try:
            return self._send(method, uri, body, headers, protocol)
        except (ConnectionError, http.client.BadStatusLine):
            # Only a connection that sat idle may have been closed by the
            # server in between; on a fresh one the failure is the answer.
            if self._uses <= 1:
                raise
            self.close()
            return self._send(method, uri, body, headers, protocol)

    def _send(self, method, uri, body, headers, protocol):
        if self._conn is None:
            self._conn = self.get_connection()
            self._uses = 0
        conn = self._conn
        self._uses += 1
        # http.client has no public switch for the request's HTTP version.
        conn._http_vsn_str = protocol
        conn._http_vsn = 10 if protocol == "HTTP/1.0" else 11
        names = {name.lower() for name, _ in headers}
        try:
            conn.putrequest(
                method,
                uri,
                skip_host="host" in names,
                skip_accept_encoding=True,
            )
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None and "content-length" not in names:
                if "transfer-encoding" not in names:
                    conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            status = f"{response.status} {response.reason}"
            response_headers = response.getheaders()
            response_body = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return status, response_headers, response_body

    def get(self, uri, headers=None, **kwargs):
        """``GET uri``; returns ``(status, headers, body)``."""
        return self.request(uri, headers=headers, method="GET", **kwargs)

    def post(self, uri, body=b"", headers=None, **kwargs):
        """``POST uri`` with ``body``; returns ``(status, headers, body)``."""
        return self.request(uri, body=body, headers=headers, method="POST", **kwargs)

    def __getattr__(self, name):
        """``client.put(uri, ...)``, ``client.delete(uri, ...)``, for any method."""
        if name.startswith("_"):
            raise AttributeError(name)

        def send(uri, **kwargs):
            return self.request(uri, method=name.upper(), **kwargs)

        return send

    def __enter__(self):
        """Use the client as a context manager that closes its connection."""
        return self

    def __exit__(self, *exc_info):
        """Close the connection."""
        self.close()


def get_server_client(server):
    """Return a :class:`ServerClient` for a running ``server``."""
    return ServerClient(server)
