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

import argparse
import functools
import importlib
import ipaddress
import logging
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse

from .ssl import TLSError
from .ssl import _cli as tls_cli

log = logging.getLogger("stogie.cli")

PROG = "stogie"
DEFAULT_BIND = "127.0.0.1:8080"
DEMO_APP = "stogie.demo:app"
# Names tried in order when MODULE is given without :ATTR. `application` is the
# WSGI convention (and Cheroot's default); `app` is what Flask and most
# tutorials call it.
DEFAULT_ATTRS = ("application", "app")
LOG_LEVELS = ("debug", "info", "warning", "error")

# A host name or an IPv4 literal. Anything else in front of the port (spaces,
# "user@", a bare IPv6 address) is a mistake better caught here than by
# getaddrinfo() with a vaguer message.
_HOST_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
_PORT_RE = re.compile(r"[0-9]+\Z")


class CLIError(Exception):
    """A start-up error: reported as one line on stderr, exit status 2."""


# --- bind addresses --------------------------------------------------------


def parse_bind(s):
    """Turn a ``--bind`` string into a ``bind_addr`` for ``stogie.wsgi.Server``.

    - ``HOST:PORT`` -> ``(host, port)``; an empty HOST (``:8080``) means all
      IPv4 interfaces, ``0.0.0.0``.
    - ``[IPV6]:PORT`` -> ``(ipv6, port)``, e.g. ``[::1]:8080`` -> ``('::1', 8080)``.
    - ``@NAME`` -> ``'\\0NAME'``, a Linux abstract UNIX socket.
    - ``fd://N`` -> ``N``, an inherited listening socket (socket activation).
    - anything containing ``/``, or without a colon -> that UNIX socket path.

    PORT is 0 to 65535; 0 asks the system for a free port.

    Raises:
        ValueError: the string is none of the above, with a message that says
            what is wrong with it.
    """
    if not isinstance(s, str):
        raise ValueError(f"bind address must be a string, not {type(s).__name__}")
    if not s:
        raise ValueError("bind address is empty")
    if "\0" in s:
        raise ValueError(f"{s!r}: bind address contains a NUL character")

    if s.startswith("fd://"):
        number = s[5:]
        if not _PORT_RE.match(number):
            raise ValueError(f"{s!r}: expected fd:// and a descriptor number, e.g. fd://3")
        return int(number)

    # Checked first: "@name" must not be read as "user@host".
    if s.startswith("@"):
        if len(s) == 1:
            raise ValueError("'@': abstract socket name is missing after '@'")
        return "\0" + s[1:]

    if s.startswith("["):
        host, bracket, rest = s[1:].partition("]")
        if not bracket:
            raise ValueError(f"{s!r}: missing ']' after the IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{s!r}: {host!r} is not an IPv6 address") from None
        if not rest:
            raise ValueError(f"{s!r}: missing ':PORT' after ']'")
        if not rest.startswith(":"):
            raise ValueError(f"{s!r}: expected ':PORT' after ']', got {rest!r}")
        return host, _parse_port(rest[1:], s)

    if "/" in s or ":" not in s:
        if _PORT_RE.match(s):
            # A socket file called "8080" is never what was meant.
            raise ValueError(
                f"{s!r} looks like a port: use HOST:PORT, e.g. 127.0.0.1:{s}"
                f" (or ./{s} for a UNIX socket of that name)"
            )
        return s

    host, _, port = s.rpartition(":")
    if ":" in host:
        raise ValueError(f"{s!r}: an IPv6 address must be in brackets, as in [::1]:8080")
    if not host:
        host = "0.0.0.0"
    elif not _HOST_RE.match(host):
        raise ValueError(f"{s!r}: {host!r} is not a host name or IP address")
    return host, _parse_port(port, s)


def _parse_port(port, whole):
    if not port:
        raise ValueError(f"{whole!r}: the port is missing after ':'")
    if not _PORT_RE.match(port):
        raise ValueError(f"{whole!r}: port {port!r} is not a number")
    number = int(port)
    if number > 65535:
        raise ValueError(f"{whole!r}: port {number} is out of range (0-65535)")
    return number


