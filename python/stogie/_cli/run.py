"""Running a prepared server until a signal stops it (one process, or a supervisor of
workers), and the ``--pid`` file."""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import time

from .. import workers
from .._text import quantity
from ..ssl import _cli as tls_cli
from . import CLIError, _say, log
from .bind import _describe_bind

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

    from ..server import HTTPServer
    from ..systemd import Notifier

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

    def __init__(self, on_hup: Callable[[], object] | None = None) -> None:
        """Install the handlers, if this is the main thread (signals go only there).

        ``on_hup``: what SIGHUP does (reload the TLS certificate); it does not stop.
        """
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous: dict[int, Any] = {}
        self._previous_wakeup: int | None = None
        self.on_usr1: Callable[[], object] | None = None
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
    def _ignore(signum: int, frame: FrameType | None) -> None:
        # Needed all the same: set_wakeup_fd() only sees signals that have a
        # Python handler.
        pass

    def wake(self) -> None:
        """Wake the thread in :meth:`wait`; safe from any thread."""
        try:
            self._writer.send(b"\0")
        except OSError:
            pass  # the buffer is full: the waiter wakes anyway

    def wait(
        self,
        done: threading.Event,
        timeout: float | None = None,
        tick: Callable[[], object] | None = None,
        every: float = 0.5,
    ) -> str | None:
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

    def close(self) -> None:
        """Put back the handlers found at start."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self.installed:
            signal.set_wakeup_fd(self._previous_wakeup)  # type: ignore[arg-type]  # installed
        self._reader.close()
        self._writer.close()


def _in_thread(
    function: Callable[[], object], name: str, signals: _Signals
) -> tuple[threading.Event, list[BaseException]]:
    """Run ``function`` in a daemon thread; return (done event, exceptions list)."""
    done = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            function()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            done.set()
            signals.wake()

    threading.Thread(target=run, name=name, daemon=True).start()
    return done, failures


def serve_until_signalled(server: HTTPServer, notifier: Notifier | None = None) -> int:
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

        def tick() -> None:
            # The main thread pings only while the engine's runtime runs: a hung engine,
            # or an app holding the GIL, stops the pings.
            native = server._native
            age = native.heartbeat_age() if native is not None else None
            notifier.tick(age is not None and age < workers.STALE_AFTER)

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


def _log_startup(server: HTTPServer) -> None:
    line = getattr(server, "_startup_line", None)
    if line:
        log.info("%s", line)


def _status_line(server: HTTPServer) -> str:
    """What ``systemctl status`` shows while the server runs."""
    where = ", ".join(_describe_bind(a) for a in server.bound_addrs)
    supervisor = server._supervisor
    if supervisor is None:
        return f"serving on {where}"
    return f"serving on {where} with {quantity(len(supervisor.slots), 'worker')}"


def _supervise(server: HTTPServer, notifier: Notifier | None = None) -> int:
    """Run a server with worker processes: its supervisor handles the signals itself.

    ``serve()`` runs here, in the main thread, so the supervisor receives SIGINT and
    SIGTERM, and forks replacement workers from a process running no other thread.
    """
    supervisor = server._supervisor
    assert supervisor is not None
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


def _write_pid(path: str | None) -> tuple[str, int] | None:
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


def _remove_pid(pid_file: tuple[str, int] | None) -> None:
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
