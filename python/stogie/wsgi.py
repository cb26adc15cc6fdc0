"""This module holds stogie's WSGI server implementation (Cheroot's ``cheroot.wsgi``).

Simplest example on how to use this server::

    from stogie import wsgi

    def my_crazy_app(environ, start_response):
        status = '200 OK'
        response_headers = [('Content-type','text/plain')]
        start_response(status, response_headers)
        return [b'Hello world!']

    addr = '0.0.0.0', 8070
    server = wsgi.Server(addr, my_crazy_app)
    server.start()

The server can serve as many WSGI applications as you want in one instance
by using a PathInfoDispatcher::

    path_map = {
        '/': my_crazy_app,
        '/blog': my_blog_app,
    }
    d = wsgi.PathInfoDispatcher(path_map)
    server = wsgi.Server(addr, d)
"""

from __future__ import annotations

from . import server
from ._native import FileWrapper
from ._settings import _Pool

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

    from _typeshed import OptExcInfo as _OptExcInfo

    from ._typing import (
        BindAddr,
        StartResponse,
        StrPath,
        WSGIApplication,
        WSGIEnvironment,
        WSGIVersion,
    )

__all__ = (
    "CherryPyWSGIServer",
    "Gateway",
    "Gateway_10",
    "Gateway_u0",
    "PathInfoDispatcher",
    "Server",
    "WSGIGateway",
    "WSGIGateway_10",
    "WSGIGateway_u0",
    "WSGIPathInfoDispatcher",
    "WSGIServer",
)


class Server(server.HTTPServer):
    """A subclass of HTTPServer which calls a WSGI application."""

    wsgi_version: WSGIVersion = (1, 0)
    """The version of WSGI to produce."""

    wsgi_app: WSGIApplication | None
    """The WSGI application served (None serves an error until one is set, as in Cheroot);
    it may be replaced while the server runs."""

    def __init__(
        self,
        bind_addr: BindAddr,
        wsgi_app: WSGIApplication | None,
        numthreads: int = 10,
        server_name: str | None = None,
        max: int = -1,
        request_queue_size: int = 5,
        timeout: float = 10,
        shutdown_timeout: float = 5,
        accepted_queue_size: int = -1,
        accepted_queue_timeout: float = 10,
        peercreds_enabled: bool = False,
        peercreds_resolve_enabled: bool = False,
        reuse_port: bool = False,
        *,
        workers: int = 1,
        extra_bind_addrs: Sequence[BindAddr] = (),
        max_requests: int = 0,
        max_requests_jitter: int = 0,
        max_worker_memory: float = 0,
        worker_lifetime: float = 0,
        worker_timeout: float = 30,
    ) -> None:
        """Initialize WSGI Server instance.

        Args:
            bind_addr (tuple): network interface to listen to
            wsgi_app (callable): WSGI application callable
            numthreads (int): number of threads for WSGI thread pool
            server_name (str): web server name to be advertised via
                Server HTTP header
            max (int): maximum number of worker threads
            request_queue_size (int): the 'backlog' arg to
                socket.listen(); max queued connections
            timeout (int): the timeout in seconds for accepted connections
            shutdown_timeout (int): the total time, in seconds, to
                wait for worker threads to cleanly exit
            accepted_queue_size (int): maximum number of active
                requests in queue
            accepted_queue_timeout (int): timeout for putting request
                into queue
            peercreds_enabled (bool): look up UNIX socket peer credentials
            peercreds_resolve_enabled (bool): resolve them to user/group names
            reuse_port (bool): set SO_REUSEPORT on the listening socket
            workers (int): worker processes sharing the listening socket, each
                with its own engine and thread pool (stogie only, keyword-only;
                see ``HTTPServer.workers``)
            extra_bind_addrs (list): more addresses to serve besides ``bind_addr``
                (stogie only, keyword-only)
            max_requests (int): replace a worker process after this many requests,
                0 for never (stogie only, keyword-only, as the three below)
            max_requests_jitter (int): up to this many more, at random, per worker
            max_worker_memory (float): replace a worker whose RSS passes this many MiB
            worker_lifetime (float): replace a worker after this many seconds
            worker_timeout (float): kill and replace a worker whose heartbeat is
                this many seconds old, 0 for never (stogie only, keyword-only)
        """
        super().__init__(
            bind_addr,
            gateway=wsgi_gateways[self.wsgi_version],
            server_name=server_name,
            peercreds_enabled=peercreds_enabled,
            peercreds_resolve_enabled=peercreds_resolve_enabled,
            reuse_port=reuse_port,
        )
        self.wsgi_app = wsgi_app
        self.workers = workers
        self.extra_bind_addrs = extra_bind_addrs
        self.max_requests = max_requests
        self.max_requests_jitter = max_requests_jitter
        self.max_worker_memory = max_worker_memory
        self.worker_lifetime = worker_lifetime
        self.worker_timeout = worker_timeout
        # Wrong values fail here, where they are written, rather than at prepare().
        self._worker_count()
        self._recycling()
        self._amount("worker_timeout")
        self._bind_addrs()
        self.request_queue_size = request_queue_size
        self.timeout = timeout
        self.shutdown_timeout = shutdown_timeout
        self.requests = _Pool(
            self,
            min=numthreads or 1,
            max=max,
            accepted_queue_size=accepted_queue_size,
            accepted_queue_timeout=accepted_queue_timeout,
        )

    @property
    def numthreads(self) -> int:
        """Set minimum number of threads."""
        return self.requests.min

    @numthreads.setter
    def numthreads(self, value: int) -> None:
        self.requests.min = value


