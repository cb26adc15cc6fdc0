"""A high-speed HTTP/1.1 server with Cheroot's API, on stogie's Rust engine.

For those of you wanting to understand internals of this module, here's the
basic call flow. The server's listening socket, its connections, request
parsing and response framing all live in the Rust engine; each request is
handed to a pool of Python worker threads, which run the gateway::

    server = HTTPServer(bind_addr, gateway)
    server.start()
    -> prepare(): bind, start the engine and the worker pool
    -> serve(): wait until stop() or an interrupt

    With workers > 1, prepare() binds, then forks that many worker processes,
    each starting its own engine and pool on the shared socket; serve() then
    supervises them (see stogie.workers).

    for each request, in a worker thread:
        WSGI gateways (wsgi.Gateway_10, wsgi.Gateway_u0) run natively;
        any other Gateway subclass gets gateway(HTTPRequest).respond()
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import weakref

from . import ssl
from . import workers as workers_module
from ._gateway import IS_UID_GID_RESOLVABLE, Gateway, HTTPConnection, HTTPRequest
from ._native import ACCESS_LOG_COMBINED, NativeServer  # noqa: F401 - importable from here
from ._settings import Settings, _address_list, _metrics_address, _Pool, _Stats

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from socket import socket as Socket
    from typing import NoReturn

    from ._native import NativeRequest, _Address
    from ._typing import BindAddr, StartResponse, WSGIApplication, WSGIEnvironment
    from .systemd import Notifier

__all__ = (
    "IS_UID_GID_RESOLVABLE",
    "Gateway",
    "HTTPConnection",
    "HTTPRequest",
    "HTTPServer",
    "get_ssl_adapter_class",
)

comma_separated_headers: list[bytes] = [
    b"Accept",
    b"Accept-Charset",
    b"Accept-Encoding",
    b"Accept-Language",
    b"Accept-Ranges",
    b"Allow",
    b"Cache-Control",
    b"Connection",
    b"Content-Encoding",
    b"Content-Language",
    b"Expect",
    b"If-Match",
    b"If-None-Match",
    b"Pragma",
    b"Proxy-Authenticate",
    b"TE",
    b"Trailer",
    b"Transfer-Encoding",
    b"Upgrade",
    b"Vary",
    b"Via",
    b"Warning",
    b"WWW-Authenticate",
]
"""Cheroot's list of the header fields whose repeated lines join with commas (CherryPy reads
it for trailers). The engine joins every repeated field so (PEP 3333); the list is kept for
code that imports it."""

_error_logger = logging.getLogger("stogie.error")

# Servers still running when the interpreter exits are stopped first: worker threads must not
# try to take the GIL from an interpreter that is being torn down. Then (its atexit handler
# runs after this one) `_native.prepare_exit` waits for requests still in the app and keeps
# stogie's threads out of Python for good.
_running_servers: weakref.WeakSet[HTTPServer] = weakref.WeakSet()


@atexit.register
def _stop_running_servers() -> None:
    for server in list(_running_servers):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - exiting anyway; one failure must not block the rest
            _error_logger.exception("Error stopping %s at exit", server)


_STOPPING_FOR_INTERRUPT = Exception()  # sentinel used during shutdown


def _no_wsgi_app(environ: WSGIEnvironment, start_response: StartResponse) -> NoReturn:
    """What serves requests while a server's ``wsgi_app`` is None (Cheroot allows it)."""
    raise RuntimeError("no WSGI application is set: assign server.wsgi_app before serving")


# These may either be ssl.Adapter subclasses or the string names
# of such classes (in which case they will be lazily loaded).
ssl_adapters: dict[str, str | type[ssl.Adapter]] = {
    "builtin": "stogie.ssl.builtin.BuiltinSSLAdapter",
    "pyopenssl": "stogie.ssl.pyopenssl.pyOpenSSLAdapter",
}


def get_ssl_adapter_class(name: str = "builtin") -> type[ssl.Adapter]:
    """Return an SSL adapter class for the given name."""
    adapter = ssl_adapters[name.lower()]
    if isinstance(adapter, str):
        import importlib

        module_name, _, class_name = adapter.rpartition(".")
        adapter = getattr(importlib.import_module(module_name), class_name)
    return adapter


