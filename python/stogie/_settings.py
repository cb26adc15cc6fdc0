"""HTTPServer's settings: each one with its default and what it means, how the values are
checked, and how a running server's engine gets them. Also the ``requests`` pool and the
``stats`` dict that Cheroot's API reads.
"""

from __future__ import annotations

import os
import sys

from . import __version__
from ._gateway import HTTPConnection
from ._native import ACCESS_LOG_COMBINED

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, ClassVar, Literal

    from ._gateway import Gateway
    from ._native import NativeServer, _Address
    from ._typing import AddressList, BindAddr, StrPath, TCPAddress
    from .server import HTTPServer
    from .ssl import Adapter
    from .workers import Supervisor

    _StatsBase = dict[str, Any]
else:
    _StatsBase = dict


def _address_list(name: str, value: AddressList) -> str:
    """A setting that lists addresses and networks, as the engine takes it (a string)."""
    if isinstance(value, (list, tuple, set, frozenset)):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a comma-separated string or a list, not {value!r}")
    return value


_HTTP2_LIMITS: dict[str, tuple[int, int]] = {
    # setting: (least, most), RFC 9113 §6.5.2's bounds where it has them.
    "http2_max_concurrent_streams": (1, 2**31 - 1),
    "http2_initial_window_size": (1, 2**31 - 1),
    "http2_max_frame_size": (2**14, 2**24 - 1),
    "http2_max_header_list_size": (1, 2**32 - 1),
}


def _http_protocols(value: str | Sequence[str]) -> list[str]:
    """``http_protocols`` as a list in order of preference (``['h2', 'h1']``), from a
    comma-separated string or a list; ValueError naming what is wrong."""
    parts = value.split(",") if isinstance(value, str) else value
    names: list[str] | None
    try:
        names = [str(n).strip().lower() for n in parts]
    except TypeError:
        names = None
    if not names or any(n not in ("h1", "h2") for n in names) or len(set(names)) != len(names):
        raise ValueError(
            f"http_protocols must name 'h1', 'h2' or both in order of preference"
            f" ('h2,h1'), not {value!r}"
        )
    return names


def _http2_limit(name: str, value: object) -> int:
    least, most = _HTTP2_LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise ValueError(f"{name} must be a whole number from {least} to {most}, not {value!r}")
    return value


def _metrics_address(bind: str | TCPAddress) -> TCPAddress:
    """``'HOST:PORT'``, ``'[V6]:PORT'``, ``':PORT'`` or ``(host, port)`` -> (host, port)."""
    port: object
    if isinstance(bind, tuple) and len(bind) == 2:
        host, port = bind
    elif isinstance(bind, str) and ":" in bind:
        host, _, port = bind.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
    else:
        raise ValueError(f"metrics_bind must be 'HOST:PORT' or (host, port), not {bind!r}")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"metrics_bind {bind!r}: the port is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics_bind {bind!r}: the port is out of range (0-65535)")
    return str(host), port