# --- Cheroot's command-line API, for code that imports it -------------------------
#
# These keep Cheroot's results, lax as they are ("foo" is a host with no port, "u@h:1" is
# ("h", 1)); the `stogie` command itself reads --bind with the stricter parse_bind().


class BindLocation:
    """A class for storing the bind location for a stogie instance."""


class TCPSocket(BindLocation):
    """TCPSocket."""

    def __init__(self, address, port):
        """Initialize.

        Args:
            address (str): Host name or IP address
            port (int): TCP port number
        """
        self.bind_addr = address, port


class UnixSocket(BindLocation):
    """UnixSocket."""

    def __init__(self, path):
        """Initialize."""
        self.bind_addr = path


class AbstractSocket(BindLocation):
    """AbstractSocket."""

    def __init__(self, abstract_socket):
        """Initialize."""
        self.bind_addr = f"\x00{abstract_socket}"


def parse_wsgi_bind_location(bind_addr_string):
    """Convert bind address string to a BindLocation (Cheroot's rules)."""
    # "@name" first: urlparse would read "//@name" as a host "name" with no port.
    if bind_addr_string.startswith("@"):
        return AbstractSocket(bind_addr_string[1:])
    match = urllib.parse.urlparse(f"//{bind_addr_string}")
    try:
        addr = match.hostname
        port = match.port
        if addr is not None or port is not None:
            return TCPSocket(addr, port)
    except ValueError:
        pass
    return UnixSocket(path=bind_addr_string)


def parse_wsgi_bind_addr(bind_addr_string):
    """Convert bind address string to bind address parameter (Cheroot's rules)."""
    return parse_wsgi_bind_location(bind_addr_string).bind_addr


class Application:
    """A WSGI application named on the command line (Cheroot's ``cli.Application``)."""

    @classmethod
    def resolve(cls, full_path):
        """Read WSGI app/Gateway path string and import application module.

        ``module[:attr]``, ``attr`` defaulting to ``application``. A
        ``stogie.server.Gateway`` subclass gives a :class:`GatewayYo`.
        """
        mod_path, _, app_path = full_path.partition(":")
        app = getattr(importlib.import_module(mod_path), app_path or "application")
        if _is_gateway_class(app):
            return GatewayYo(app)
        return cls(app)

    def __init__(self, wsgi_app):
        """Initialize."""
        if not callable(wsgi_app):
            raise TypeError(
                "Application must be a callable object or stogie.server.Gateway subclass",
            )
        self.wsgi_app = wsgi_app

    def server_args(self, parsed_args):
        """Return keyword arguments for Server class."""
        args = {
            arg: value
            for arg, value in vars(parsed_args).items()
            if not arg.startswith("_") and value is not None
        }
        args.update(vars(self))
        return args

    def server(self, parsed_args):
        """Return a ``stogie.wsgi.Server`` for Cheroot-style parsed arguments."""
        from stogie import wsgi

        return wsgi.Server(**self.server_args(parsed_args))


class GatewayYo:
    """A ``stogie.server.Gateway`` subclass named on the command line."""

    def __init__(self, gateway):
        """Init."""
        self.gateway = gateway

    def server(self, parsed_args):
        """Return a ``stogie.server.HTTPServer`` for Cheroot-style parsed arguments."""
        from stogie import server as server_module

        server_args = dict(vars(self))
        server_args["bind_addr"] = parsed_args.bind_addr
        if parsed_args.max is not None:
            server_args["maxthreads"] = parsed_args.max
        if parsed_args.numthreads is not None:
            server_args["minthreads"] = parsed_args.numthreads
        return server_module.HTTPServer(**server_args)


