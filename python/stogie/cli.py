"""The ``stogie`` command: serve a WSGI application from the command line.

Usage::

    stogie [options] [MODULE[:ATTR]]

    stogie                                  # the built-in demo app on 127.0.0.1:8080
    stogie myproject.wsgi                   # myproject/wsgi.py, `application` or `app`
    stogie myapp:wsgi_app --bind 0.0.0.0:9000 --threads 8
    stogie myapp --bind [::1]:8080          # IPv6
    stogie myapp --bind /run/myapp.sock     # UNIX socket
    stogie myapp --bind @myapp              # abstract UNIX socket (Linux)
    stogie myapp --workers 4                # 4 processes sharing the socket

The options are Cheroot's (``cheroot --help``), plus stogie's own: ``--workers``,
recycling (``--max-requests``, ``--max-worker-memory``, ``--worker-lifetime``),
``--reload`` (development), ``--config``, ``--print-config``, ``--pid``, ``--log-level``
and ``--log-config``. Every option is also read from ``STOGIE_<NAME>`` in the environment
and from the ``--config`` TOML file (``stogie.config``). Unlike Cheroot's command, MODULE
is looked up from the current directory (after ``--chdir``), and a
``stogie.server.Gateway`` subclass may be named instead of a WSGI callable, as Cheroot
allows.

Every usage or start-up error is one line on stderr and exit status 2 (a
module that raises while imported also gets its traceback). SIGINT and SIGTERM
stop the server gracefully and the command exits with status 0; a second one,
while running requests finish, exits at once with status 1. With ``--workers N``
the command supervises N worker processes (``stogie.workers``): the same signals
stop them all gracefully, a worker that dies is replaced, SIGHUP reloads the app into new
workers without refusing a request, and SIGTTIN and SIGTTOU add and remove a worker.
Sockets passed by systemd are served when no ``--bind`` is given, and systemd is told of
the server's state when ``NOTIFY_SOCKET`` is set (``stogie.systemd``).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import sys
import urllib.parse

from . import __version__, config, reloader, systemd, workers, wsgi
from . import server as server_module
from ._cli import PROG, CLIError, _say
from ._cli.app import DEFAULT_ATTRS, DEMO_APP, _is_gateway_class, load_app
from ._cli.bind import DEFAULT_BIND, _describe_bind, describe_served, format_bind, parse_bind
from ._cli.options import (
    LOG_LEVELS,
    RECYCLING_OPTIONS,
    SERVER_ATTRIBUTES,
    SERVER_OPTIONS,
    build_parser,
    defaults_in_effect,
)
from ._cli.run import REPEAT_SIGNAL_WINDOW, _remove_pid, _write_pid, serve_until_signalled
from ._settings import _metrics_address
from ._text import quantity
from .ssl import TLSError
from .ssl import _cli as tls_cli

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

    from ._typing import BindAddr, WSGIApplication

__all__ = (
    "DEFAULT_ATTRS",
    "DEFAULT_BIND",
    "DEMO_APP",
    "LOG_LEVELS",
    "PROG",
    "RECYCLING_OPTIONS",
    "REPEAT_SIGNAL_WINDOW",
    "SERVER_ATTRIBUTES",
    "SERVER_OPTIONS",
    "AbstractSocket",
    "Application",
    "BindLocation",
    "CLIError",
    "GatewayYo",
    "TCPSocket",
    "UnixSocket",
    "build_parser",
    "format_bind",
    "load_app",
    "main",
    "make_server",
    "parse_bind",
    "parse_wsgi_bind_addr",
    "parse_wsgi_bind_location",
    "serve_until_signalled",
    "startup_line",
)


# --- Cheroot's command-line API, for code that imports it -------------------------
#
# These keep Cheroot's results, lax as they are ("foo" is a host with no port, "u@h:1" is
# ("h", 1)); the `stogie` command itself reads --bind with the stricter parse_bind().


class BindLocation:
    """A class for storing the bind location for a stogie instance."""

    bind_addr: tuple[str, int] | str
    """The address, as ``bind_addr`` takes it."""


class TCPSocket(BindLocation):
    """TCPSocket."""

    bind_addr: tuple[str, int]

    def __init__(self, address: str, port: int) -> None:
        """Initialize.

        Args:
            address (str): Host name or IP address
            port (int): TCP port number
        """
        self.bind_addr = address, port


class UnixSocket(BindLocation):
    """UnixSocket."""

    bind_addr: str

    def __init__(self, path: str) -> None:
        """Initialize."""
        self.bind_addr = path


class AbstractSocket(BindLocation):
    """AbstractSocket."""

    bind_addr: str

    def __init__(self, abstract_socket: str) -> None:
        """Initialize."""
        self.bind_addr = f"\x00{abstract_socket}"


def parse_wsgi_bind_location(bind_addr_string: str) -> BindLocation:
    """Convert bind address string to a BindLocation (Cheroot's rules)."""
    # "@name" first: urlparse would read "//@name" as a host "name" with no port.
    if bind_addr_string.startswith("@"):
        return AbstractSocket(bind_addr_string[1:])
    match = urllib.parse.urlparse(f"//{bind_addr_string}")
    try:
        addr = match.hostname
        port = match.port
        if addr is not None or port is not None:
            # Either may be None, as in Cheroot ("foo" is a host with no port).
            return TCPSocket(addr, port)  # type: ignore[arg-type]
    except ValueError:
        pass
    return UnixSocket(path=bind_addr_string)


def parse_wsgi_bind_addr(bind_addr_string: str) -> tuple[str, int] | str:
    """Convert bind address string to bind address parameter (Cheroot's rules)."""
    return parse_wsgi_bind_location(bind_addr_string).bind_addr


class Application:
    """A WSGI application named on the command line (Cheroot's ``cli.Application``)."""

    @classmethod
    def resolve(cls, full_path: str) -> Application | GatewayYo:
        """Read WSGI app/Gateway path string and import application module.

        ``module[:attr]``, ``attr`` defaulting to ``application``. A
        ``stogie.server.Gateway`` subclass gives a :class:`GatewayYo`.
        """
        mod_path, _, app_path = full_path.partition(":")
        app = getattr(importlib.import_module(mod_path), app_path or "application")
        if _is_gateway_class(app):
            return GatewayYo(app)
        return cls(app)

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        """Initialize."""
        if not callable(wsgi_app):
            raise TypeError(
                "Application must be a callable object or stogie.server.Gateway subclass",
            )
        self.wsgi_app = wsgi_app

    def server_args(self, parsed_args: argparse.Namespace) -> dict[str, Any]:
        """Return keyword arguments for Server class."""
        args = {
            arg: value
            for arg, value in vars(parsed_args).items()
            if not arg.startswith("_") and value is not None
        }
        args.update(vars(self))
        return args

    def server(self, parsed_args: argparse.Namespace) -> wsgi.Server:
        """Return a ``stogie.wsgi.Server`` for Cheroot-style parsed arguments."""
        return wsgi.Server(**self.server_args(parsed_args))


class GatewayYo:
    """A ``stogie.server.Gateway`` subclass named on the command line."""

    def __init__(self, gateway: type[server_module.Gateway]) -> None:
        """Init."""
        self.gateway = gateway

    def server(self, parsed_args: argparse.Namespace) -> server_module.HTTPServer:
        """Return a ``stogie.server.HTTPServer`` for Cheroot-style parsed arguments."""
        server_args = dict(vars(self))
        server_args["bind_addr"] = parsed_args.bind_addr
        if parsed_args.max is not None:
            server_args["maxthreads"] = parsed_args.max
        if parsed_args.numthreads is not None:
            server_args["minthreads"] = parsed_args.numthreads
        return server_module.HTTPServer(**server_args)


def _check_thread_counts(opts: argparse.Namespace) -> None:
    numthreads = 10 if opts.numthreads is None else opts.numthreads
    if opts.max is not None and 0 < opts.max < numthreads:
        raise CLIError(f"--max-threads {opts.max} is less than --threads {numthreads}")


def make_server(
    opts: argparse.Namespace,
    bind_addr: BindAddr,
    app: WSGIApplication | type[server_module.Gateway] | None,
) -> server_module.HTTPServer:
    """Build the server for parsed options; options not given keep the server's defaults.

    A WSGI callable gets a ``stogie.wsgi.Server``; a ``stogie.server.Gateway``
    subclass gets a ``stogie.server.HTTPServer``, as in Cheroot.
    """
    settings = {
        name: getattr(opts, name) for name in SERVER_OPTIONS if getattr(opts, name) is not None
    }
    if _is_gateway_class(app):
        server = server_module.HTTPServer(
            bind_addr,
            gateway=app,
            minthreads=settings.pop("numthreads", 10),
            maxthreads=settings.pop("max", -1),
            server_name=settings.pop("server_name", None),
        )
        # The rest are attributes of HTTPServer, not constructor arguments; the
        # accepted-queue settings belong to the WSGI server's pool only.
        for name in ("timeout", "shutdown_timeout", "request_queue_size"):
            if name in settings:
                setattr(server, name, settings[name])
        return server

    return wsgi.Server(bind_addr, app, **settings)


def _configure_logging(
    level_name: str, log_config: str | None = None, level_given: bool = True
) -> None:
    """Set up logging: from ``log_config`` when given, else a plain stderr format."""
    level = getattr(logging, level_name.upper())
    if log_config:
        _read_log_config(log_config)
        # The file says where and how much; an explicit --log-level still rules stogie's own.
        if level_given:
            logging.getLogger("stogie").setLevel(level)
        return
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # basicConfig() does nothing if the root logger already has handlers (an
    # embedding program set it up); the level of our own loggers still follows
    # --log-level.
    logging.getLogger("stogie").setLevel(level)


def _read_log_config(path: str) -> None:
    import json
    import logging.config

    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".json":
            with open(path, encoding="utf-8") as f:
                logging.config.dictConfig(json.load(f))
        elif ext in (".ini", ".conf", ".cfg"):
            if not os.path.isfile(path):
                raise FileNotFoundError(2, "No such file or directory")
            logging.config.fileConfig(path, disable_existing_loggers=False)
        else:
            raise CLIError(
                f"--log-config {path!r}: use a .json file (dictConfig) or an .ini or .conf"
                " file (fileConfig)"
            )
    except OSError as exc:
        raise CLIError(f"--log-config: cannot read {path!r}: {exc.strerror or exc}") from None
    except CLIError:
        raise
    except Exception as exc:
        # json, configparser and logging.config each have their own errors for a bad file.
        reason = " ".join(str(exc).split())
        raise CLIError(f"--log-config {path!r}: {type(exc).__name__}: {reason}") from None


# --- running -----------------------------------------------------------------


def _binds(opts: argparse.Namespace) -> Sequence[BindAddr]:
    """The addresses to serve: each --bind, else the sockets systemd passed, else the default."""
    activated = [fd for fd, _ in systemd.listen_fds()]
    if not opts.bind:
        return activated or [parse_bind(DEFAULT_BIND)]
    binds: list[BindAddr] = []
    for text in opts.bind:
        try:
            binds.append(parse_bind(text))
        except ValueError as exc:
            raise CLIError(f"bad --bind: {exc}") from None
    for fd in activated:
        if fd not in binds:
            # Passed by systemd but not asked for: it must not stay open, unserved.
            os.close(fd)
    return binds


def _start(
    opts: argparse.Namespace, notifier: systemd.Notifier | None = None
) -> server_module.HTTPServer:
    """Do everything up to a bound, listening server; return it."""
    binds = _binds(opts)
    _check_thread_counts(opts)
    if opts.max_requests_jitter and not opts.max_requests:
        raise CLIError("--max-requests-jitter needs --max-requests")

    if opts.chdir:
        try:
            os.chdir(opts.chdir)
        except OSError as exc:
            raise CLIError(
                f"cannot change directory to {opts.chdir!r}: {exc.strerror or exc}"
            ) from None

    # The application lives in the current directory, which is not on sys.path
    # when running from the console script.
    cwd = os.getcwd()
    if not sys.path or sys.path[0] != cwd:
        sys.path.insert(0, cwd)

    spec = opts.app or DEMO_APP
    supervised = opts.workers > 1 or any(getattr(opts, name) for name in RECYCLING_OPTIONS)
    if supervised:
        # Each worker imports the app itself: so a reload (SIGHUP) imports its new code,
        # and the supervisor never runs the app's code (nor the threads it may start).
        app, description = None, spec
    else:
        app, description = load_app(spec)

    try:
        server = make_server(opts, binds[0], app)
        server.extra_bind_addrs = binds[1:]
        server.workers = opts.workers
        for name in SERVER_ATTRIBUTES:
            value = getattr(opts, name, None)
            if value is not None:
                setattr(server, name, value)
        if server.metrics_bind is not None:
            _metrics_address(server.metrics_bind)
        for name in RECYCLING_OPTIONS:
            if getattr(opts, name):
                setattr(server, name, getattr(opts, name))
        server._recycling()
    except (TypeError, ValueError) as exc:
        raise CLIError(f"bad server settings: {exc}") from None
    try:
        server.ssl_adapter = tls_cli.make_adapter(opts)
    except ValueError as exc:
        raise CLIError(f"bad TLS settings: {exc}") from None
    try:
        # Checked here, with the certificate known: prepare() would raise the same.
        server._check_protocols()
    except ValueError as exc:
        raise CLIError(f"bad server settings: {exc}") from None
    if supervised:
        server._app_loader = functools.partial(load_app, spec)
    server._notifier = notifier

    try:
        server.prepare()
    except OSError as exc:
        # The server wraps the socket error with the address, which our own
        # message already gives: report the socket error's own words.
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        # Rust's io::Error text ends in " (os error 98)": the errno adds nothing.
        reason = re.sub(r" \(os error \d+\)$", "", cause.strerror or str(cause))
        if not hasattr(exc, "bind_addr"):
            # Not an address of the app's (the metrics listener, the access log): its own
            # words name what failed.
            raise CLIError(reason) from None
        raise CLIError(f"cannot listen on {_describe_bind(exc.bind_addr)}: {reason}") from None
    except workers.WorkerStartError as exc:
        raise CLIError(str(exc)) from None
    except RuntimeError as exc:
        # --workers with threads already running (started by the app's import).
        raise CLIError(str(exc)) from None
    except TLSError as exc:
        raise CLIError(f"bad TLS settings: {exc}") from None

    supervisor = server._supervisor
    if supervisor is not None and supervisor.description:
        description = supervisor.description
    # Logged once the signals are taken (serve_until_signalled): whoever waits for this line
    # to send SIGTERM must find the server ready for it.
    server._startup_line = startup_line(server, description, server.bound_addrs, opts.workers)
    return server


def startup_line(
    server: server_module.HTTPServer,
    description: str,
    addresses: Sequence[tuple[str, int] | str | bytes],
    workers: int,
) -> str:
    """The line logged once the server serves: version, addresses, processes, threads, TLS."""
    minimum = server.requests.min
    maximum = server.requests.max
    if maximum is not None and maximum > minimum:
        threads = f"{minimum} to {maximum} threads"
    else:
        threads = quantity(minimum, "thread")
    processes = f"{quantity(workers, 'worker')}, {threads} each" if workers > 1 else threads
    where = ", ".join(describe_served(a) for a in addresses)
    if getattr(server, "ssl_adapter", None) is not None:
        where = where.replace("http://", "https://")
    return (
        f"stogie {__version__} serving {description} on {where}"
        f" ({processes}, {_tls_status(server)})"
    )


def _tls_status(server: server_module.HTTPServer) -> str:
    return "TLS on" if getattr(server, "ssl_adapter", None) is not None else "TLS off"


def main(args: Sequence[str] | None = None) -> int:
    """Run the ``stogie`` command with ``args`` (default: ``sys.argv[1:]``).

    Returns:
        int: the exit status (0 after a graceful stop, 2 on a start-up error).
    """
    try:
        settings = config.load(build_parser, args)
    except config.ConfigError as exc:
        _say(str(exc))
        return 2
    opts = settings.values
    if opts.print_config:
        sys.stdout.write(settings.render(*defaults_in_effect()))
        return 0
    if opts.reload_dir and not opts.reload:
        _say("--reload-dir needs --reload")
        return 2
    if opts.reload and not reloader.is_child():
        # The pid file names this process, which outlives each server it starts: the one to
        # signal, and SIGINT or SIGTERM to it stops them both.
        pid_file = None
        try:
            _configure_logging(opts.log_level, opts.log_config, False)
            pid_file = _write_pid(opts.pid)
            return reloader.run(sys.argv[1:] if args is None else list(args), opts)
        except (reloader.ReloadError, CLIError) as exc:
            _say(str(exc))
            return 2
        finally:
            _remove_pid(pid_file)

    pid_file = None
    notifier = systemd.Notifier()
    try:
        _configure_logging(
            opts.log_level, opts.log_config, settings.sources["log_level"] != "default"
        )
        if not reloader.is_child():  # else the reloader's pid is in the file
            pid_file = _write_pid(opts.pid)
        server = _start(opts, notifier if notifier.enabled else None)
    except CLIError as exc:
        _remove_pid(pid_file)
        _say(str(exc))
        return 2
    except KeyboardInterrupt:
        # Ctrl-C while the app was still being imported.
        _remove_pid(pid_file)
        return 130
    try:
        return serve_until_signalled(server, notifier if notifier.enabled else None)
    finally:
        _remove_pid(pid_file)


if __name__ == "__main__":
    sys.exit(main())
