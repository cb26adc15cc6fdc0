"""``stogie --reload``: restart the server whenever a Python file it serves from changes.

For development only. This process runs the server as a child process (the same command,
without ``--reload``), watches ``.py`` files under the application's directory (the current
directory after ``--chdir``) and every ``--reload-dir`` with ``watchfiles`` (the optional
extra ``stogie[reload]``), and on a change stops the server (SIGTERM, as usual) and starts it
again, so that everything is imported anew. A server that fails to start (a syntax error
just saved) is started again at the next change. SIGINT or SIGTERM stop both.

A restart refuses connections for a moment and drops what was in flight: that is no way to
deploy new code (SIGHUP with ``--workers`` is).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from types import FrameType

log = logging.getLogger("stogie.reload")

# Set in the server's environment: it serves instead of watching.
CHILD_MARKER = "_STOGIE_RELOAD_CHILD"
# Changes within this many milliseconds come as one (an editor saving several files).
DEBOUNCE_MS = 300
# Time the old server gets to stop before it is killed, beyond its shutdown timeout.
STOP_MARGIN = 3.0


class ReloadError(Exception):
    """``--reload`` cannot run: reported as one line, exit status 2."""


def is_child() -> bool:
    """Whether this process is the server a reloader started."""
    return os.environ.get(CHILD_MARKER) == "1"


def watched_dirs(opts: argparse.Namespace) -> list[str]:
    """The directories whose Python files restart the server."""
    base = os.path.abspath(opts.chdir or os.getcwd())
    dirs = [base]
    for extra in opts.reload_dir or ():
        path = os.path.abspath(os.path.join(base, extra))
        if not os.path.isdir(path):
            raise ReloadError(f"--reload-dir {extra!r}: no such directory")
        dirs.append(path)
    return dirs


def run(argv: Sequence[str], opts: argparse.Namespace) -> int:
    """Serve ``argv`` (the command's arguments) in a child process, restarted on changes.

    Returns:
        int: the exit status: the last server's, or 0 after SIGINT or SIGTERM.
    """
    try:
        import watchfiles
    except ImportError:
        raise ReloadError(
            "--reload needs the watchfiles package: pip install 'stogie[reload]'"
        ) from None
    dirs = watched_dirs(opts)
    log.warning(
        "--reload is for development, not for production: restarting the server whenever a"
        " .py file changes under %s",
        ", ".join(dirs),
    )
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    grace = float(opts.shutdown_timeout or 5) + STOP_MARGIN
    server = _start(argv)
    try:
        for changes in watchfiles.watch(
            *dirs,
            watch_filter=watchfiles.PythonFilter(),
            stop_event=stop,
            debounce=DEBOUNCE_MS,
            step=50,
            raise_interrupt=False,
        ):
            changed = sorted({os.path.relpath(path, dirs[0]) for _, path in changes})
            log.warning("changed: %s; restarting the server", ", ".join(changed))
            _stop(server, grace)
            server = _start(argv)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    code = _stop(server, grace)
    return 0 if received else code


def _start(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **{CHILD_MARKER: "1"})
    return subprocess.Popen([sys.executable, "-m", "stogie", *argv], env=env)


def _stop(server: subprocess.Popen[bytes], grace: float) -> int:
    """Stop the server gracefully (killed after ``grace`` seconds); return its exit status."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            return server.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("the server did not stop within %.0f s: killing it", grace)
            server.kill()
    return server.wait()