def format_bind(bind_addr):
    """Return a bind address as people read it.

    ``http://127.0.0.1:8080``, ``http://[::1]:8080``, ``unix:/path`` or
    ``unix:@name`` for an abstract socket.
    """
    if isinstance(bind_addr, (tuple, list)):
        host, port = bind_addr[0], bind_addr[1]
        host = host or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"
    if isinstance(bind_addr, bytes):
        bind_addr = bind_addr.decode("utf-8", "replace")
    if bind_addr.startswith("\0"):
        return f"unix:@{bind_addr[1:]}"
    return f"unix:{bind_addr}"


# --- the application ---------------------------------------------------------


def load_app(spec):
    """Import ``MODULE[:ATTR]`` and return ``(obj, 'module:attr')``.

    Without ATTR, ``application`` is tried, then ``app``. ATTR may be dotted
    (``module:obj.wsgi_app``). The object must be callable: a WSGI application
    or a ``stogie.server.Gateway`` subclass.

    Raises:
        CLIError: the module cannot be imported, has no such attribute, or the
            attribute is not callable.
    """
    module_name, colon, attr = spec.partition(":")
    if not module_name:
        raise CLIError(f"no module named in {spec!r}; expected MODULE[:ATTR]")
    if colon and not attr:
        raise CLIError(f"no attribute named after ':' in {spec!r}")
    if module_name.startswith("."):
        raise CLIError(f"{module_name!r}: relative module names are not supported")

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CLIError(
            f"cannot import module {module_name!r}: {exc}{_path_hint(module_name)}"
        ) from None
    except SyntaxError as exc:
        raise CLIError(f"cannot import module {module_name!r}: SyntaxError: {exc}") from None
    except Exception as exc:
        # The module itself is broken: its traceback is what its author needs.
        _print_user_traceback(exc)
        raise CLIError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None

    for name in (attr,) if attr else DEFAULT_ATTRS:
        try:
            obj = _getattr_path(module, name)
        except AttributeError:
            continue
        break
    else:
        if attr:
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}")
        raise CLIError(
            f"module {module_name!r} has no attribute 'application' or 'app';"
            f" name the app as {module_name}:ATTR"
        )

    description = f"{module_name}:{name}"
    if not callable(obj):
        raise CLIError(
            f"{description} is not callable (it is {type(obj).__name__}),"
            " so it is not a WSGI application"
        )
    return obj, description


def _print_user_traceback(exc):
    # Only the module's own frames: the import machinery's and ours are noise.
    report = traceback.TracebackException.from_exception(exc)
    report.stack = traceback.StackSummary.from_list(
        [
            frame
            for frame in report.stack
            if not frame.filename.startswith("<frozen importlib")
            and frame.filename not in (__file__, importlib.__file__)
        ]
    )
    print("".join(report.format()), end="", file=sys.stderr)


def _path_hint(module_name):
    # People often pass the file ("app.py", "src/app.py"); say what to pass.
    if not (module_name.endswith(".py") or "/" in module_name or os.sep in module_name):
        return ""
    path = os.path.normpath(module_name)
    if path.endswith(".py"):
        path = path[:-3]
    dotted = path.strip(os.sep).replace(os.sep, ".").replace("/", ".")
    return f" (give a module name, not a file: {dotted!r})"


def _getattr_path(obj, dotted):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _is_gateway_class(obj):
    if not isinstance(obj, type):
        return False
    from stogie import server as server_module

    return issubclass(obj, server_module.Gateway)


# --- arguments ---------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints the whole usage block first; one line is enough.
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


class _VersionAction(argparse.Action):
    # argparse's own "version" action wants the string when the parser is
    # built; importing stogie's version only when asked keeps --help working
    # even if the native module is broken.
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from stogie import __version__

        # On standard output, as argparse's own version action and other tools print it.
        print(f"{PROG} {__version__}")
        parser.exit(0)


def _int_at_least(minimum):
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return convert


def _max_threads(text):
    value = _int_at_least(-1)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 is not allowed; use -1 for no limit")
    return value


def _megabytes(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of megabytes")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of megabytes")
    return int(value) if value.is_integer() else value


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    # Whole numbers stay ints, as Cheroot's options are.
    return int(value) if value.is_integer() else value