class Gateway(server.Gateway):
    """A base class to interface HTTPServer with WSGI.

    ``Gateway_10`` and ``Gateway_u0`` run natively in the engine. A subclass
    that overrides their methods runs this Python implementation instead.
    """

    version: WSGIVersion
    """The WSGI version of the environ it makes (``wsgi.version``)."""

    def __init__(self, req: server.HTTPRequest) -> None:
        """Initialize WSGI Gateway instance with request.

        Args:
            req (HTTPRequest): current HTTP request
        """
        super().__init__(req)
        self.started_response = False
        self.env = self.get_environ()
        self.remaining_bytes_out: int | None = None

    @classmethod
    def gateway_map(cls) -> dict[WSGIVersion, type[Gateway]]:
        """Create a mapping of gateways and their versions.

        Returns:
            dict[tuple[int,int],class]: map of gateway version and
                corresponding class
        """
        return {gw.version: gw for gw in cls.__subclasses__()}

    def get_environ(self) -> WSGIEnvironment:
        """Return a new environ dict targeting the given wsgi.version."""
        raise NotImplementedError  # pragma: no cover

    def respond(self) -> None:
        """Process the current request.

        From :pep:`333`:

            The start_response callable must not actually transmit
            the response headers. Instead, it must store them for the
            server or gateway to transmit only after the first
            iteration of the application return value that yields
            a NON-EMPTY string, or upon the application's first
            invocation of the write() callable.
        """
        # PEP 3333's optional file wrapper, for the app only (get_environ() keeps Cheroot's
        # keys).
        self.env.setdefault("wsgi.file_wrapper", FileWrapper)
        # A wsgi.Server's (or an attribute set on an HTTPServer whose gateway this is).
        app: WSGIApplication = self.req.server.wsgi_app  # type: ignore[assignment]  # not None
        response = app(self.env, self.start_response)
        try:
            for chunk in filter(None, response):
                if not isinstance(chunk, bytes):
                    raise ValueError("WSGI Applications must yield bytes")
                self.write(chunk)
        finally:
            # Send headers if not already sent
            self.req.ensure_headers_sent()
            if hasattr(response, "close"):
                response.close()

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: _OptExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        """WSGI callable to begin the HTTP response."""
        # "The application may call start_response more than once,
        # if and only if the exc_info argument is provided."
        if self.started_response and not exc_info:
            raise RuntimeError("WSGI start_response called a second time with no exc_info.")
        self.started_response = True

        # "if exc_info is provided, and the HTTP headers have already been
        # sent, start_response must raise an error, and should raise the
        # exc_info tuple."
        if self.req.sent_headers:
            value = exc_info[1]  # type: ignore[index]  # not None: checked above
            raise value  # type: ignore[misc]  # the app's exception

        if not isinstance(status, str):
            raise TypeError("WSGI response status is not of type str.")
        self.req.status = status
        self.req.outheaders = []
        for k, v in headers:
            if not isinstance(k, str):
                raise TypeError("WSGI response header key %r is not of type str." % k)
            if not isinstance(v, str):
                raise TypeError("WSGI response header value %r is not of type str." % v)
            if k.lower() == "content-length":
                self.remaining_bytes_out = int(v)
            self.req.outheaders.append((k, v))
        return self.write

    def write(self, chunk: bytes) -> None:
        """WSGI callable to write unbuffered data to the client.

        This method is also used internally by start_response (to write
        data from the iterable returned by the WSGI application).
        """
        if not self.started_response:
            raise RuntimeError("WSGI write called before start_response.")
        self.req.write(chunk)


