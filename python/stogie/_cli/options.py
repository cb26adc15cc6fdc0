"""The ``stogie`` command's options: the ``argparse`` table, which the environment and the
``--config`` file read too (:mod:`stogie.config`), and how options map to server settings."""

from __future__ import annotations

import argparse
import difflib
import inspect

from .. import server, wsgi
from ..ssl import _cli as tls_cli
from . import PROG
from .app import DEMO_APP
from .bind import DEFAULT_BIND

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

LOG_LEVELS = ("debug", "info", "warning", "error")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block first; one line is enough.
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        # argparse lumps a mistyped option with the words after it ("unrecognized arguments:
        # --bnd app:app"): name the option, and the one probably meant.
        values, extras = self.parse_known_args(args, namespace)
        for arg in extras:
            if arg.startswith("-") and arg != "-":
                self.error(self._unknown_option(arg.partition("=")[0]))
        if extras:
            self.error("unrecognized arguments: " + " ".join(extras))
        return values

    def _unknown_option(self, name: str) -> str:
        known = [s for s in self._option_string_actions if s.startswith("--")]
        close = difflib.get_close_matches(name, known, n=1)
        return f"unknown option {name}" + (f"; did you mean {close[0]}?" if close else "")


class _VersionAction(argparse.Action):
    # argparse's own "version" action wants the string when the parser is
    # built; importing stogie's version only when asked keeps --help working
    # even if the native module is broken.
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        from stogie import __version__

        # On standard output, as argparse's own version action and other tools print it.
        print(f"{PROG} {__version__}")
        parser.exit(0)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return convert


def _max_threads(text: str) -> int:
    value = _int_at_least(-1)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 is not allowed; use -1 for no limit")
    return value


def _megabytes(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of megabytes")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of megabytes")
    return int(value) if value.is_integer() else value


def _seconds(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    # Whole numbers stay ints, as Cheroot's options are.
    return int(value) if value.is_integer() else value


def build_parser() -> argparse.ArgumentParser:
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
        "-b",
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
        "-w",
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
    h2 = parser.add_argument_group("HTTP/2")
    h2.add_argument(
        "--http-protocols",
        metavar="LIST",
        dest="http_protocols",
        help="protocols served, in order of preference: h1, h2 or both (default: h2,h1;"
        " over TLS the client chooses by ALPN)",
    )
    h2.add_argument(
        "--http2-cleartext",
        action="store_true",
        default=None,
        dest="http2_cleartext",
        help="serve HTTP/2 without TLS (h2c, prior knowledge) to the peers of"
        " --forwarded-allow-ips: a proxy in front. Upgrade: h2c is never honoured",
    )
    h2.add_argument(
        "--http2-max-concurrent-streams",
        metavar="N",
        type=_int_at_least(1),
        dest="http2_max_concurrent_streams",
        help="streams a client may have open at once, and requests of one connection"
        " queued or running at once (default: 100)",
    )
    h2.add_argument(
        "--http2-initial-window-size",
        metavar="BYTES",
        type=_int_at_least(1),
        dest="http2_initial_window_size",
        help="request body bytes a client may send a stream ahead of the app (default: 65535)",
    )
    h2.add_argument(
        "--http2-max-frame-size",
        metavar="BYTES",
        type=_int_at_least(16384),
        dest="http2_max_frame_size",
        help="the largest frame a client may send, 16384 to 16777215 (default: 16384)",
    )
    h2.add_argument(
        "--http2-max-header-list-size",
        metavar="BYTES",
        type=_int_at_least(1),
        dest="http2_max_header_list_size",
        help="the largest header list a client may send; more gets a 431 (default: 65536)",
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
    "http_protocols",
    "http2_cleartext",
    "http2_max_concurrent_streams",
    "http2_initial_window_size",
    "http2_max_frame_size",
    "http2_max_header_list_size",
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


# The recycling options, as HTTPServer attributes; any of them runs worker processes.
RECYCLING_OPTIONS = ("max_requests", "max_requests_jitter", "max_worker_memory", "worker_lifetime")


def defaults_in_effect() -> tuple[dict[str, Any], dict[str, str]]:
    """What the options left unset mean, for ``--print-config``: ``(defaults, notes)``.

    ``defaults``: the server's own (read from ``wsgi.Server`` and ``HTTPServer`` here, so
    that what is printed cannot drift from what serves), which mean the same written in a
    file. ``notes``: defaults that a file must not pin (the sockets systemd passes, this
    version's name, TLS settings that need a certificate).
    """
    parameters = inspect.signature(wsgi.Server).parameters
    defaults: dict[str, Any] = {"app": DEMO_APP}
    for dest in (*SERVER_OPTIONS, *RECYCLING_OPTIONS):
        defaults[dest] = parameters[dest].default
    for dest in SERVER_ATTRIBUTES:
        defaults[dest] = getattr(server.HTTPServer, dest)
    notes = {
        "bind": f"the sockets systemd passes, else {DEFAULT_BIND}",
        "server_name": f"the server's version, {server.HTTPServer.version}",
        "ssl_client_verify": "required with ssl_client_ca, else none",
        "ssl_minimum_version": "TLSv1.2",
    }
    return defaults, notes