def build_parser():
    """Return the ``argparse`` parser for the ``stogie`` command."""
    parser = _Parser(
        prog=PROG,
        description="Serve a WSGI application with stogie.",
        epilog=(
            "MODULE is imported from the current directory (after --chdir)."
            " ATTR defaults to 'application', then 'app'. With no MODULE the"
            " built-in demo app is served."
        ),
    )
    parser.add_argument(
        "app",
        nargs="?",
        metavar="MODULE[:ATTR]",
        help="WSGI application callable or stogie.server.Gateway subclass",
    )
    parser.add_argument(
        "--bind",
        metavar="ADDRESS",
        action="append",
        help=(
            "HOST:PORT, [IPV6]:PORT, a UNIX socket path, @ABSTRACT_NAME, or fd://N for an"
            " inherited listening socket; may be given several times (default: the sockets"
            f" systemd passed by socket activation, else {DEFAULT_BIND})"
        ),
    )
    parser.add_argument("--chdir", metavar="PATH", help="change to PATH first")
    parser.add_argument(
        "--server-name",
        metavar="NAME",
        dest="server_name",
        help="server name for SERVER_NAME in the environ",
    )
    parser.add_argument(
        "--threads",
        metavar="INT",
        dest="numthreads",
        type=_int_at_least(1),
        help="number of worker threads (default: 10)",
    )
    parser.add_argument(
        "--max-threads",
        metavar="INT",
        dest="max",
        type=_max_threads,
        help="maximum number of worker threads, -1 for no limit (default: -1)",
    )
    parser.add_argument(
        "--workers",
        metavar="INT",
        type=_int_at_least(1),
        default=1,
        help="worker processes sharing the socket, each with its own threads (default: 1)",
    )
    parser.add_argument(
        "--max-requests",
        metavar="INT",
        dest="max_requests",
        type=_int_at_least(0),
        help=(
            "replace a worker process after it served INT requests; its replacement serves"
            " before it stops, so no request is lost (default: 0, never)"
        ),
    )
    parser.add_argument(
        "--max-requests-jitter",
        metavar="INT",
        dest="max_requests_jitter",
        type=_int_at_least(0),
        help="add a random 0 to INT requests to each worker's --max-requests (default: 0)",
    )
    parser.add_argument(
        "--max-worker-memory",
        metavar="MB",
        dest="max_worker_memory",
        type=_megabytes,
        help="replace a worker process whose memory (RSS) passes MB MiB (default: 0, never)",
    )
    parser.add_argument(
        "--worker-lifetime",
        metavar="SECONDS",
        dest="worker_lifetime",
        type=_seconds,
        help="replace a worker process after SECONDS (default: 0, never)",
    )
    parser.add_argument(
        "--worker-timeout",
        metavar="SECONDS",
        dest="worker_timeout",
        type=_seconds,
        help=(
            "kill and replace a worker process whose engine or main thread sent no heartbeat"
            " for SECONDS, as gunicorn's --timeout (default: 30; 0, never)"
        ),
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        help="timeout for accepted connections (default: 10)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        metavar="SECONDS",
        dest="shutdown_timeout",
        type=_seconds,
        help="time to let running requests finish on stop (default: 5)",
    )
    parser.add_argument(
        "--request-queue-size",
        metavar="INT",
        dest="request_queue_size",
        type=_int_at_least(0),
        help="listen() backlog (default: 5; stogie uses at least 1024)",
    )
    parser.add_argument(
        "--accepted-queue-size",
        metavar="INT",
        dest="accepted_queue_size",
        type=_int_at_least(-1),
        help="maximum accepted connections waiting for a worker, -1 for no limit (default: -1)",
    )
    parser.add_argument(
        "--accepted-queue-timeout",
        metavar="SECONDS",
        dest="accepted_queue_timeout",
        type=_seconds,
        help="time to wait for room in the accepted queue (default: 10)",
    )
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        dest="log_level",
        type=str.lower,
        choices=LOG_LEVELS,
        default="info",
        help="debug, info, warning or error (default: info)",
    )
    tls_cli.add_arguments(parser)
    parser.add_argument(
        "--reload",
        action="store_true",
        help=(
            "for development, not for production: restart the server when a .py file under"
            " the current directory (after --chdir) or a --reload-dir changes (needs"
            " pip install 'stogie[reload]')"
        ),
    )
    parser.add_argument(
        "--reload-dir",
        metavar="DIR",
        dest="reload_dir",
        action="append",
        help="also watch the .py files under DIR with --reload; may be given several times",
    )
    parser.add_argument(
        "--log-config",
        metavar="FILE",
        dest="log_config",
        help=(
            "configure logging from FILE: logging.config.fileConfig() for .ini or .conf,"
            " dictConfig() for .json (--log-level then applies only if given)"
        ),
    )
    parser.add_argument(
        "--pid",
        metavar="PATH",
        help="write the process id of the server (the supervisor with --workers) to PATH",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=(
            "read settings from a TOML file (the option names without dashes, e.g."
            " workers = 4); every option is also read from STOGIE_<NAME> in the"
            " environment. The command line wins over the environment, which wins over FILE"
        ),
    )
    parser.add_argument(
        "--print-config",
        dest="print_config",
        action="store_true",
        help="print the settings as they would be used, as TOML, and exit",
    )
    ops = parser.add_argument_group("logging, metrics and proxies")
    ops.add_argument(
        "--access-log",
        metavar="PATH",
        dest="access_log",
        help="write a line per request to PATH ('-' for standard output); off by default."
        " SIGUSR1 reopens it (logrotate)",
    )
    ops.add_argument(
        "--access-log-format",
        metavar="FORMAT",
        dest="access_log_format",
        help="gunicorn's atoms, e.g. '%%(h)s \"%%(r)s\" %%(s)s %%(D)s', or 'json'"
        " (default: Apache's combined format)",
    )
    ops.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        dest="metrics_bind",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (a listener of its own)",
    )
    ops.add_argument(
        "--forwarded-allow-ips",
        metavar="LIST",
        dest="forwarded_allow_ips",
        help="peers whose X-Forwarded-* and Forwarded headers are believed: addresses,"
        " networks, or '*' (default: 127.0.0.1,::1)",
    )
    ops.add_argument(
        "--proxy-protocol",
        action="store_true",
        default=None,
        dest="proxy_protocol",
        help="connections start with HAProxy's PROXY protocol header (v1 or v2)",
    )
    ops.add_argument(
        "--proxy-allow-from",
        metavar="LIST",
        dest="proxy_allow_from",
        help="peers allowed to send the PROXY protocol header (default: 127.0.0.1,::1)",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    return parser


# Options set as attributes of the server when given (they are not constructor arguments).
SERVER_ATTRIBUTES = (
    "worker_timeout",
    "access_log",
    "access_log_format",
    "metrics_bind",
    "forwarded_allow_ips",
    "proxy_protocol",
    "proxy_allow_from",
)


# Options passed to stogie.wsgi.Server when given; when not, the server's own
# defaults (Cheroot's) apply.
SERVER_OPTIONS = (
    "numthreads",
    "server_name",
    "max",
    "request_queue_size",
    "timeout",
    "shutdown_timeout",
    "accepted_queue_size",
    "accepted_queue_timeout",
)


def _check_thread_counts(opts):
    numthreads = 10 if opts.numthreads is None else opts.numthreads
    if opts.max is not None and 0 < opts.max < numthreads:
        raise CLIError(f"--max-threads {opts.max} is less than --threads {numthreads}")


def make_server(opts, bind_addr, app):
    """Build the server for parsed options; options not given keep the server's defaults.

    A WSGI callable gets a ``stogie.wsgi.Server``; a ``stogie.server.Gateway``
    subclass gets a ``stogie.server.HTTPServer``, as in Cheroot.
    """
    settings = {
        name: getattr(opts, name) for name in SERVER_OPTIONS if getattr(opts, name) is not None
    }
    if _is_gateway_class(app):
        from stogie import server as server_module

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

    from stogie import wsgi

    return wsgi.Server(bind_addr, app, **settings)


def _configure_logging(level_name, log_config=None, level_given=True):
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


def _read_log_config(path):
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


def _say(message):
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _binds(opts):
    """The addresses to serve: each --bind, else the sockets systemd passed, else the default."""
    from stogie import systemd

    activated = [fd for fd, _ in systemd.listen_fds()]
    if not opts.bind:
        return activated or [parse_bind(DEFAULT_BIND)]
    binds = []
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


# The recycling options, as HTTPServer attributes; any of them runs worker processes.
RECYCLING_OPTIONS = ("max_requests", "max_requests_jitter", "max_worker_memory", "worker_lifetime")


def _start(opts, notifier=None):
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
            from stogie.server import _metrics_address

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
    if supervised:
        server._app_loader = functools.partial(load_app, spec)
    server._notifier = notifier

    from stogie import workers

    try:
        server.prepare()
    except OSError as exc:
        # The server wraps the socket error with the address, which our own
        # message already gives: report the socket error's own words.
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        # Rust's io::Error text ends in " (os error 98)": the errno adds nothing.
        reason = re.sub(r" \(os error \d+\)$", "", cause.strerror or str(cause))
        where = getattr(exc, "bind_addr", binds[0])
        raise CLIError(f"cannot listen on {_describe_bind(where)}: {reason}") from None
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


def _describe_bind(bind_addr):
    if isinstance(bind_addr, int):
        return f"fd://{bind_addr}"
    return format_bind(bind_addr)


def startup_line(server, description, addresses, workers):
    """The line logged once the server serves: version, addresses, processes, threads, TLS."""
    from stogie import __version__

    threads = server.requests.min
    maximum = server.requests.max
    if maximum is not None and maximum > threads:
        threads = f"{threads} to {maximum}"
    processes = (
        f"{workers} workers, {threads} threads each" if workers > 1 else f"{threads} threads"
    )
    where = ", ".join(format_bind(a) for a in addresses)
    if getattr(server, "ssl_adapter", None) is not None:
        where = where.replace("http://", "https://")
    return (
        f"stogie {__version__} serving {description} on {where}"
        f" ({processes}, {_tls_status(server)})"
    )


def _tls_status(server):
    return "TLS on" if getattr(server, "ssl_adapter", None) is not None else "TLS off"


# A second SIGINT or SIGTERM this long after the first one ends the process
# without waiting for running requests; an earlier one is taken for a duplicate.
REPEAT_SIGNAL_WINDOW = 0.5


_CONTROL_SIGNALS = ("SIGHUP", "SIGTTIN", "SIGTTOU")


class _Signals:
    """SIGINT and SIGTERM, received as bytes on a socket instead of exceptions.

    A handler that raises can interrupt the main thread anywhere, even inside
    threading's own locks, and a second signal then surfaces as a traceback.
    Here the handlers do nothing: ``signal.set_wakeup_fd()`` writes each
    signal's number to a socket that the main thread waits on. The helper
    threads write a 0 byte to it when they finish, to wake the main thread.
    """

    def __init__(self, on_hup=None):
        """Install the handlers, if this is the main thread (signals go only there).

        ``on_hup``: what SIGHUP does (reload the TLS certificate); it does not stop.
        """
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous = {}
        self._previous_wakeup = None
        self.on_usr1 = None
        """Called on SIGUSR1 (it never stops the wait)."""
        self.on_hup = on_hup
        self.installed = threading.current_thread() is threading.main_thread()
        if not self.installed:
            return
        self._previous_wakeup = signal.set_wakeup_fd(
            self._writer.fileno(), warn_on_full_buffer=False
        )
        # SIGINT too, even where it was ignored: a shell starts background jobs
        # with SIGINT ignored, and `kill -INT` must still stop the server.
        for name in ("SIGINT", "SIGTERM", "SIGUSR1", *_CONTROL_SIGNALS):
            signum = getattr(signal, name, None)
            if signum is not None:
                self._previous[signum] = signal.signal(signum, self._ignore)

    @staticmethod
    def _ignore(signum, frame):
        # Needed all the same: set_wakeup_fd() only sees signals that have a
        # Python handler.
        pass

    def wake(self):
        """Wake the thread in :meth:`wait`; safe from any thread."""
        try:
            self._writer.send(b"\0")
        except OSError:
            pass  # the buffer is full: the waiter wakes anyway

    def wait(self, done, timeout=None, tick=None, every=0.5):
        """Wait until ``done`` is set, a stop signal arrives, or ``timeout`` passes.

        ``tick()``, if given, is called at least every ``every`` seconds (the watchdog).

        Returns:
            the name of the signal (``'SIGTERM'``), or None.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        every = min(every, 0.5)
        while not done.is_set():
            if tick is not None:
                tick()
            step = every if deadline is None else min(every, deadline - time.monotonic())
            if step <= 0:
                return None
            select.select([self._reader], [], [], step)
            try:
                data = self._reader.recv(512)
            except BlockingIOError:
                continue
            for signum in data:
                if not signum:
                    continue
                if signum == signal.SIGUSR1:
                    if self.on_usr1 is not None:
                        self.on_usr1()
                    continue
                name = signal.Signals(signum).name
                if name == "SIGHUP" and self.on_hup is not None:
                    # One process serving HTTPS: SIGHUP reads the certificate again.
                    self.on_hup()
                    continue
                if name in _CONTROL_SIGNALS:
                    # Without a supervisor there is nothing to reload or add: say so rather
                    # than die of a SIGHUP as the default action would.
                    log.warning(
                        "%s ignored: reloading and changing the number of workers need"
                        " worker processes (--workers 2 or more, or a recycling option)",
                        name,
                    )
                    continue
                return name
        return None

    def close(self):
        """Put back the handlers found at start."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self.installed:
            signal.set_wakeup_fd(self._previous_wakeup)
        self._reader.close()
        self._writer.close()


def _in_thread(function, name, signals):
    """Run ``function`` in a daemon thread; return (done event, exceptions list)."""
    done = threading.Event()
    failures = []

    def run():
        try:
            function()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            done.set()
            signals.wake()

    threading.Thread(target=run, name=name, daemon=True).start()
    return done, failures


def serve_until_signalled(server, notifier=None):
    """Run a prepared server until SIGINT or SIGTERM, then stop it gracefully.

    ``serve()`` and ``stop()`` each run in a helper thread while the main thread
    waits for signals. So this needs nothing from the engine but ``stop()``
    called from another thread (which the test fixtures need too), and a second
    signal during a slow graceful stop still ends the process at once.

    Returns:
        int: the exit status: 0 after a requested stop, 1 if ``serve()``
        failed or a second signal cut the stop short.
    """
    if getattr(server, "_supervisor", None) is not None:
        return _supervise(server, notifier)
    signals = _Signals(on_hup=tls_cli.sighup_handler(server))
    # logrotate moved the access log away: write a new one.
    signals.on_usr1 = server.reopen_access_log
    _log_startup(server)
    tick = None
    every = 0.5
    if notifier is not None:
        notifier.ready(_status_line(server))

        def tick():
            # The main thread pings only while the engine's runtime runs: a hung engine,
            # or an app holding the GIL, stops the pings.
            native = server._native
            age = native.heartbeat_age() if native is not None else None
            notifier.tick(age is not None and age < _workers().STALE_AFTER)

        every = notifier.interval()
    try:
        served, serve_failures = _in_thread(server.serve, "stogie-serve", signals)
        received = signals.wait(served, tick=tick, every=every)
        if received:
            log.info("%s received, stopping", received)
        if notifier is not None:
            notifier.stopping()

        stopped, stop_failures = _in_thread(server.stop, "stogie-stop", signals)
        first = time.monotonic()
        received = signals.wait(stopped)
        while received and time.monotonic() - first < REPEAT_SIGNAL_WINDOW:
            # The same signal delivered twice (`timeout` sends it to the child
            # and to its process group): not a second request.
            received = signals.wait(stopped)
        grace = getattr(server, "shutdown_timeout", 5) or 0
        if not received:
            received = signals.wait(served, grace + 5)
            if not received and not served.is_set():
                log.warning("serve() did not return after stop()")
        if received:
            # A second signal while running requests finish: the operator wants
            # out now. Interpreter shutdown could wait on worker threads still
            # inside the app, so it is skipped.
            _say(f"{received}: stopped without waiting for running requests")
            sys.stdout.flush()
            os._exit(1)
    finally:
        signals.close()

    failures = serve_failures + stop_failures
    if failures:
        exc = failures[0]
        log.debug("the server failed", exc_info=exc)
        _say(f"server failed: {type(exc).__name__}: {exc}")
        return 1
    log.info("stopped")
    return 0


def _log_startup(server):
    line = getattr(server, "_startup_line", None)
    if line:
        log.info("%s", line)


def _workers():
    from stogie import workers

    return workers


def _status_line(server):
    """What ``systemctl status`` shows while the server runs."""
    where = ", ".join(_describe_bind(a) for a in server.bound_addrs)
    supervisor = server._supervisor
    if supervisor is None:
        return f"serving on {where}"
    return f"serving on {where} with {len(supervisor.slots)} workers"


def _supervise(server, notifier=None):
    """Run a server with worker processes: its supervisor handles the signals itself.

    ``serve()`` runs here, in the main thread, so the supervisor receives SIGINT and
    SIGTERM, and forks replacement workers from a process running no other thread.
    """
    supervisor = server._supervisor
    _log_startup(server)
    if notifier is not None:
        notifier.ready(_status_line(server))
    try:
        server.serve()
    except KeyboardInterrupt:
        pass  # SIGINT: the workers are stopped already
    except Exception as exc:
        log.debug("the server failed", exc_info=exc)
        _say(f"server failed: {type(exc).__name__}: {exc}")
        return 1
    if supervisor.cut_short:
        _say(f"{supervisor.cut_short}: stopped without waiting for running requests")
        return 1
    log.info("stopped")
    return 0


def main(args=None):
    """Run the ``stogie`` command with ``args`` (default: ``sys.argv[1:]``).

    Returns:
        int: the exit status (0 after a graceful stop, 2 on a start-up error).
    """
    from stogie import config

    try:
        settings = config.load(build_parser, args)
    except config.ConfigError as exc:
        _say(str(exc))
        return 2
    opts = settings.values
    if opts.print_config:
        sys.stdout.write(settings.render())
        return 0
    from stogie import reloader, systemd

    if opts.reload_dir and not opts.reload:
        _say("--reload-dir needs --reload")
        return 2
    if opts.reload and not reloader.is_child():
        try:
            _configure_logging(opts.log_level, opts.log_config, False)
            return reloader.run(sys.argv[1:] if args is None else list(args), opts)
        except (reloader.ReloadError, CLIError) as exc:
            _say(str(exc))
            return 2

    pid_file = None
    notifier = systemd.Notifier()
    try:
        _configure_logging(
            opts.log_level, opts.log_config, settings.sources["log_level"] != "default"
        )
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


def _write_pid(path):
    if not path:
        return None
    pid = os.getpid()
    try:
        # Written whole under another name, then renamed: a reader never sees half of it.
        tmp = f"{path}.{pid}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{pid}\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise CLIError(f"cannot write --pid {path!r}: {exc.strerror or exc}") from None
    return path, pid


def _remove_pid(pid_file):
    if pid_file is None:
        return
    path, pid = pid_file
    try:
        with open(path) as f:
            if f.read().strip() != str(pid):
                return  # another server wrote its own since
        os.unlink(path)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