class Gateway_10(Gateway):
    """A Gateway class to interface HTTPServer with WSGI 1.0.x."""

    version: WSGIVersion = 1, 0
    _engine_mode = "wsgi"  # the engine runs it itself (HTTPServer._gateway_mode)

    def get_environ(self) -> WSGIEnvironment:
        """Return a new environ dict targeting the given wsgi.version."""
        req = self.req
        req_conn = req.conn
        # Cheroot's keys and value types, so that code written for its gateways (which
        # dumps this as JSON, say) works unchanged: no ``wsgi.file_wrapper`` (a class) here.
        # respond() adds it for the app.
        env = dict(req.server._environ_template())
        del env["wsgi.file_wrapper"]
        env.update(
            {
                "PATH_INFO": req.path.decode("ISO-8859-1"),
                "QUERY_STRING": req.qs.decode("ISO-8859-1"),
                "REMOTE_ADDR": req_conn.remote_addr or "",
                "REMOTE_PORT": str(req_conn.remote_port or ""),
                "REQUEST_METHOD": req.method.decode("ISO-8859-1"),
                "REQUEST_URI": req.uri.decode("ISO-8859-1"),
                "SERVER_PROTOCOL": req.request_protocol.decode("ISO-8859-1"),
                "wsgi.input": req.rfile,
                "wsgi.url_scheme": req.scheme.decode("ISO-8859-1"),
                "wsgi.version": self.version,
            }
        )
        if isinstance(req.server.bind_addr, str):
            # A UNIX socket: the peer's credentials where they can be had, as Cheroot.
            try:
                env["X_REMOTE_PID"] = str(req_conn.peer_pid)
                env["X_REMOTE_UID"] = str(req_conn.peer_uid)
                env["X_REMOTE_GID"] = str(req_conn.peer_gid)
                env["X_REMOTE_USER"] = str(req_conn.peer_user)
                env["X_REMOTE_GROUP"] = str(req_conn.peer_group)
                env["REMOTE_USER"] = env["X_REMOTE_USER"]
            except (RuntimeError, NotImplementedError, KeyError):
                pass  # disabled, or the kernel gave none, or an id without a name
        for k, v in req.inheaders.items():
            name = k.decode("ISO-8859-1").upper().replace("-", "_")
            env["HTTP_" + name] = v.decode("ISO-8859-1")
        ct = env.pop("HTTP_CONTENT_TYPE", None)
        if ct is not None:
            env["CONTENT_TYPE"] = ct
        cl = env.pop("HTTP_CONTENT_LENGTH", None)
        if cl is not None:
            env["CONTENT_LENGTH"] = cl
        if req_conn.ssl_env:
            env.update(req_conn.ssl_env)
        return env