class _Stats(_StatsBase):
    """Cheroot's ``stats`` dict; counters come live from the engine."""

    _COUNTERS: ClassVar[dict[str, str]] = {
        "Accepts": "accepts",
        "Socket Errors": "socket_errors",
    }

    def __init__(self, server: HTTPServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server = server

    def __getitem__(self, key: str) -> Any:
        field = self._COUNTERS.get(key)
        if field is not None:
            return self._server._counters().get(field, 0)
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if key == "Enabled":
            self._server._configure(stats_enabled=bool(value))


def _pool_setting(name: str) -> property:
    """A setting of ``_Pool``, pushed to a running engine when it changes."""
    attr = "_" + name

    def get(self: _Pool) -> Any:
        return getattr(self, attr)

    def set_(self: _Pool, value: Any) -> None:
        setattr(self, attr, value)
        self._push()

    return property(get, set_)


class _Pool:
    """The worker pool's sizes (Cheroot's ``server.requests``), live on a running server."""

    def __init__(
        self,
        server: HTTPServer,
        min: int = 10,
        max: int = -1,
        accepted_queue_size: int = -1,
        accepted_queue_timeout: float = 10,
    ) -> None:
        self.server = server
        self._min = min or 1
        self._max = max
        self._accepted_queue_size = accepted_queue_size
        self._accepted_queue_timeout = accepted_queue_timeout
        self._idle_timeout: float = 30

    def _push(self) -> None:
        native = self.server._native
        if native is not None:
            native.set_pool_limits(
                self._min,
                self._max,
                self._accepted_queue_size,
                float(self._accepted_queue_timeout),
                idle_timeout=float(self._idle_timeout),
            )

    if TYPE_CHECKING:
        # What the properties below read and write, for type checkers.
        min: int
        max: int
        accepted_queue_size: int
        accepted_queue_timeout: float
        idle_timeout: float
    else:
        min = _pool_setting("min")
        max = _pool_setting("max")
        accepted_queue_size = _pool_setting("accepted_queue_size")
        accepted_queue_timeout = _pool_setting("accepted_queue_timeout")
        idle_timeout = _pool_setting("idle_timeout")
        """Seconds a thread above ``min`` waits for work before it exits (default 30)."""

    @property
    def idle(self) -> int:
        """Number of worker threads which are idle."""
        return int(self.server._counters().get("idle", 0))

    @property
    def qsize(self) -> int:
        """Return the queue size."""
        return int(self.server._counters().get("queued", 0))

    @property
    def threads(self) -> int:
        """Number of worker threads alive."""
        return int(self.server._counters().get("threads", 0))

    @property
    def _threads(self) -> list[None]:
        # Cheroot's list of worker threads (its tests look at it); stogie's live in the
        # engine: one placeholder each.
        return [None] * self.threads

    def start(self) -> None:
        """Start the pool (the engine starts it with the server)."""

    def stop(self, timeout: float = 5) -> None:
        """Stop the pool (the server stops it with the engine)."""


class Settings:
    """The settings of an ``HTTPServer`` (Cheroot's names, then stogie's own), checked and
    handed to the engine; ``HTTPServer`` adds its lifecycle."""

    _bind_addr: BindAddr = "127.0.0.1"

    gateway: type[Gateway] | None = None
    """A Gateway instance."""

    minthreads: int | None = None
    """The minimum number of worker threads to create (default 10)."""

    maxthreads: int | None = None
    """The maximum number of worker threads to create.

    (default -1 = no limit)"""

    server_name: str | None = None
    """The name of the server; defaults to ``self.version``."""

    protocol: str = "HTTP/1.1"
    """The version string to write in the Status-Line of all HTTP responses.

    For example, "HTTP/1.1" is the default. This also limits the supported
    features used in the response."""

    request_queue_size: int = 5
    """The 'backlog' arg to socket.listen(); max queued connections.

    (default 5). stogie listens with a backlog of at least 1024: a smaller one makes the
    kernel drop connection attempts from any burst of clients, each costing the client a
    one-second retransmit."""

    shutdown_timeout: float = 5
    """The total time to wait for worker threads to cleanly exit.

    Specified in seconds."""

    timeout: float = 10
    """The timeout in seconds for accepted connections (default 10)."""

    expiration_interval: float = 0.5
    """The interval, in seconds, at which the server checks for
    expired connections (default 0.5). Kept for compatibility: the engine
    tracks every timeout itself."""

    version: str = "Stogie/" + __version__
    """A version string for the HTTPServer."""

    software: str | None = None
    """The value to set for the SERVER_SOFTWARE entry in the WSGI environ.

    If None, this defaults to ``'%s Server' % self.version``.
    """

    max_request_header_size: int = 0
    """The maximum size, in bytes, for request headers, or 0 for no limit."""

    max_request_body_size: int = 0
    """The maximum size, in bytes, for request bodies, or 0 for no limit."""

    nodelay: bool = True
    """If True (the default since 3.1), sets the TCP_NODELAY socket option."""

    ConnectionClass: type[HTTPConnection] = HTTPConnection
    """The class to use for handling HTTP connections (unused: the engine owns them)."""

    ssl_adapter: Adapter | None = None
    """An instance of ``ssl.Adapter`` (or a subclass): serve HTTPS.

    Its files and context settings are read at prepare(); :meth:`reload_tls` (or SIGHUP to
    the ``stogie`` command) reads the certificate and key again.
    """

    peercreds_enabled: bool = False
    """If :py:data:`True`, peer creds will be looked up via UNIX-socket."""

    peercreds_resolve_enabled: bool = False
    """If :py:data:`True`, username/group will be looked up in the OS from
    ``PEERCREDS``-provided IDs."""

    reuse_port: bool = False
    """If True, set SO_REUSEPORT on the socket."""

    keep_alive_conn_limit: int = 10
    """Kept for compatibility: idle keep-alive connections cost no thread here."""

    allow_underscore_headers: bool = False
    """If True, request header names containing ``_`` reach the application.

    Off by default: ``X_Forwarded_For`` would alias ``X-Forwarded-For``.
    """

    max_request_line: int = 8190
    """The longest request line, in bytes without its CRLF; a longer one gets a 414."""

    max_header_count: int = 100
    """The most header fields a request may have; more get a 431."""

    max_header_field: int = 8190
    """The longest header field line, in bytes without its CRLF; a longer one gets a 431."""

    io_threads: int = 1
    """Threads running the Rust engine (sockets, parsing, writing)."""

    workers: int = 1
    """Worker processes sharing the listening socket, each with its own engine and pool.

    With more than one, prepare() forks them (no other thread may run then) and this
    process only supervises them (:mod:`stogie.workers`): it replaces a worker that dies,
    and stop(), SIGTERM or SIGINT stop them all gracefully. Its ``stats`` count nothing
    (each worker counts its own), and settings changed after prepare() do not reach them.
    """

    extra_bind_addrs: Sequence[BindAddr] = ()
    """More addresses to serve besides ``bind_addr``, each as ``bind_addr`` takes them (a
    ``(host, port)`` tuple, a UNIX socket path, a listening socket's descriptor). stogie
    only."""

    max_requests: int = 0
    """Replace a worker process once it has served this many requests (0: never). The
    replacement starts and serves before the old one drains: no request is refused. Setting
    it runs the server in worker processes even with ``workers=1``. stogie only."""

    max_requests_jitter: int = 0
    """Add a random 0 to this many requests to each worker's ``max_requests``, so that workers
    started together are not replaced together."""

    max_worker_memory: float = 0
    """Replace a worker process whose resident memory (RSS) passes this many MiB (0: never),
    as ``max_requests`` does."""

    worker_lifetime: float = 0
    """Replace a worker process after it has run this many seconds (0: never), as
    ``max_requests`` does."""

    worker_timeout: float = 30
    """Kill and replace a worker process whose heartbeat is this many seconds old (0:
    never): its engine or its main thread is stuck (a deadlock, a C call that holds the GIL
    that long). Each serving worker sends one four times a second; a slow request does not
    stop it. Only with worker processes (gunicorn's ``--timeout``). stogie only."""

    access_log: StrPath | None = None
    """Where a line per request goes: a file path (appended to), ``'-'`` for standard
    output, or None (the default: no access log). The line is made and written by the
    engine, off the GIL, from a buffer: a slow disk drops lines (and says so), never holds
    a response. A change reaches a running server's next request."""

    access_log_format: str = ACCESS_LOG_COMBINED
    """gunicorn's atoms (``%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"``,
    Apache's combined format, is the default; also ``%(m)s %(U)s %(q)s %(H)s %(B)s %(T)s
    %(M)s %(D)s %(L)s %(p)s``, ``%({header}i)s`` and ``%({header}o)s``), or ``'json'`` for
    one JSON object per line."""

    forwarded_allow_ips: AddressList = "127.0.0.1,::1"
    """Peers whose ``Forwarded`` / ``X-Forwarded-For``, ``-Proto``, ``-Host``, ``-Port``
    headers are believed (gunicorn's setting): a comma-separated list (or a list) of
    addresses and networks, ``'*'`` for any peer, ``''`` for none. From these peers the
    headers set ``REMOTE_ADDR`` (the rightmost address that is not itself a trusted proxy),
    ``wsgi.url_scheme``, ``HTTP_HOST`` and ``SERVER_PORT``; from others they are passed to the
    app untouched. Clients on a UNIX socket are trusted."""

    proxy_protocol: bool = False
    """If True, every connection starts with HAProxy's PROXY protocol header (v1 or v2),
    which gives the client's address; anything else on the listener is refused."""

    proxy_allow_from: AddressList = "127.0.0.1,::1"
    """Peers allowed to send the PROXY protocol header (addresses, networks, or ``'*'``);
    clients on a UNIX socket always are."""

    metrics_bind: str | TCPAddress | None = None
    """``'HOST:PORT'`` (or a ``(host, port)`` tuple) on which to serve Prometheus metrics at
    ``/metrics``, on a listener of its own; None (the default) for none. With ``workers``,
    the supervisor serves the sum of its workers' counters and a few series per worker."""

    http_protocols: str | Sequence[str] = "h2,h1"
    """The protocols served, in order of preference (gunicorn's ``--http-protocols``):
    ``'h1'`` (HTTP/1.1), ``'h2'`` (HTTP/2), or both, comma-separated or a list. Over TLS the
    client chooses among them by ALPN (HTTP/2 first by default; a client that does not
    offer it gets HTTP/1.1); in cleartext HTTP/2 also needs :attr:`http2_cleartext`.
    stogie only (Cheroot speaks HTTP/1.1)."""

    http2_cleartext: bool = False
    """Serve cleartext HTTP/2 by prior knowledge (h2c: a connection that opens with the
    HTTP/2 preface) to the peers of :attr:`forwarded_allow_ips` (and UNIX socket clients):
    what a proxy in front (Envoy, Traefik, a platform's router) speaks to its upstream.
    Anyone else gets HTTP/1.1. ``Upgrade: h2c`` is never honoured: it lets a client smuggle
    requests past a proxy's checks. gunicorn's ``http2_cleartext``."""

    http2_max_concurrent_streams: int = 100
    """Streams an HTTP/2 client may have open at once, and the most requests of one
    connection queued or running in the pool at once (however fast a client opens and
    resets streams)."""

    http2_initial_window_size: int = 65535
    """Bytes of a request body an HTTP/2 client may send a stream ahead of the app reading
    them (the stream's flow-control window)."""

    http2_max_frame_size: int = 16384
    """The largest HTTP/2 frame payload a client may send (16384 to 16777215)."""

    http2_max_header_list_size: int = 65536
    """The largest header list an HTTP/2 client may send; a larger one gets a 431."""

    _native: NativeServer | None = None
    _supervisor: Supervisor | None = None
    _bound_addrs: Sequence[_Address]  # HTTPServer's

    if TYPE_CHECKING:  # HTTPServer's

        def _dispatch_target(self) -> Callable[..., object]: ...
        def _counters(self) -> dict[str, int | float]: ...

    # Settings that a running server picks up for the next request or connection.
    _LIVE: ClassVar[set[str]] = {
        "forwarded_allow_ips",
        "http_protocols",
        "http2_cleartext",
        *_HTTP2_LIMITS,
        "timeout",
        "max_request_header_size",
        "max_request_body_size",
        "server_name",
        "protocol",
        "software",
        "allow_underscore_headers",
        "max_request_line",
        "max_header_count",
        "max_header_field",
    }

    def _setattr(self, name: str, value: object) -> None:
        # The class's __setattr__ (below): hidden from type checkers, for which an assignment
        # to an attribute that no class declares stays an error.
        if name in ("access_log", "access_log_format") and self._native is not None:
            previous = getattr(self, name)
            object.__setattr__(self, name, value)
            try:
                if self._supervisor is None:
                    self._push_access_log()
            except Exception:
                object.__setattr__(self, name, previous)
                raise
            return
        if name in ("peercreds_enabled", "peercreds_resolve_enabled"):
            object.__setattr__(self, name, value)
            if self._native is not None:
                self._native.set_peercreds(
                    bool(self.peercreds_enabled), bool(self.peercreds_resolve_enabled)
                )
            return
        if name in self._LIVE and self._native is not None:
            missing = object()
            previous = self.__dict__.get(name, missing)
            object.__setattr__(self, name, value)
            try:
                self._push_settings()
            except Exception:
                # A value the engine refuses does not stay: the server keeps its settings.
                if previous is missing:
                    object.__delattr__(self, name)
                else:
                    object.__setattr__(self, name, previous)
                raise
            return
        object.__setattr__(self, name, value)
        if name == "gateway" and self._native is not None:
            self._native.set_mode(self._gateway_mode())
            self._native.set_app(self._dispatch_target())
        elif name == "wsgi_app" and self._native is not None:
            self._native.set_app(self._dispatch_target())

    if not TYPE_CHECKING:
        __setattr__ = _setattr

    @property
    def bind_addr(self) -> BindAddr:
        """Return the interface on which to listen for connections.

        For TCP sockets, a (host, port) tuple. Host values may be any
        :term:`IPv4` or :term:`IPv6` address, or any valid hostname.
        The string 'localhost' is a synonym for '127.0.0.1' (or '::1',
        if your hosts file prefers :term:`IPv6`).
        The string '0.0.0.0' is a special :term:`IPv4` entry meaning
        "any active interface" (INADDR_ANY), and '::' is the similar
        IN6ADDR_ANY for :term:`IPv6`.
        The empty string or :py:data:`None` are not allowed.

        For UNIX sockets, supply the file name as a string; a name starting
        with a NUL byte is a Linux abstract socket.
        """
        return self._bind_addr

    @bind_addr.setter
    def bind_addr(self, value: BindAddr) -> None:
        """Set the interface on which to listen for connections."""
        if isinstance(value, tuple) and value[0] in {"", None}:
            raise ValueError(
                "Host values of '' or None are not allowed. "
                "Use '0.0.0.0' (IPv4) or '::' (IPv6) instead "
                "to listen on all active interfaces.",
            )
        self._bind_addr = value

    def _gateway_mode(self) -> Literal["wsgi", "wsgi_u0", "native"]:
        # Only a class that declares it itself: a subclass of one may override what the
        # engine would run instead of it, so it runs as a native gateway.
        mode: Literal["wsgi", "wsgi_u0", "native"]
        mode = getattr(self.gateway, "__dict__", {}).get("_engine_mode", "native")
        return mode

    def _environ_template(self) -> dict[str, Any]:
        """The constant part of every WSGI environ."""
        from ._native import FileWrapper

        # An inherited descriptor's real address (its port) is known once bound.
        bind = self._bound_addrs[0] if self._bound_addrs else self.bind_addr
        wsgi_version = ("u", 0) if self._gateway_mode() == "wsgi_u0" else (1, 0)
        return {
            "ACTUAL_SERVER_PROTOCOL": self.protocol,
            "REMOTE_ADDR": "",
            "REMOTE_PORT": "",
            "SCRIPT_NAME": "",
            "SERVER_NAME": self.server_name,
            "SERVER_PORT": str(bind[1]) if isinstance(bind, tuple) else "",
            "SERVER_SOFTWARE": self.software or "%s Server" % self.version,
            "wsgi.errors": sys.stderr,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "wsgi.multiprocess": self._worker_count() > 1,
            "wsgi.multithread": True,
            "wsgi.run_once": False,
            "wsgi.url_scheme": "http",
            "wsgi.version": wsgi_version,
        }

    def _check_protocols(self) -> None:
        """Refuse, before anything is bound, protocol settings that cannot serve."""
        protocols = _http_protocols(self.http_protocols)
        for name in _HTTP2_LIMITS:
            _http2_limit(name, getattr(self, name))
        if protocols == ["h2"] and self.ssl_adapter is None and not self.http2_cleartext:
            raise ValueError(
                "http_protocols 'h2' alone serves nobody without TLS: give a certificate,"
                " turn http2_cleartext on (for a proxy in front), or serve 'h2,h1'"
            )

    def _push_settings(self) -> None:
        native = self._native
        assert native is not None
        native.configure(
            forwarded_allow_ips=_address_list("forwarded_allow_ips", self.forwarded_allow_ips),
            time_requests=self.metrics_bind is not None,
            timeout=float(self.timeout),
            max_request_header_size=int(self.max_request_header_size or 0),
            max_request_body_size=int(self.max_request_body_size or 0),
            server_header=str(self.server_name),
            protocol=self.protocol,
            allow_underscore_headers=bool(self.allow_underscore_headers),
            max_request_line=int(self.max_request_line),
            max_header_count=int(self.max_header_count),
            max_header_field=int(self.max_header_field),
            http_protocols=_http_protocols(self.http_protocols),
            http2_cleartext=bool(self.http2_cleartext),
            **{name: _http2_limit(name, getattr(self, name)) for name in _HTTP2_LIMITS},
        )
        native.set_template(self._environ_template())

    def _push_access_log(self) -> None:
        """Opens the access log in this process (its writer thread does not survive a
        fork: worker processes open their own)."""
        log = self.access_log
        target = None
        if log is not None:
            if not isinstance(log, (str, os.PathLike)) or not os.fspath(log):
                raise ValueError(f"access_log must be a file path or '-', not {log!r}")
            fmt = self.access_log_format
            if not isinstance(fmt, str):
                raise ValueError(f"access_log_format must be a string, not {fmt!r}")
            target = (os.fspath(log), fmt)
        assert self._native is not None
        self._native.configure(access_log=target)

    def _check_access_log(self) -> None:
        """Open the access log file once, in the process that forks the workers: a path that
        cannot be written then fails prepare(), not each worker as it starts."""
        log = self.access_log
        if isinstance(log, (str, os.PathLike)) and os.fspath(log) not in ("", "-"):
            try:
                open(log, "a").close()
            except OSError as exc:
                msg = f"cannot open the access log {os.fspath(log)}: {exc.strerror or exc}"
                raise OSError(exc.errno, msg) from None

    def _configure(self, **settings: Any) -> None:
        if self._native is not None:
            self._native.configure(**settings)

    def _worker_count(self) -> int:
        workers = self.workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a whole number of at least 1, not {workers!r}")
        return workers

    def _recycling(self) -> tuple[int, int, int, float]:
        """The recycling settings, checked: ``(max_requests, jitter, max_memory_bytes,
        lifetime_seconds)``."""

        def whole(name: str) -> int:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number of at least 0, not {value!r}")
            return value

        max_requests = whole("max_requests")
        jitter = whole("max_requests_jitter")
        if jitter and not max_requests:
            raise ValueError("max_requests_jitter needs max_requests")
        return (
            max_requests,
            jitter,
            int(self._amount("max_worker_memory") * 2**20),
            self._amount("worker_lifetime"),
        )

    def _amount(self, name: str) -> float:
        """The setting ``name``, checked to be a finite number of at least 0."""
        value = getattr(self, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 <= value < float("inf")
        ):
            raise ValueError(f"{name} must be a number of at least 0, not {value!r}")
        return value

    def _supervised(self) -> bool:
        """Whether worker processes under a supervisor serve (several, or any recycled)."""
        return self._worker_count() > 1 or any(self._recycling())

    def _bind_addrs(self) -> list[BindAddr]:
        extra = self.extra_bind_addrs
        looks_like_one = isinstance(extra, tuple) and len(extra) == 2 and isinstance(extra[1], int)
        if not isinstance(extra, (list, tuple)) or looks_like_one:
            raise ValueError(f"extra_bind_addrs must be a list of addresses, not {extra!r}")
        return [self.bind_addr, *extra]

    def _bind_args(
        self, bind: BindAddr | None = None
    ) -> tuple[Literal["tcp", "unix", "abstract", "fd"], str | bytes | int, int]:
        bind = self.bind_addr if bind is None else bind
        if isinstance(bind, tuple):
            host, port = bind[0], int(bind[1])
            return "tcp", host, port
        if isinstance(bind, (bytes, bytearray)):
            bind = bytes(bind).decode("utf-8", "surrogateescape")
        if isinstance(bind, str):
            if bind.startswith("\0"):
                return "abstract", bind[1:].encode("utf-8", "surrogateescape"), 0
            return "unix", os.fspath(bind), 0
        if isinstance(bind, int):
            return "fd", bind, 0
        raise ValueError(f"bind_addr must be a (host, port) tuple or a socket path, not {bind!r}")
