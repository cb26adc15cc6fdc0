"""Several worker processes on one listening socket (``workers=N``, ``stogie --workers N``).

The parent process binds (no engine, no thread started), then forks N workers. A TCP address
is bound N times in one SO_REUSEPORT group, one listening socket per worker slot: the kernel
spreads new connections evenly over the slots (measured with one shared socket: 54 of wrk's
64 connections went to one worker, which then did most of the work). The parent keeps every
slot's socket open, so connections queued for a worker that dies wait for its replacement
instead of being reset. UNIX sockets and inherited descriptors are shared by all workers,
each taking new connections as it wakes. Each worker starts its own engine and Python pool
and serves. The parent starts no engine: it supervises.

- A worker that dies while the server runs is replaced, after a delay that doubles with each
  replacement in the same slot within a minute (0.1 s up to 5 s), and at most
  ``MAX_RESTARTS_PER_MINUTE`` times a minute per slot, so a crash-looping app does not spin.
- SIGTERM or SIGINT to the parent (or ``stop()`` in it) sends SIGTERM to every worker, waits
  up to ``shutdown_timeout`` (plus ``STOP_MARGIN``) for them to finish the requests in
  flight, then kills those left. A second signal while they finish kills them at once.
- In a worker, SIGTERM or SIGINT stops gracefully (no new connections, requests in flight
  finish, exit status 0). A worker stops the same way when the parent dies (Linux: the
  parent-death signal; elsewhere it notices within a second).

Forking a process that runs other threads is unsafe (a lock held by another thread stays
held in the child forever), so ``prepare()`` refuses to fork with more than one thread
running. The parent's ``stats`` count nothing (each worker counts its own), and settings
changed after ``prepare()`` do not reach workers already running.
"""

import collections
import logging
import os
import select
import signal
import socket
import stat
import sys
import threading
import time

log = logging.getLogger("stogie.workers")

# The first replacement of a dead worker waits this long; each further one in the same slot
# within a minute doubles it, up to MAX_RESTART_DELAY.
RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 5.0
MAX_RESTARTS_PER_MINUTE = 10
# Time given to workers beyond shutdown_timeout to exit on their own before they are killed:
# the engine's own teardown and the interpreter's exit.
STOP_MARGIN = 3.0
# A second SIGINT or SIGTERM this soon after the first is the same one delivered twice (a
# terminal or `timeout` signals the whole process group), not a request to hurry.
REPEAT_SIGNAL_WINDOW = 0.5

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP}
# Signals the supervisor passes on to every worker (SIGHUP only with TLS).
_RELAYED = (signal.SIGUSR1, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def check_can_fork(count):
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


def _parent_death_signal():
    """A function that asks for SIGTERM when the parent dies (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def die_with_parent():
        return prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0

    return die_with_parent


def _describe(status):
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _flush_stdio():
    # Buffered output not yet written would otherwise be written again by every child.
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _ignore(signum, frame):
    # Needed all the same: set_wakeup_fd() only sees signals that have a Python handler.
    pass


class Supervisor:
    """Forks, watches and stops the worker processes of one server.

    Args:
        server: the prepared ``HTTPServer``; its native server holds the bound listener.
        count: how many worker processes to run.
        socket_file: the UNIX socket path to remove once every worker is gone, or None.
    """

    def __init__(self, server, count, socket_file=None):
        self.server = server
        self.count = count
        self.socket_file = socket_file
        self.signal = None
        """The name of the signal that stopped the workers, if one did."""
        self.cut_short = None
        """The name of a second signal that ended the stop before the workers finished."""
        self.children = {}  # pid -> slot
        self._pending = []  # (due, slot): replacements waiting for their delay
        self._restarts = collections.defaultdict(collections.deque)  # slot -> times
        self._lock = threading.Lock()
        self._shutdown_lock = threading.RLock()
        self._finished = threading.Event()
        self._stopping = False
        self._loop_thread = None
        self._signal_time = None
        self._warned_threads = False
        self._parent_pid = os.getpid()
        self._die_with_parent = _parent_death_signal()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # --- starting ---------------------------------------------------------------------------

    def start(self):
        """Fork the workers. On failure, stop those already started and raise."""
        check_can_fork(self.count)
        try:
            for slot in range(self.count):
                self._spawn(slot)
        except BaseException:
            self._shutdown()
            raise
        self.server._native.set_workers_running(len(self.children))

    def _spawn(self, slot):
        _flush_stdio()
        # Signals wait until the child has put its own handlers in place: the ones inherited
        # would write to the parent's wake-up socket.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
        try:
            pid = os.fork()
            if pid == 0:
                self._run_child(mask, slot)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.children[pid] = slot
        log.info("worker %d started", pid)

    # --- in a worker ------------------------------------------------------------------------

    def _run_child(self, mask, slot):
        code = 1
        try:
            code = self._child_main(mask, slot)
        except BaseException:
            try:
                log.exception("worker %d failed", os.getpid())
            except BaseException:
                pass
        finally:
            try:
                for handler in logging.getLogger().handlers + log.handlers:
                    handler.flush()
                _flush_stdio()
            finally:
                # Never return into the parent's stack (a test runner, an embedding program).
                os._exit(code)

    def _child_main(self, mask, slot):
        server = self.server
        object.__setattr__(server, "_supervisor", None)
        if self._die_with_parent is not None:
            self._die_with_parent()
        if os.getppid() != self._parent_pid:
            return 0  # the parent died before the line above
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (*_STOP_SIGNALS, signal.SIGUSR1):
            signal.signal(signum, _ignore)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if server.ssl_adapter is not None:
            # SIGHUP: read the TLS certificate and key again (the supervisor passes it on).
            signal.signal(signal.SIGHUP, _ignore)
        self._wake_r.close()
        self._wake_w.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

        server._start_engine(remove_socket_file=False, slot=slot)
        pid = os.getpid()
        log.debug("worker %d serving", pid)
        app_stopped = False
        while True:
            if _wait_readable(wake_r, 1.0):
                received = _received(wake_r, (*_STOP_SIGNALS, *_RELAYED), every=True)
                if signal.SIGUSR1 in received:
                    server.reopen_access_log()
                if signal.SIGHUP in received:
                    from . import ssl

                    ssl.reload_logged(server)
                if received & set(_STOP_SIGNALS):
                    log.debug("worker %d stopping", pid)
                    break
            if os.getppid() != self._parent_pid:
                log.warning("worker %d: the supervisor is gone; stopping", pid)
                break
            if server._native is None:
                # The app called stop() (CherryPy's engine.exit() does): its request and
                # the others in flight finish in the background; wait for them.
                app_stopped = True
                break
        server.stop()
        if app_stopped:
            last = server._last_native
            deadline = time.monotonic() + float(server.shutdown_timeout) + 0.5
            while last.counters().get("connections", 0) and time.monotonic() < deadline:
                time.sleep(0.05)
        return 0

    # --- supervising ------------------------------------------------------------------------

    def serve(self):
        """Keep the workers running until ``stop()``, SIGTERM or SIGINT; then stop them.

        SIGTERM and SIGINT are handled only when this runs in the main thread.

        Returns:
            the name of the signal that stopped the workers, or None after ``stop()``.
        """
        in_main = threading.current_thread() is threading.main_thread()
        with self._lock:
            if self._loop_thread is not None:
                raise RuntimeError("the workers are already supervised by another thread")
            self._loop_thread = threading.get_ident()
        previous = self._install_signals() if in_main else None
        try:
            self._supervise(in_main)
        finally:
            try:
                self._shutdown()
            finally:
                if previous is not None:
                    self._restore_signals(previous)
                with self._lock:
                    self._loop_thread = None
        return self.signal

    def _supervise(self, in_main):
        while True:
            with self._lock:
                if self._stopping:
                    return
            self._reap()
            self._restart_due()
            # In the main thread SIGCHLD wakes the wait; elsewhere exits are polled for.
            timeout = 1.0 if in_main else 0.2
            if self._pending:
                timeout = max(0.0, min(timeout, self._pending[0][0] - time.monotonic()))
            received = self._wait(timeout)
            if received is not None:
                self.signal = signal.Signals(received).name
                self._signal_time = time.monotonic()
                log.info("%s received: stopping %d workers", self.signal, len(self.children))
                return

    def stop(self):
        """Stop the workers gracefully; returns once they are gone."""
        with self._lock:
            self._stopping = True
            loop = self._loop_thread
        if loop is not None and loop != threading.get_ident():
            self._wake()
            self._finished.wait()
        else:
            self._shutdown()

    def _install_signals(self):
        previous = {
            "wakeup": signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        }
        for signum in (*_STOP_SIGNALS, signal.SIGCHLD, signal.SIGUSR1):
            previous[signum] = signal.signal(signum, _ignore)
        if self.server.ssl_adapter is not None:
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _ignore)
        return previous

    def _restore_signals(self, previous):
        for signum, handler in previous.items():
            if signum != "wakeup":
                signal.signal(signum, handler)
        signal.set_wakeup_fd(previous["wakeup"])

    def _wake(self):
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full: the waiter wakes anyway

    def _wait(self, timeout):
        """Wait for a signal or a wake-up; return a SIGTERM or SIGINT received, or None."""
        if _wait_readable(self._wake_r, timeout):
            received = _received(self._wake_r, (*_STOP_SIGNALS, *_RELAYED), every=True)
            if signal.SIGUSR1 in received:
                # logrotate: every worker reopens its access log.
                self._send_all(signal.SIGUSR1)
            if signal.SIGHUP in received:
                # A renewed certificate: every worker reads it.
                self._send_all(signal.SIGHUP)
            for signum in _STOP_SIGNALS:
                if signum in received:
                    return signum
        return None

    def _reap(self):
        """Collect workers that exited; schedule a replacement unless stopping."""
        for pid, slot in list(self.children.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, None  # reaped elsewhere (a waitpid(-1) in the program)
            if not done:
                continue
            del self.children[pid]
            how = "exited" if status is None else _describe(status)
            with self._lock:
                stopping = self._stopping
            native = self.server._native
            if native is not None:
                # Its counts stay in the metrics' sums; a replacement counts as a restart.
                native.retire_worker(slot, replaced=not stopping)
                native.set_workers_running(len(self.children))
            if stopping:
                log.debug("worker %d %s", pid, how)
            else:
                log.warning("worker %d %s; starting another", pid, how)
                self._schedule(slot)

    def _schedule(self, slot):
        now = time.monotonic()
        times = self._restarts[slot]
        while times and times[0] < now - 60:
            times.popleft()
        due = now + min(RESTART_DELAY * 2 ** len(times), MAX_RESTART_DELAY)
        if len(times) >= MAX_RESTARTS_PER_MINUTE:
            due = max(due, times[-MAX_RESTARTS_PER_MINUTE] + 60)
            log.error(
                "workers keep dying: %d replaced in the last minute; the next in %.0f s",
                len(times),
                due - now,
            )
        times.append(due)
        self._pending.append((due, slot))
        self._pending.sort()

    def _restart_due(self):
        now = time.monotonic()
        while self._pending and self._pending[0][0] <= now:
            with self._lock:
                if self._stopping:
                    return
            _, slot = self._pending.pop(0)
            threads = threading.active_count()
            if threads > 1 and not self._warned_threads:
                self._warned_threads = True
                log.warning(
                    "forking a worker while %d threads run in the supervising process:"
                    " a lock one of them holds stays held in the worker",
                    threads,
                )
            try:
                self._spawn(slot)
            except OSError as exc:
                log.error("cannot start a worker: %s", exc)
                self._schedule(slot)
            self.server._native.set_workers_running(len(self.children))

    # --- stopping ---------------------------------------------------------------------------

    def _shutdown(self):
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

    def _stop_children(self):
        self._send_all(signal.SIGTERM)
        grace = float(self.server.shutdown_timeout or 0) + STOP_MARGIN
        deadline = time.monotonic() + grace
        while True:
            self._reap()
            if not self.children:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%d workers still running %.1f s after SIGTERM: killing them",
                    len(self.children),
                    grace,
                )
                break
            received = self._wait(min(remaining, 0.1))
            if received is not None and (
                self._signal_time is None
                or time.monotonic() - self._signal_time >= REPEAT_SIGNAL_WINDOW
            ):
                self.cut_short = signal.Signals(received).name
                log.warning(
                    "%s received again: killing %d workers without waiting for running requests",
                    self.cut_short,
                    len(self.children),
                )
                break
        self._send_all(signal.SIGKILL)
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            del self.children[pid]

    def signal_workers(self, signum):
        """Send ``signum`` to every worker (SIGUSR1: reopen the access log; SIGHUP: read the
        TLS certificate and key again)."""
        self._send_all(signum)

    def _send_all(self, signum):
        for pid in self.children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _remove_socket_file(self):
        path = self.socket_file
        if not path:
            return
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except OSError:
            pass


def _wait_readable(sock, timeout):
    try:
        readable, _, _ = select.select([sock], [], [], max(timeout, 0))
    except InterruptedError:  # pragma: no cover - PEP 475 retries
        return True
    return bool(readable)


def _received(sock, signals, every=False):
    """Drain the wake-up socket; return the first of ``signals`` found in it, or None
    (with ``every``: the set of them found)."""
    found = None
    seen = set()
    while True:
        try:
            data = sock.recv(512)
        except (BlockingIOError, InterruptedError):
            return seen if every else found
        if not data:
            return seen if every else found
        for signum in data:
            if signum in signals:
                seen.add(signum)
                if found is None:
                    found = signum