class Gateway_u0(Gateway_10):
    """A Gateway class to interface HTTPServer with WSGI u.0.

    WSGI u.0 is an experimental protocol, which uses Unicode for keys
    and values in both Python 2 and Python 3.
    """

    version = "u", 0
    _engine_mode = "wsgi_u0"

    def get_environ(self) -> WSGIEnvironment:
        """Return a new environ dict targeting the given wsgi.version."""
        req = self.req
        env = super().get_environ()
        enc = env.setdefault("wsgi.url_encoding", "utf-8")
        try:
            env["PATH_INFO"] = req.path.decode(enc)
            env["QUERY_STRING"] = req.qs.decode(enc)
        except UnicodeDecodeError:
            # Fall back to latin 1 so apps can transcode if needed.
            env["wsgi.url_encoding"] = "ISO-8859-1"
        return env


wsgi_gateways = Gateway.gateway_map()


class PathInfoDispatcher:
    """A WSGI dispatcher for dispatch based on the PATH_INFO."""

    def __init__(
        self, apps: Mapping[str, WSGIApplication] | list[tuple[str, WSGIApplication]]
    ) -> None:
        """Initialize path info WSGI app dispatcher.

        Args:
            apps (dict[str,object]|list[tuple[str,object]]): URI prefix
                and WSGI app pairs
        """
        pairs: list[tuple[str, WSGIApplication]]
        try:
            pairs = list(apps.items())  # type: ignore[union-attr]  # a mapping
        except AttributeError:
            pairs = apps  # type: ignore[assignment]  # a list of pairs

        # Sort the apps by len(path), descending
        def by_path_len(app: tuple[str, WSGIApplication]) -> int:
            return len(app[0])

        pairs.sort(key=by_path_len, reverse=True)

        # The path_prefix strings must start, but not end, with a slash.
        # Use "" instead of "/".
        self.apps = [(p.rstrip("/"), a) for p, a in pairs]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Process incoming WSGI request.

        Ref: :pep:`3333`

        Args:
            environ (Mapping): a dict containing WSGI environment variables
            start_response (callable): function, which sets response
                status and headers

        Returns:
            list[bytes]: iterable containing bytes to be returned in
                HTTP response body
        """
        path = environ["PATH_INFO"] or "/"
        for p, app in self.apps:
            # The apps list should be sorted by length, descending.
            if path.startswith(p + "/") or path == p:
                environ = environ.copy()
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + p
                environ["PATH_INFO"] = path[len(p) :]
                return app(environ, start_response)

        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]


class CherryPyWSGIServer(Server):
    """The CherryPy wsgiserver API that Cheroot grew from.

    ``wsgi_app`` may also be a list of ``(script_name, app)`` pairs, served
    as a :class:`PathInfoDispatcher` would.
    """

    ssl_module: str = "builtin"
    """The adapter (``get_ssl_adapter_class`` name) made of the attributes below."""
    ssl_certificate: StrPath | None = None
    """With ``ssl_private_key``: serve HTTPS, as the old wsgiserver did."""
    ssl_private_key: StrPath | None = None
    ssl_certificate_chain: StrPath | None = None

    def __init__(
        self,
        bind_addr: BindAddr,
        wsgi_app: WSGIApplication | Sequence[tuple[str, WSGIApplication]] | None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Initialize, accepting a list of (script_name, app) pairs as the app."""
        if isinstance(wsgi_app, (list, tuple)) and not callable(wsgi_app):
            wsgi_app = PathInfoDispatcher(list(wsgi_app))
        # A list of pairs is a PathInfoDispatcher now.
        super().__init__(bind_addr, wsgi_app, *args, **kwargs)  # type: ignore[arg-type]

    def prepare(self) -> None:
        """Prepare to serve; an ``ssl_certificate`` set without an ``ssl_adapter`` makes one."""
        if self.ssl_adapter is None and self.ssl_certificate:
            adapter_class = server.get_ssl_adapter_class(self.ssl_module)
            self.ssl_adapter = adapter_class(
                self.ssl_certificate, self.ssl_private_key, self.ssl_certificate_chain
            )
        super().prepare()


# compatibility aliases
WSGIServer = Server
WSGIGateway = Gateway
WSGIGateway_u0 = Gateway_u0
WSGIGateway_10 = Gateway_10
WSGIPathInfoDispatcher = PathInfoDispatcher

# Referenced for the PEP 3333 file wrapper; kept importable from here too.
file_wrapper = FileWrapper
