"""Worker processes under a supervisor (``workers=N``, ``stogie --workers N``): several
processes on the same listening sockets, replaced without dropping a request.

The parent process binds (no engine, no thread started), then forks the workers. A TCP address
is bound once per worker slot, in one SO_REUSEPORT group: the kernel spreads new connections
evenly over the slots (measured with one shared socket: 54 of wrk's 64 connections went to one
worker, which then did most of the work). UNIX sockets and inherited descriptors are shared by
all workers, each taking new connections as it wakes. Each worker starts its own engine and
Python pool and serves. The parent starts no engine: it supervises.

The parent keeps every socket open for as long as the server runs, and a new worker inherits
the very sockets its slot's old worker served. So a connection waiting in a socket's accept
backlog when a worker stops is taken by the next one: replacing a worker refuses nobody. The
worker being replaced drains: it takes no new connection, answers what it has with
``Connection: close`` (a keep-alive client's next request too, if it comes within the idle
timeout), and exits when its connections are gone or after ``shutdown_timeout``.

- **Reload** (SIGHUP, or ``reload()``): a new generation of workers starts, one per slot, each
  importing the application anew when the command named it (``stogie`` imports it in each
  worker, not in the parent); once every one of them serves, the old ones drain and exit. A
  new worker that fails to import the app, or exits or hangs before it serves, ends the
  reload: the new workers are stopped and the old ones go on serving; the reason is logged.
- **More or fewer workers**: SIGTTIN adds a slot and its worker, SIGTTOU removes the last
  one (gunicorn's signals; ``add_worker()``, ``remove_worker()``). A removed TCP slot first
  gets no new connections (a socket filter steers them to the other slots), then its worker
  takes what waits in its backlog, then drains.
- **Recycling**: a worker that served ``max_requests`` requests (plus a random
  0..``max_requests_jitter``, so that workers started together are not replaced together),
  whose memory (RSS) passes ``max_worker_memory`` MiB, or that has run ``worker_lifetime``
  seconds, is replaced as in a reload, slot by slot: its replacement starts, serves, then it
  drains.
- A serving worker that sends no heartbeat for ``worker_timeout`` seconds (its engine or its
  main thread is stuck: a deadlock, a C call that holds the GIL) is killed (SIGKILL) and
  replaced as a worker that died is (gunicorn's ``--timeout``). A supervisor that was itself
  stopped (SIGSTOP, a debugger) first gives its workers that long again.
- A worker that dies while the server runs is replaced, after a delay that doubles with each
  replacement in the same slot within a minute (0.1 s up to 5 s), and at most
  ``MAX_RESTARTS_PER_MINUTE`` times a minute per slot, so a crash-looping app does not spin.
- SIGTERM or SIGINT to the parent (or ``stop()`` in it) sends SIGTERM to every worker, waits
  up to ``shutdown_timeout`` (plus ``STOP_MARGIN``) for them to finish the requests in
  flight, then kills those left. A second signal while they finish kills them at once.
- In a worker, SIGTERM or SIGINT stops gracefully (no new connections, requests in flight
  finish, exit status 0). A worker stops the same way when the parent dies (Linux: the
  parent-death signal; elsewhere it notices within a second).

Each worker talks to the parent over a socket pair of its own: it says when it serves (or why
it could not start), sends a heartbeat a few times a second while its engine's runtime runs
(the systemd watchdog is fed only while every serving worker's heartbeat is fresh), and asks
to be replaced when it has served its requests; the parent tells it to drain.

Forking a process that runs other threads is unsafe (a lock held by another thread stays
held in the child forever), so ``prepare()`` refuses to fork with more than one thread
running. The parent's ``stats`` count nothing (each worker counts its own), and settings
changed after ``prepare()`` do not reach workers already running.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import socket
import stat
import threading
import time

from ._text import quantity
from ._workers import (
    _CONTROL_SIGNALS,
    _STOP_SIGNALS,
    BEAT_INTERVAL,
    EXIT_LOAD_FAILED,
    MAX_RESTART_DELAY,
    MAX_RESTARTS_PER_MINUTE,
    OVER_LIMIT,
    RECYCLE_RETRY,
    REPEAT_SIGNAL_WINDOW,
    RESTART_DELAY,
    SLOT_DRAIN_LIMIT,
    SLOT_SETTLE,
    STALE_AFTER,
    START_TIMEOUT,
    STOP_MARGIN,
    SUPERVISOR_STALL,
    log,
)
from ._workers.bookkeeping import Bookkeeping, metrics_capacity
from ._workers.child import WorkerSide
from ._workers.process import _ignore, _parent_death_signal, _received_all, _wait_readable
from ._workers.replacing import Replacing
from ._workers.steering import Slots

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ._workers.bookkeeping import _Worker
    from .server import HTTPServer
    from .systemd import Notifier

__all__ = (
    "BEAT_INTERVAL",
    "EXIT_LOAD_FAILED",
    "MAX_RESTARTS_PER_MINUTE",
    "MAX_RESTART_DELAY",
    "OVER_LIMIT",
    "RECYCLE_RETRY",
    "REPEAT_SIGNAL_WINDOW",
    "RESTART_DELAY",
    "SLOT_DRAIN_LIMIT",
    "SLOT_SETTLE",
    "STALE_AFTER",
    "START_TIMEOUT",
    "STOP_MARGIN",
    "SUPERVISOR_STALL",
    "Recycling",
    "Supervisor",
    "WorkerStartError",
    "check_can_fork",
    "metrics_capacity",
)


class WorkerStartError(RuntimeError):
    """The first workers could not start (the application failed to load, or they died)."""


def check_can_fork(count: int) -> None:
    """Raise ``RuntimeError`` if ``count`` worker processes cannot be forked safely here."""
    if not hasattr(os, "fork"):
        raise RuntimeError(f"workers={count} needs os.fork(), which this platform lacks")
    threads = threading.enumerate()
    if len(threads) != 1:
        names = ", ".join(sorted(t.name for t in threads if t is not threading.current_thread()))
        raise RuntimeError(
            f"workers={count} forks worker processes, which is unsafe while other threads run"
            f" ({names}): prepare the server before starting threads, or use workers=1"
        )


class Recycling:
    """When a worker is replaced: after ``max_requests`` (0: never) plus a random
    0..``max_requests_jitter`` requests, past ``max_memory`` bytes of RSS (0: never), after
    ``lifetime`` seconds (0: never)."""

    def __init__(
        self,
        max_requests: int = 0,
        max_requests_jitter: int = 0,
        max_memory: int = 0,
        lifetime: float = 0,
    ) -> None:
        self.max_requests = max_requests
        self.max_requests_jitter = max_requests_jitter
        self.max_memory = max_memory
        self.lifetime = lifetime

    def __bool__(self) -> bool:
        return bool(self.max_requests or self.max_memory or self.lifetime)

    def request_limit(self) -> int:
        """This worker's limit, jitter drawn, or 0."""
        if not self.max_requests:
            return 0
        return self.max_requests + random.randint(0, self.max_requests_jitter or 0)


