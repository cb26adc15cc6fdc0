"""Pytest fixtures and other helpers for doing testing by end-users.

The counterpart of ``cheroot.testing``, with its names and signatures. Load it as a pytest
plugin, in a ``conftest.py``::

    pytest_plugins = ['stogie.testing']

and use the fixtures::

    from stogie.testing import get_server_client

    def test_hello(wsgi_server):
        wsgi_server.wsgi_app = my_app          # the app can be swapped while running
        client = get_server_client(wsgi_server)
        status, headers, body = client.get('/')
        assert status == '200 OK'

Fixtures:

- ``wsgi_server``: a running ``stogie.wsgi.Server`` on loopback and a free port,
  answering ``Hello world!`` until a test sets its ``wsgi_app``.
- ``native_server``: a running ``stogie.server.HTTPServer`` with a native
  ``Gateway`` (:class:`HelloGateway`) answering ``Hello world!``.
- ``thread_and_wsgi_server``, ``thread_and_native_server``: the same as
  ``(thread, server)`` pairs, as Cheroot has them.

Helpers that need no pytest: :func:`run_server` (run any prepared-or-not server in a
background thread for the length of a ``with`` block), :func:`cheroot_server` (also named
:func:`stogie_server`) and :func:`get_server_client`.

Unlike Cheroot's, the servers listen on loopback only (Cheroot's listen on every
interface), and the client does not retry a request that failed.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
import threading
import time
from contextlib import closing, contextmanager

import pytest

import stogie.server
import stogie.wsgi

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any, TypeVar

    from typing_extensions import Self

    from ._typing import StartResponse, WSGIEnvironment

    _ServerT = TypeVar("_ServerT", bound=stogie.server.HTTPServer)

    Response = tuple[str, list[tuple[str, str]], bytes]
    """``(status, headers, body)``: ``'200 OK'``, the response headers, the body."""

    Headers = dict[str, str] | dict[str, bytes] | Iterable[tuple[str, str | bytes]]
    """Request headers: a dict, or ``(name, value)`` pairs."""

EPHEMERAL_PORT = 0
NO_INTERFACE: str | None = None  # Using this or '' will cause an exception
ANY_INTERFACE_IPV4 = "0.0.0.0"
ANY_INTERFACE_IPV6 = "::"
LOCALHOST = "127.0.0.1"

# We use special exit code to indicate success, rather than normal zero, so
# the test doesn't acidentally pass:
SUCCESSFUL_SUBPROCESS_EXIT = 23

# How long run_server() waits for a server to become ready.
READY_TIMEOUT = 10.0
# Test servers need not wait long for requests in flight when they stop.
TEST_SHUTDOWN_TIMEOUT = 1


def hello_app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """WSGI application answering ``Hello world!`` to any request."""
    body = b"Hello world!"
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


class HelloGateway(stogie.server.Gateway):
    """Native (non-WSGI) gateway answering ``Hello world!`` to any request."""

    def respond(self) -> None:
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


config: dict[type[stogie.server.HTTPServer], dict[str, Any]] = {
    stogie.wsgi.Server: {
        "bind_addr": (NO_INTERFACE, EPHEMERAL_PORT),
        "wsgi_app": hello_app,
    },
    stogie.server.HTTPServer: {
        "bind_addr": (NO_INTERFACE, EPHEMERAL_PORT),
        "gateway": HelloGateway,
    },
}
"""What :func:`cheroot_server` builds each server class with, as in Cheroot. A host of
``NO_INTERFACE`` means loopback (Cheroot: every interface)."""


def _is_interrupt(server: stogie.server.HTTPServer, exc: BaseException) -> bool:
    # An interrupt the server took as its stop request (an app's KeyboardInterrupt or
    # SystemExit): serve() re-raises it by design; a test's teardown must not.
    return isinstance(exc, (KeyboardInterrupt, SystemExit)) and exc is server.interrupt


@contextmanager
def run_server(server: stogie.server.HTTPServer) -> Iterator[threading.Thread]:
    """Run ``server`` in a background thread for the length of a ``with`` block.

    ``prepare()`` runs in the calling thread, so a bind error is raised right
    here; ``serve()`` runs in a daemon thread. The block is entered once
    ``server.ready`` is true, and on exit the server is stopped and the thread
    joined. If ``serve()`` failed, its exception is raised on exit, so a test
    cannot pass over a crashed server; an interrupt the server stopped for
    (``server.interrupt``: a ``KeyboardInterrupt`` or ``SystemExit`` from the app)
    is not, so that it cannot end a test session.

    Yields:
        the server thread.
    """
    if not server.ready:
        server.prepare()
    failures: list[BaseException] = []

    def serve() -> None:
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
    failures = [exc for exc in failures if not _is_interrupt(server, exc)]
    if failures:
        raise failures[0]


def _make_server(server_factory: type[_ServerT], **kwargs: Any) -> _ServerT:
    """Build a test server of the class ``server_factory`` from :data:`config`."""
    for cls, defaults in config.items():
        if issubclass(server_factory, cls):
            # wsgi.Server first (the dict's order): it is an HTTPServer too.
            for name, value in defaults.items():
                kwargs.setdefault(name, value)
            break
    bind_addr = kwargs.get("bind_addr")
    if isinstance(bind_addr, tuple) and bind_addr[0] in (NO_INTERFACE, ""):
        kwargs["bind_addr"] = (LOCALHOST, bind_addr[1])
    if issubclass(server_factory, stogie.wsgi.Server):
        kwargs.setdefault("shutdown_timeout", TEST_SHUTDOWN_TIMEOUT)
        return server_factory(**kwargs)
    server = server_factory(**kwargs)
    # A class attribute, not a constructor argument, of HTTPServer.
    server.shutdown_timeout = TEST_SHUTDOWN_TIMEOUT
    return server


@contextmanager
def cheroot_server(
    server_factory: type[_ServerT], **kwargs: Any
) -> Iterator[tuple[threading.Thread, _ServerT]]:
    """Set up and tear down a server instance of the class ``server_factory``.

    It is built from :data:`config` (loopback and a free port; a
    ``stogie.wsgi.Server`` serves :func:`hello_app`, an ``HTTPServer`` uses
    :class:`HelloGateway`); keyword arguments override it. The server runs in a
    thread (see :func:`run_server`).

    Yields:
        ``(thread, server)``
    """
    httpserver = _make_server(server_factory, **kwargs)
    with run_server(httpserver) as thread:
        yield thread, httpserver


stogie_server = cheroot_server


@pytest.fixture
def thread_and_wsgi_server() -> Iterator[tuple[threading.Thread, stogie.wsgi.Server]]:
    """Set up and tear down a stogie WSGI server instance.

    This emits a tuple of a thread and a server instance.
    """
    with cheroot_server(stogie.wsgi.Server) as (server_thread, srv):
        yield server_thread, srv


@pytest.fixture
def thread_and_native_server() -> Iterator[tuple[threading.Thread, stogie.server.HTTPServer]]:
    """Set up and tear down a stogie HTTP server instance.

    This emits a tuple of a thread and a server instance.
    """
    with cheroot_server(stogie.server.HTTPServer) as (server_thread, srv):
        yield server_thread, srv


@pytest.fixture
def wsgi_server(
    thread_and_wsgi_server: tuple[threading.Thread, stogie.wsgi.Server],
) -> stogie.wsgi.Server:
    """Set up and tear down a stogie WSGI server instance."""
    _server_thread, srv = thread_and_wsgi_server
    return srv


@pytest.fixture
def native_server(
    thread_and_native_server: tuple[threading.Thread, stogie.server.HTTPServer],
) -> stogie.server.HTTPServer:
    """Set up and tear down a stogie HTTP server instance."""
    _server_thread, srv = thread_and_native_server
    return srv


# --- the client --------------------------------------------------------------


def interface(host: str) -> str:
    """Return an IP address for a client connection given the server host.

    If the server is listening on '0.0.0.0' (INADDR_ANY) or '::' (IN6ADDR_ANY),
    this will return the proper localhost.
    """
    if host == ANY_INTERFACE_IPV4:
        return LOCALHOST
    if host == ANY_INTERFACE_IPV6:
        return "::1"
    return host


def _probe_ipv6_sock(interface: str) -> bool:
    """Whether an IPv6 socket can be bound to ``interface`` on this machine."""
    try:
        with closing(socket.socket(family=socket.AF_INET6)) as sock:
            sock.bind((interface, 0))
    except OSError as sock_err:
        if sock_err.errno != errno.EADDRNOTAVAIL:
            raise
    else:
        return True
    return False


def _get_conn_data(bind_addr: tuple[str, int] | str) -> tuple[str, str, int]:
    """Return ``(interface, host, port)`` for a client of a server at ``bind_addr``."""
    if isinstance(bind_addr, tuple):
        host, port = bind_addr
    else:
        host, port = bind_addr, 0

    iface = interface(host)
    if ":" in iface and not _probe_ipv6_sock(iface):
        iface = LOCALHOST
        if ":" in host:
            host = iface
    return iface, host, port


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client.HTTPConnection`` over a UNIX socket (``'\\0name'``: abstract)."""

    def __init__(
        self,
        path: str | bytes,
        timeout: float | None = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
    ) -> None:
        """Connect to the socket at ``path``; the Host header says ``localhost``."""
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        """Open the UNIX socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
            sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


# Methods whose requests carry a body: a Content-Length is added for them.
_METHODS_WITH_BODIES = ("POST", "PUT", "PATCH")


class ServerClient:
    """An HTTP client for one server, keeping one connection alive across requests.

    Every request method returns ``(status, headers, body)``: the status line
    without the protocol (``'200 OK'``), the response headers as a list of
    ``(name, value)`` pairs, and the body as bytes. ``client.put(...)``,
    ``client.delete(...)`` and so on work for any method name, as in Cheroot.
    """

    def __init__(self, server: stogie.server.HTTPServer, timeout: float = 10) -> None:
        """Make a client for ``server``, which must be prepared (bound)."""
        self.server_instance = server
        self.timeout = timeout
        bind_addr = server.bind_addr
        self._port: int | None
        if isinstance(bind_addr, tuple):
            self.unix_path: str | bytes | None = None
            self._interface, self._host, self._port = _get_conn_data(bind_addr)
        else:
            self.unix_path = bind_addr  # type: ignore[assignment]  # not a descriptor
            self._interface, self._host, self._port = "localhost", "localhost", None
        self._conn: http.client.HTTPConnection | None = None
        self._uses = 0

    @property
    def _http_connection(self) -> http.client.HTTPConnection:
        """The connection kept alive across requests (Cheroot's name)."""
        if self._conn is None:
            self._conn = self.get_connection()
            self._uses = 0
        return self._conn

    def get_connection(self) -> http.client.HTTPConnection:
        """Return a new ``http.client`` connection to the server."""
        if self.unix_path is not None:
            return UnixHTTPConnection(self.unix_path, timeout=self.timeout)
        if getattr(self.server_instance, "ssl_adapter", None) is not None:
            # Test servers use self-signed certificates.
            context = ssl._create_unverified_context()
            return http.client.HTTPSConnection(
                self._interface, self._port, timeout=self.timeout, context=context
            )
        return http.client.HTTPConnection(self._interface, self._port, timeout=self.timeout)

    def close(self) -> None:
        """Close the kept-alive connection, if any."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        uri: str | bytes,
        method: str = "GET",
        headers: Headers | None = None,
        http_conn: http.client.HTTPConnection | None = None,
        protocol: str = "HTTP/1.1",
        *,
        body: bytes | str | None = None,
    ) -> Response:
        """Send one request and return ``(status, headers, body)``, as Cheroot's does.

        ``headers`` is a dict or a list of pairs; ``Host`` is added when missing, and for
        POST, PUT and PATCH a ``Content-Type`` and ``Content-Length`` when missing.
        ``http_conn`` is a connection (from :meth:`get_connection`) to send on instead of
        the client's own; ``protocol='HTTP/1.0'`` sends an HTTP/1.0 request. ``body``
        (bytes or str) is stogie's addition.
        """
        if isinstance(uri, bytes):
            uri = uri.decode("latin-1")
        if isinstance(body, str):
            body = body.encode("utf-8")
        if isinstance(headers, dict):
            headers = headers.items()
        headers = list(headers or ())
        names = {name.lower() for name, _ in headers}
        if "host" not in names:
            host = self._host if self._port in (80, None) else f"{self._host}:{self._port}"
            if ":" in self._host and self._port not in (80, None):
                host = f"[{self._host}]:{self._port}"
            headers.append(("Host", host))
        if method.upper() in _METHODS_WITH_BODIES and "content-type" not in names:
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        if body is not None or method.upper() in _METHODS_WITH_BODIES:
            if "content-length" not in names and "transfer-encoding" not in names:
                headers.append(("Content-Length", str(len(body or b""))))

        if http_conn is not None:
            return self._send(http_conn, method, uri, body, headers, protocol)
        try:
            return self._send_kept(method, uri, body, headers, protocol)
        except (ConnectionError, http.client.BadStatusLine):
            # Only a connection that sat idle may have been closed by the
            # server in between; on a fresh one the failure is the answer.
            if self._uses <= 1:
                raise
            self.close()
            return self._send_kept(method, uri, body, headers, protocol)

    def _send_kept(
        self,
        method: str,
        uri: str,
        body: bytes | None,
        headers: list[tuple[str, str | bytes]],
        protocol: str,
    ) -> Response:
        conn = self._http_connection
        self._uses += 1
        try:
            status, response_headers, response_body, will_close = self._exchange(
                conn, method, uri, body, headers, protocol
            )
        except BaseException:
            self.close()
            raise
        if will_close:
            self.close()
        return status, response_headers, response_body

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        uri: str,
        body: bytes | None,
        headers: list[tuple[str, str | bytes]],
        protocol: str,
    ) -> Response:
        return self._exchange(conn, method, uri, body, headers, protocol)[:3]

    @staticmethod
    def _exchange(
        conn: http.client.HTTPConnection,
        method: str,
        uri: str,
        body: bytes | None,
        headers: list[tuple[str, str | bytes]],
        protocol: str,
    ) -> tuple[str, list[tuple[str, str]], bytes, bool]:
        # http.client has no public switch for the request's HTTP version.
        conn._http_vsn_str = protocol  # type: ignore[attr-defined]
        conn._http_vsn = int("".join(c for c in protocol if c.isdigit()))  # type: ignore[attr-defined]
        conn.putrequest(method.upper(), uri, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value.encode("latin-1") if isinstance(value, str) else value)
        conn.endheaders(body)
        response = conn.getresponse()
        status = f"{response.status} {response.reason}"
        return status, response.getheaders(), response.read(), response.will_close

    def get(
        self,
        uri: str | bytes,
        headers: Headers | None = None,
        **kwargs: Any,
    ) -> Response:
        """``GET uri``; returns ``(status, headers, body)``."""
        return self.request(uri, headers=headers, method="GET", **kwargs)

    def post(
        self,
        uri: str | bytes,
        body: bytes | str = b"",
        headers: Headers | None = None,
        **kwargs: Any,
    ) -> Response:
        """``POST uri`` with ``body``; returns ``(status, headers, body)``."""
        return self.request(uri, body=body, headers=headers, method="POST", **kwargs)

    def __getattr__(self, attr_name: str) -> Callable[..., Response]:
        """``client.put(uri, ...)``, ``client.delete(uri, ...)``, for any method."""
        if attr_name.startswith("_"):
            raise AttributeError(attr_name)

        def _wrapper(uri: str | bytes, **kwargs: Any) -> Response:
            return self.request(uri, method=attr_name.upper(), **kwargs)

        return _wrapper

    def __enter__(self) -> Self:
        """Use the client as a context manager that closes its connection."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the connection."""
        self.close()


_TestClient = ServerClient  # Cheroot's name


def get_server_client(server: stogie.server.HTTPServer) -> ServerClient:
    """Create and return a test client for the given server."""
    return ServerClient(server)