class HTTPServer(Settings):
    """An HTTP server."""

    _interrupt: BaseException | None = None

    ready: bool = False
    """Internal flag which indicating the socket is accepting connections."""

    socket: Socket | None = None
    """The listening socket of ``bind_addr`` once prepared, None before and after stop(),
    as Cheroot's (CherryPy reads the port bound for port 0 from it). The engine owns the
    socket it serves; this is a duplicate of it, for ``getsockname()`` and socket options:
    closing it does not stop the server."""

    requests: _Pool
    """The pool of worker threads, Cheroot's ``ThreadPool``, with its ``min``, ``max``,
    ``idle``, ``qsize`` and ``threads``."""

    if TYPE_CHECKING:
        wsgi_app: WSGIApplication | None
        """The WSGI application, served when ``gateway`` is a WSGI gateway (a
        :class:`stogie.wsgi.Server` sets both)."""

        _startup_line: str  # the stogie command's (stogie.cli)

    stats: _Stats
    """Cheroot's statistics, a dict of values and of functions that take it and return one
    (``stats["Requests"](stats)``), counted only while ``stats["Enabled"]`` is true."""

    def __init__(
        self,
        bind_addr: BindAddr,
        gateway: type[Gateway],
        minthreads: int = 10,
        maxthreads: int = -1,
        server_name: str | None = None,
        peercreds_enabled: bool = False,
        peercreds_resolve_enabled: bool = False,
        reuse_port: bool = False,
    ) -> None:
        """Initialize HTTPServer instance.

        Args:
            bind_addr (tuple): network interface to listen to
            gateway (Gateway): gateway for processing HTTP requests
            minthreads (int): minimum number of threads for HTTP thread pool
            maxthreads (int): maximum number of threads for HTTP thread pool
            server_name (str): web server name to be advertised via Server
                HTTP header
            peercreds_enabled (bool): whether to look up peer credentials
                on UNIX sockets
            peercreds_resolve_enabled (bool): whether to resolve peer
                credentials to user and group names
            reuse_port (bool): if True SO_REUSEPORT option would be set to
                socket
        """
        self.bind_addr = bind_addr
        self.gateway = gateway
        self.requests = _Pool(self, min=minthreads or 1, max=maxthreads)
        self.server_name = server_name or self.version
        self.peercreds_enabled = peercreds_enabled
        self.peercreds_resolve_enabled = peercreds_enabled and peercreds_resolve_enabled
        self.reuse_port = reuse_port
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.clear_stats()

    def clear_stats(self) -> None:
        """Reset server stat counters.."""
        self._start_time: float | None = None
        self._run_time: float = 0
        self.stats = _Stats(
            self,
            {
                "Enabled": False,
                "Bind Address": lambda s: repr(self.bind_addr),
                "Run time": lambda s: (not s["Enabled"]) and -1 or self.runtime(),
                "Accepts": 0,
                "Accepts/sec": lambda s: s["Accepts"] / max(self.runtime(), 1e-9),
                "Queue": lambda s: getattr(self.requests, "qsize", None),
                "Threads": lambda s: getattr(self.requests, "threads", 0),
                "Threads Idle": lambda s: getattr(self.requests, "idle", None),
                "Socket Errors": 0,
                "Requests": lambda s: (
                    (not s["Enabled"]) and -1 or self._counters().get("requests", 0)
                ),
                "Bytes Read": lambda s: (
                    (not s["Enabled"]) and -1 or self._counters().get("bytes_read", 0)
                ),
                "Bytes Written": lambda s: (
                    (not s["Enabled"]) and -1 or self._counters().get("bytes_written", 0)
                ),
                "Work Time": lambda s: (
                    (not s["Enabled"]) and -1 or self._counters().get("work_time", 0.0)
                ),
                "Read Throughput": lambda s: (
                    (not s["Enabled"]) and -1 or (s["Bytes Read"](s) / max(s["Work Time"](s), 1e-9))
                ),
                "Write Throughput": lambda s: (
                    (not s["Enabled"])
                    and -1
                    or (s["Bytes Written"](s) / max(s["Work Time"](s), 1e-9))
                ),
                "Worker Threads": {},
            },
        )
        if self._native is not None:
            # A fresh stats dict starts disabled, as in Cheroot: so does the counting.
            self._native.configure(stats_enabled=False)
            self._native.clear_counters()
        # CherryPy's statistics, kept there (logging declares no such attribute).
        logging.statistics = getattr(logging, "statistics", {})  # type: ignore[attr-defined]
        logging.statistics["Stogie HTTPServer %d" % id(self)] = self.stats  # type: ignore[attr-defined]

    def runtime(self) -> float:
        """Return server uptime."""
        if self._start_time is None:
            return self._run_time
        return self._run_time + (time.time() - self._start_time)

    def __str__(self) -> str:
        """Render Server instance representing bind address."""
        return f"{self.__module__}.{self.__class__.__name__}({self.bind_addr!r})"

    def safe_start(self) -> None:
        """Run the server forever, and stop it cleanly on exit."""
        try:
            self.start()
        except KeyboardInterrupt as kb_intr_exc:
            underlying_interrupt = self.interrupt
            if not underlying_interrupt:
                self.interrupt = kb_intr_exc
            raise kb_intr_exc from underlying_interrupt
        except SystemExit as sys_exit_exc:
            underlying_interrupt = self.interrupt
            if not underlying_interrupt:
                self.interrupt = sys_exit_exc
            raise sys_exit_exc from underlying_interrupt

    # Cheroot's prepare() and its helpers -------------------------------------

    def _dispatch_target(self) -> Callable[..., object]:
        """The callable the worker threads run for each request."""
        mode = self._gateway_mode()
        if mode != "native":
            app: WSGIApplication = getattr(self, "wsgi_app", None) or _no_wsgi_app
            return app
        gateway = self.gateway

        def dispatch(native_request: NativeRequest) -> None:
            # None (no gateway given) fails each request, as in Cheroot.
            gateway(HTTPRequest(self, native_request)).respond()  # type: ignore[misc]

        return dispatch

    def reopen_access_log(self) -> None:
        """Reopen the access log file (after logrotate moved it): ``kill -USR1`` does it."""
        if self._supervisor is not None:
            self._supervisor.signal_workers(signal.SIGUSR1)
        elif self._native is not None:
            self._native.reopen_access_log()

    def metrics(self) -> str:
        """The Prometheus text the ``/metrics`` endpoint serves now (str)."""
        native = self._native or self._last_native
        return native.render_metrics() if native is not None else ""

    def _serve_metrics(self) -> None:
        bind = self.metrics_bind
        if bind is None:
            return
        host, port = _metrics_address(bind)
        assert self._native is not None
        try:
            bound = self._native.serve_metrics(host, port)
        except OSError as exc:
            raise OSError(exc.errno, f"metrics_bind {bind!r}: {exc.strerror or exc}") from exc
        object.__setattr__(self, "metrics_bind_addr", tuple(bound))

    metrics_bind_addr: tuple[str, int] | None = None
    """The address ``/metrics`` is served on (port 0 resolved), once the server runs."""

    def _counters(self) -> dict[str, int | float]:
        native = self._native or self._last_native
        return native.counters() if native is not None else {}

    _last_native: NativeServer | None = None

    def _on_app_error(self, msg: str, exc: BaseException | None) -> None:
        """Log an application failure with its traceback (``exc``; None: none to show),
        through error_log.

        ``KeyboardInterrupt`` and ``SystemExit`` raised by the app are a request to stop
        the server, as in Cheroot: they become its ``interrupt``, which stops it and makes
        ``serve()`` (and ``safe_start()``) raise them.
        """
        if exc is None:
            # The app raised nothing (it returned what is not a WSGI body): the message says
            # all, and a traceback would point into stogie only.
            self.error_log(msg, level=logging.ERROR)
            return
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self.error_log(f"{msg} ({exc!s})", level=logging.DEBUG)
            self.error_log(f"Setting the server interrupt flag to {exc!r}", level=logging.DEBUG)
            self.interrupt = exc
            return
        try:
            raise exc
        except BaseException:
            self.error_log(msg, level=logging.ERROR, traceback=True)

    def _on_engine_log(self, msg: str, level: int) -> None:
        self.error_log(msg, level=level)

    def prepare(self) -> None:
        """Prepare server to serving requests.

        It binds a socket's port, setups the socket to ``listen()`` and does
        other preparing things.
        """
        self._interrupt = None
        if self.software is None:
            self.software = "%s Server" % self.version
        if self._native is not None:
            raise RuntimeError("the server is already prepared; call stop() first")
        app = getattr(self, "wsgi_app", None)
        if self._gateway_mode() != "native" and app is not None and not callable(app):
            # None is allowed, as in Cheroot: the app may be set once the server runs.
            raise TypeError("wsgi_app must be a WSGI callable: app(environ, start_response)")
        workers = self._worker_count()
        recycling = self._recycling()
        worker_timeout = self._amount("worker_timeout")
        supervised = self._supervised()
        addrs = self._bind_addrs()
        self._check_protocols()
        if supervised:
            workers_module.check_can_fork(workers)
            self._check_access_log()

        native = NativeServer(
            self._dispatch_target(),
            {},
            self._gateway_mode(),
            self._on_app_error,
            self._on_engine_log,
        )
        if self.ssl_adapter is not None:
            ssl.configure(self, native)
            # A failed handshake is a debug message (a refused client certificate a warning):
            # dropped in the engine, without taking the GIL, unless stogie.error would show it
            # (or error_log is the application's own).
            if type(self).error_log is HTTPServer.error_log:
                native.set_log_level(min(_error_logger.getEffectiveLevel(), 40))
        socket_files: list[str] = []
        bound_addrs: list[_Address] = []
        for index, addr in enumerate(addrs):
            kind, target, port = self._bind_args(addr)
            try:
                bound = native.bind(
                    kind,
                    target,
                    port=port,
                    backlog=int(self.request_queue_size),
                    reuse_port=bool(self.reuse_port),
                    slots=workers,
                )
            except OSError as exc:
                native.stop(0.0)
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                msg = f"No socket could be created for {addr!r}: {reason}"
                error = OSError(exc.errno, msg)
                error.bind_addr = addr  # type: ignore[attr-defined]
                raise error from exc
            if kind == "unix":
                socket_files.append(bound)  # type: ignore[arg-type]  # its path
            if kind == "tcp":
                # Keep the host as given, with the resolved port (Cheroot does the same).
                bound = (addr[0], bound[1])  # type: ignore[index,assignment]  # both (host, port)
            bound_addrs.append(bound)
            if index == 0 and kind != "fd":
                self._bind_addr = bound
        object.__setattr__(self, "_bound_addrs", bound_addrs)
        fd = native.listener_fd(0)
        listening = None if fd is None else socket.socket(fileno=os.dup(fd))
        object.__setattr__(self, "socket", listening)
        object.__setattr__(self, "_native", native)
        self._push_settings()
        if supervised:
            # This process supervises; the workers it forks start the engine on the sockets.
            # Each worker process counts its metrics in a slot of its own, shared with this
            # one: room for two generations at once (a reload) and a few added workers.
            native.share_metrics(workers_module.metrics_capacity(workers))
            max_requests, jitter, max_memory, lifetime = recycling
            supervisor = workers_module.Supervisor(
                self,
                workers,
                socket_file=socket_files,
                loader=self._app_loader,
                recycling=workers_module.Recycling(max_requests, jitter, max_memory, lifetime),
                notifier=self._notifier,
                worker_timeout=worker_timeout,
            )
            try:
                supervisor.start()
            except BaseException:
                object.__setattr__(self, "_native", None)
                if self.socket is not None:
                    self.socket.close()
                    object.__setattr__(self, "socket", None)
                native.stop(0.0)
                raise
            object.__setattr__(self, "_supervisor", supervisor)
            self._mark_started()
            self._serve_metrics_or_stop()
            return
        self._start_engine()
        self._serve_metrics_or_stop()

    def _serve_metrics_or_stop(self) -> None:
        try:
            self._serve_metrics()
        except BaseException:
            self.stop()
            raise

    _app_loader: Callable[[], tuple[object, str]] | None = None
    _notifier: Notifier | None = None
    _bound_addrs: Sequence[_Address] = ()

    @property
    def bound_addrs(self) -> list[tuple[str, int] | str]:
        """Every address served once prepared: ``bind_addr``'s, then ``extra_bind_addrs``'."""
        return list(self._bound_addrs)

    def _use_app(self, app: WSGIApplication | type[Gateway]) -> None:
        """Serve ``app``: a WSGI callable, or a ``Gateway`` subclass as Cheroot allows."""
        if isinstance(app, type) and issubclass(app, Gateway):
            self.gateway = app
        else:
            self.wsgi_app = app  # type: ignore[assignment]  # not a Gateway: a WSGI callable

    def reload(self) -> None:
        """Replace every worker process by a new one without refusing a request.

        The new workers start (re-importing the application when the ``stogie`` command
        named it), and once every one of them serves, the old ones finish what they have and
        exit; if one of the new workers fails, they all stop and the old ones go on. As
        SIGHUP to the supervising process. Needs worker processes (``workers`` > 1 or a
        recycling setting) and a running server.
        """
        self._need_supervisor().reload()

    def add_worker(self) -> None:
        """Add one worker process (as SIGTTIN)."""
        self._need_supervisor().add_worker()

    def remove_worker(self) -> None:
        """Remove the last worker process, gracefully (as SIGTTOU); one is the fewest."""
        self._need_supervisor().remove_worker()

    def _need_supervisor(self) -> workers_module.Supervisor:
        supervisor = self._supervisor
        if supervisor is None:
            raise RuntimeError(
                "no worker processes to manage: set workers > 1 (or a recycling setting)"
                " and prepare() the server first"
            )
        return supervisor

    def _start_engine(
        self,
        remove_socket_file: bool = True,
        slot: int = 0,
        metrics_slot: int | None = None,
        count: bool = False,
    ) -> None:
        """Start the engine and the pool on the socket bound by prepare().

        ``slot`` is a worker process's number: with a TCP address, each worker has its own
        listening socket in one SO_REUSEPORT group (even spread of connections).
        ``metrics_slot`` is its own place in the metrics shared with the supervisor.
        ``count``: count the requests served from the first one on (a worker's recycling).
        """
        native = self._native
        assert native is not None
        native.configure(stats_enabled=bool(self.stats.get("Enabled")) or count)
        # Before the engine takes its first connection: every request is logged.
        self._push_access_log()
        pool = self.requests
        native.start(
            int(pool.min),
            int(pool.max),
            int(pool.accepted_queue_size),
            float(pool.accepted_queue_timeout),
            io_threads=int(self.io_threads),
            peercreds=bool(self.peercreds_enabled),
            peercreds_resolve=bool(self.peercreds_resolve_enabled),
            idle_timeout=float(pool.idle_timeout),
            remove_socket_file=remove_socket_file,
            slot=slot,
            metrics_slot=metrics_slot,
            proxy_protocol=(
                _address_list("proxy_allow_from", self.proxy_allow_from)
                if self.proxy_protocol
                else None
            ),
        )
        self._mark_started()

    def _mark_started(self) -> None:
        self._stopped.clear()
        self._start_time = time.time()
        self.ready = True
        _running_servers.add(self)

    def serve(self) -> None:
        """Serve requests, after invoking :func:`prepare()`."""
        done = threading.Event()
        object.__setattr__(self, "_serve_loop", (threading.current_thread(), done))
        try:
            self._serve()
        finally:
            done.set()

    def _serve(self) -> None:
        supervisor = self._supervisor
        if supervisor is not None:
            # Until stop(), or SIGTERM or SIGINT when this is the main thread.
            received = supervisor.serve()
            self.stop()
            if received == "SIGINT" and not self.interrupt:
                raise KeyboardInterrupt
        while self.ready and not self.interrupt:
            # A timed wait keeps the main thread responsive to signals.
            self._stopped.wait(0.25)
        if self.interrupt:
            while self._stopping_for_interrupt:
                time.sleep(0.05)
            if self.interrupt:
                raise self.interrupt

    _serve_loop: tuple[threading.Thread, threading.Event] | None = None

    @contextlib.contextmanager
    def _run_in_thread(self) -> Iterator[threading.Thread]:
        """Context manager for running this server in a thread."""
        self.prepare()
        thread = threading.Thread(target=self.serve)
        thread.daemon = True
        thread.start()
        try:
            yield thread
        finally:
            self.stop()

    def start(self) -> None:
        """Run the server forever.

        It is shortcut for invoking :func:`prepare()` then :func:`serve()`.
        """
        # We don't have to trap KeyboardInterrupt or SystemExit here,
        # because cherrypy.server already does so, calling self.stop() for us.
        # If you're using this server with another framework, you should
        # trap those exceptions in whatever code block calls start().
        self.prepare()
        self.serve()

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        """Write error message to log.

        Args:
            msg (str): error message
            level (int): logging level
            traceback (bool): add traceback to output or not
        """
        _error_logger.log(level, msg, exc_info=bool(traceback))

    @property
    def interrupt(self) -> BaseException | None:
        """Flag interrupt of the server."""
        return self._interrupt

    @interrupt.setter
    def interrupt(self, interrupt: BaseException | None) -> None:
        """Perform the shutdown of this server and save the exception.

        The exception is raised from the thread running :py:meth:`serve`
        once :py:meth:`stop` has completed.
        """
        self._interrupt = _STOPPING_FOR_INTERRUPT
        if isinstance(interrupt, KeyboardInterrupt):
            self.error_log("Keyboard Interrupt: shutting down")
        if isinstance(interrupt, SystemExit):
            self.error_log("SystemExit raised: shutting down")
        # serve() ends only once the interrupt is set: stop() must not wait for it.
        self._stop(wait_for_serve=False)
        self._interrupt = interrupt

    @property
    def _stopping_for_interrupt(self) -> bool:
        """Return whether the server is responding to an interrupt."""
        return self._interrupt is _STOPPING_FOR_INTERRUPT

    def stop(self) -> None:
        """Gracefully shutdown a server that is serving forever.

        Waits up to ``shutdown_timeout`` seconds for requests in flight, then for
        ``serve()`` to return in its thread. Calling it again, or on a server that never
        started, does nothing.
        """
        self._stop(wait_for_serve=True)

    def _stop(self, wait_for_serve: bool) -> None:
        self._stop_engine()
        loop = self._serve_loop
        if wait_for_serve and loop is not None and loop[0] is not threading.current_thread():
            # serve() sees the stop within its 0.25 s wait; an app that called stop() from
            # its own request is not kept waiting on its own server for long either.
            loop[1].wait(5)

    def _stop_engine(self, drain: bool = False) -> None:
        with self._stop_lock:
            native = self._native
            if native is None:
                self.ready = False
                return
            self.ready = False
            if self._start_time is not None:
                self._run_time += time.time() - self._start_time
                self._start_time = None
            supervisor = self._supervisor
            if supervisor is not None:
                supervisor.stop()
                object.__setattr__(self, "_supervisor", None)
            native.stop_metrics()
            native.stop(float(self.shutdown_timeout), drain=drain)
            _running_servers.discard(self)
            object.__setattr__(self, "_last_native", native)
            object.__setattr__(self, "_native", None)
            listening = self.socket
            object.__setattr__(self, "socket", None)
            if listening is not None:
                listening.close()
            self._stopped.set()

    def reload_tls(self) -> None:
        """Read the TLS certificate and key files again: new handshakes use them, open
        connections keep theirs. With worker processes this is a reload (as SIGHUP to the
        supervisor): new workers read the files, and if they cannot, the old ones go on.

        Raises:
            stogie.ssl.TLSError: the new files cannot be served; the old pair stays.
        """
        ssl.reload(self)

    def bind(self, family: int, type: int, proto: int = 0) -> NoReturn:
        """Kept for compatibility: the engine creates and binds its sockets in prepare()."""
        raise NotImplementedError("stogie binds in prepare(); set bind_addr instead")

    @staticmethod
    def resolve_real_bind_addr(socket_: Socket) -> tuple[str, int] | str:
        """Retrieve actual bind address from bound socket."""
        bind_addr = socket_.getsockname()
        if socket_.family in (socket.AF_INET, socket.AF_INET6):
            host_port: tuple[str, int] = bind_addr[:2]
            return host_port
        if isinstance(bind_addr, bytes):
            bind_addr = bind_addr.decode("utf-8", "surrogateescape")
        path: str = bind_addr
        return path