class Supervisor(Bookkeeping, WorkerSide, Replacing, Slots):
    """Forks, watches, reloads, recycles and stops the worker processes of one server.

    Args:
        server: the prepared ``HTTPServer``; its native server holds the bound listeners.
        count: how many worker processes to run.
        socket_file: the UNIX socket paths to remove once every worker is gone (a list, or one
            path, or None).
        loader: run in each new worker before it serves; returns ``(app, description)``,
            the application to serve (a WSGI callable or a ``Gateway`` subclass) and how to
            name it. None: the worker serves the server's own app (forked with it).
        recycling: a :class:`Recycling`, or None.
        worker_timeout: kill and replace a serving worker whose heartbeat is this many
            seconds old (0: never).
        notifier: told of readiness, reloads, the stop and the workers' health (systemd), or
            None.
    """

    def __init__(
        self,
        server: HTTPServer,
        count: int,
        socket_file: str | bytes | Sequence[str | bytes] | None = None,
        loader: Callable[[], tuple[object, str]] | None = None,
        recycling: Recycling | None = None,
        notifier: Notifier | None = None,
        worker_timeout: float = 0,
    ) -> None:
        self.server = server
        self.count = count
        self.socket_file = socket_file
        self.loader = loader
        self.recycling = recycling or Recycling()
        self.notifier = notifier
        self.worker_timeout = worker_timeout
        self.signal: str | None = None
        """The name of the signal that stopped the workers, if one did."""
        self.cut_short: str | None = None
        """The name of a second signal that ended the stop before the workers finished."""
        self.description: str | None = None
        """How the first worker that served named its application."""
        self.generation = 0
        """The generation serving: 0 at start, one more after each completed reload."""
        self.slots = list(range(count))
        self.workers: dict[int, _Worker] = {}  # pid -> _Worker
        # (due, slot): replacements waiting for their delay
        self._pending: list[tuple[float, int]] = []
        # slot -> times
        self._restarts: collections.defaultdict[int, collections.deque[float]] = (
            collections.defaultdict(collections.deque)
        )
        # (generation, deadline) of the reload in progress
        self._reload: tuple[int, float] | None = None
        self._reload_again = False
        # (slot, since, empty_since) of a slot being removed
        self._removing: tuple[int, float, float | None] | None = None
        self._steered: int | None = None  # how many slots the socket filter serves, if set
        # Slots whose worker reached its limit, out of the filter's rotation until their
        # replacement serves, and {pid: (since, empty_since)} of those workers while what
        # waits in their backlog is taken.
        self._resting: set[int] = set()
        self._settling: dict[int, tuple[float, float | None]] = {}
        self._commands: collections.deque[str] = collections.deque()
        self._early_signals: list[int] = []  # received while the workers started
        self._lock = threading.Lock()
        self._shutdown_lock = threading.RLock()
        self._finished = threading.Event()
        self._stopping = False
        self._loop_thread: int | None = None
        self._signal_time: float | None = None
        self._warned_threads = False
        # when the loop last looked at its workers (monotonic)
        self._last_check: float | None = None
        self._parent_pid = os.getpid()
        self._die_with_parent = _parent_death_signal()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    @property
    def children(self) -> dict[int, int]:
        """``{pid: slot}`` of the workers alive."""
        return {pid: w.slot for pid, w in self.workers.items()}

    # --- starting ---------------------------------------------------------------------------

    def start(self) -> None:
        """Fork the workers and wait until each serves.

        Raises:
            WorkerStartError: a worker could not load the application, or exited before it
                served; the others are stopped.
        """
        check_can_fork(self.count)
        # Signals are taken from now on (in the main thread), not only once serve() runs: a
        # SIGTERM while the workers start must stop them gracefully, not kill this process.
        if threading.current_thread() is threading.main_thread():
            self._previous_signals = self._install_signals()
        try:
            for slot in self.slots:
                self._spawn(slot, 0)
            while True:
                self._reap()
                self._read_messages()
                failed = [w for w in self.workers.values() if w.state == "failed"]
                if failed:
                    raise WorkerStartError(failed[0].description)
                if self._failure is not None:
                    raise WorkerStartError(self._failure)
                if all(w.state == "serving" for w in self.workers.values()):
                    break
                self._early_signals.extend(self._wait(0.1))
        except BaseException:
            self._shutdown()
            self._put_back_signals()
            raise
        assert self.server._native is not None
        self.server._native.set_workers_running(len(self.children))

    _failure: str | None = None
    _previous_signals: dict[int | str, Any] | None = None

    def _put_back_signals(self) -> None:
        previous, self._previous_signals = self._previous_signals, None
        if previous is not None:
            self._restore_signals(previous)

    # --- supervising ------------------------------------------------------------------------

    def serve(self) -> str | None:
        """Keep the workers running until ``stop()``, SIGTERM or SIGINT; then stop them.

        SIGTERM, SIGINT, SIGHUP, SIGTTIN and SIGTTOU are handled only when this runs in the
        main thread; :meth:`reload`, :meth:`add_worker` and :meth:`remove_worker` work from
        any thread.

        Returns:
            the name of the signal that stopped the workers, or None after ``stop()``.
        """
        in_main = threading.current_thread() is threading.main_thread()
        with self._lock:
            if self._loop_thread is not None:
                raise RuntimeError("the workers are already supervised by another thread")
            self._loop_thread = threading.get_ident()
        if in_main and self._previous_signals is None:
            self._previous_signals = self._install_signals()
        try:
            self._supervise(in_main)
        finally:
            try:
                if self.notifier is not None:
                    self.notifier.stopping()
                self._shutdown()
            finally:
                self._put_back_signals()
                with self._lock:
                    self._loop_thread = None
        return self.signal

    def reload(self) -> None:
        """Start a new generation of workers; the old ones drain once all of them serve."""
        self._command("reload")

    def add_worker(self) -> None:
        """Add a worker slot and its worker (as SIGTTIN)."""
        self._command("add")

    def remove_worker(self) -> None:
        """Remove the last worker slot; its worker drains (as SIGTTOU)."""
        self._command("remove")

    def _command(self, name: str) -> None:
        self._commands.append(name)
        self._wake()

    def _supervise(self, in_main: bool) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
            self._reap()
            self._read_messages()
            self._restart_due()
            self._check_workers()
            self._progress()
            while self._commands:
                self._run_command(self._commands.popleft())
            if self.notifier is not None:
                self.notifier.tick(self._healthy())
            # In the main thread SIGCHLD wakes the wait; elsewhere exits are polled for.
            timeout = 0.5 if in_main else 0.2
            if self._pending:
                timeout = max(0.0, min(timeout, self._pending[0][0] - time.monotonic()))
            if self._removing is not None or self._settling:
                timeout = min(timeout, 0.05)
            if self.notifier is not None:
                timeout = min(timeout, self.notifier.interval())
            received = self._early_signals + self._wait(timeout)
            self._early_signals = []
            for signum in received:
                if signum in _STOP_SIGNALS:
                    self.signal = signal.Signals(signum).name
                    self._signal_time = time.monotonic()
                    log.info(
                        "%s received: stopping %s",
                        self.signal,
                        quantity(len(self.workers), "worker"),
                    )
                    return
                commands: dict[int, str] = {
                    signal.SIGHUP: "reload",
                    signal.SIGTTIN: "add",
                    signal.SIGTTOU: "remove",
                }
                self._run_command(commands[signum])

    def _run_command(self, name: str) -> None:
        if name == "reload":
            self._start_reload()
        elif name == "add":
            self._add_slot()
        elif name == "remove":
            self._remove_slot()

    def stop(self) -> None:
        """Stop the workers gracefully; returns once they are gone."""
        with self._lock:
            self._stopping = True
            loop = self._loop_thread
        if loop is not None and loop != threading.get_ident():
            self._wake()
            self._finished.wait()
        else:
            self._shutdown()
            if threading.current_thread() is threading.main_thread():
                self._put_back_signals()

    def _install_signals(self) -> dict[int | str, Any]:
        previous: dict[int | str, Any] = {
            "wakeup": signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        }
        for signum in (*_STOP_SIGNALS, *_CONTROL_SIGNALS, signal.SIGCHLD, signal.SIGUSR1):
            previous[signum] = signal.signal(signum, _ignore)
        return previous

    def _restore_signals(self, previous: dict[int | str, Any]) -> None:
        for signum, handler in previous.items():
            if isinstance(signum, int):  # not "wakeup"
                signal.signal(signum, handler)
        signal.set_wakeup_fd(previous["wakeup"])

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full: the waiter wakes anyway

    def _select(self, timeout: float, messages: bool = True) -> list[int]:
        """Wait for a signal, a wake-up or (``messages``) a worker's message; return what the
        wake-up socket got."""
        socks = [self._wake_r]
        if messages:
            socks.extend(w.ctl for w in self.workers.values() if not w.closed)
        readable = _wait_readable(socks, timeout)
        if self._wake_r not in readable:
            return []
        received: list[int] = _received_all(self._wake_r)
        if signal.SIGUSR1 in received:
            # logrotate: every worker reopens its access log.
            self._send_all(signal.SIGUSR1)
        return received

    def _wait(self, timeout: float, messages: bool = True) -> list[int]:
        """Wait; return the signals among SIGTERM, SIGINT, SIGHUP, SIGTTIN, SIGTTOU received."""
        wanted = (*_STOP_SIGNALS, *_CONTROL_SIGNALS)
        return [s for s in self._select(timeout, messages) if s in wanted]

    # --- stopping ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        with self._shutdown_lock:
            if self._finished.is_set():
                return
            with self._lock:
                self._stopping = True
                self._pending.clear()
            try:
                self._stop_children()
            finally:
                self._remove_socket_file()
                self._finished.set()

    def _stop_children(self) -> None:
        self._send_all(signal.SIGTERM)
        grace = float(self.server.shutdown_timeout or 0) + STOP_MARGIN
        deadline = time.monotonic() + grace
        while True:
            self._reap()
            if not self.workers:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%s still running %.1f s after SIGTERM: killing %s",
                    quantity(len(self.workers), "worker"),
                    grace,
                    "it" if len(self.workers) == 1 else "them",
                )
                break
            received = [
                s for s in self._wait(min(remaining, 0.1), messages=False) if s in _STOP_SIGNALS
            ]
            if received and (
                self._signal_time is None
                or time.monotonic() - self._signal_time >= REPEAT_SIGNAL_WINDOW
            ):
                self.cut_short = signal.Signals(received[0]).name
                log.warning(
                    "%s received again: killing %s without waiting for running requests",
                    self.cut_short,
                    quantity(len(self.workers), "worker"),
                )
                break
        self._send_all(signal.SIGKILL)
        for pid, worker in list(self.workers.items()):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            worker.ctl.close()
            del self.workers[pid]

    def signal_workers(self, signum: int) -> None:
        """Send ``signum`` to every worker (SIGUSR1: reopen the access log)."""
        self._send_all(signum)

    def _send_all(self, signum: int) -> None:
        for pid in self.workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _remove_socket_file(self) -> None:
        paths = self.socket_file
        if isinstance(paths, (str, bytes)):
            paths = [paths]
        for path in paths or ():
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass
