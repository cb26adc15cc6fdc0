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

import collections
import ctypes
import logging
import os
import random
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time

from . import ssl

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
# A new worker (reload, replacement, added slot) that does not serve within this long has
# failed: it is stopped, and the workers it was to replace go on.
START_TIMEOUT = 120.0
# How often a worker sends its heartbeat and checks its request count.
BEAT_INTERVAL = 0.25
# A worker whose engine's runtime has not run for this long sends no heartbeat, and one
# whose heartbeat is this old counts as hung (for the watchdog).
STALE_AFTER = 2.0
# A supervisor whose loop did not run for this long was stopped itself (SIGSTOP, Ctrl-Z, a
# debugger): the heartbeats it missed say nothing of its workers.
SUPERVISOR_STALL = 2 * STALE_AFTER
# A recycling replacement that failed is tried again after this long.
RECYCLE_RETRY = 10.0
# Before a removed TCP slot's worker drains, its backlog must have stayed empty this long
# (a handshake that began before the socket filter changed lands late), or this long passed.
SLOT_SETTLE = 0.2
SLOT_DRAIN_LIMIT = 5.0
# Exit status of a worker that could not load the application (it said why first).
EXIT_LOAD_FAILED = 4

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_CONTROL_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1, *_CONTROL_SIGNALS}
_PR_SET_PDEATHSIG = 1
# What the engine writes to a worker's wake-up socket when it served OVER_LIMIT times its
# request limit (no signal has this number).
_OVER = 255
OVER_LIMIT = 2
_MESSAGE_SIZE = 65536


def metrics_capacity(count):
    """Metrics slots for ``count`` workers: each worker process alive at a time has one, and a
    reload runs two generations at once; a few more for workers added by SIGTTIN."""
    return 2 * count + 8


class WorkerStartError(RuntimeError):
    """The first workers could not start (the application failed to load, or they died)."""


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


class Recycling:
    """When a worker is replaced: after ``max_requests`` (0: never) plus a random
    0..``max_requests_jitter`` requests, past ``max_memory`` bytes of RSS (0: never), after
    ``lifetime`` seconds (0: never)."""

    def __init__(self, max_requests=0, max_requests_jitter=0, max_memory=0, lifetime=0):
        self.max_requests = max_requests
        self.max_requests_jitter = max_requests_jitter
        self.max_memory = max_memory
        self.lifetime = lifetime

    def __bool__(self):
        return bool(self.max_requests or self.max_memory or self.lifetime)

    def request_limit(self):
        """This worker's limit, jitter drawn, or 0."""
        if not self.max_requests:
            return 0
        return self.max_requests + random.randint(0, self.max_requests_jitter or 0)


def _parent_death_signal():
    """A function that asks for SIGTERM when the parent dies (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
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


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _ignore(signum, frame):
    # Needed all the same: set_wakeup_fd() only sees signals that have a Python handler.
    pass


def _rss(pid):
    """The resident memory of process ``pid`` in bytes, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# --- steering connections over the slots of an SO_REUSEPORT group ------------------------------

_SO_ATTACH_REUSEPORT_CBPF = 51
_SKF_AD_RANDOM = 56
_SKF_AD_OFF = -0x1000


def _steer(fds, count, skipped=()):
    """Send new connections of the SO_REUSEPORT groups of ``fds`` to their first ``count``
    sockets only, at random, but for those numbered in ``skipped`` (a classic BPF program:
    ``A = random; A %= count - len(skipped);`` then for each skipped number in increasing
    order ``if A >= number: A += 1;`` and ``return A``).

    The kernel numbers a group's sockets in the order they started listening, and closing
    the last one renumbers nothing: slots are added and removed at the end.

    Returns whether the filter is in place.
    """
    skipped = sorted(n for n in set(skipped) if n < count)
    code = [
        (0x20, 0, 0, (_SKF_AD_OFF + _SKF_AD_RANDOM) & 0xFFFFFFFF),  # ld rand
        (0x94, 0, 0, count - len(skipped)),  # mod #(count - skipped)
    ]
    for number in skipped:
        code.append((0x35, 0, 1, number))  # jge #number: next, else skip one
        code.append((0x04, 0, 0, 1))  # add #1
    code.append((0x16, 0, 0, 0))  # ret a
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in code))
    fprog = struct.pack("HL", len(code), ctypes.addressof(program))
    for fd in fds:
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)
        except OSError as exc:
            log.warning("cannot steer connections between worker slots: %s", exc)
            return False
        finally:
            sock.close()
    return True


def _backlog(fds):
    """Connections waiting to be accepted on the listening sockets ``fds`` (TCP_INFO)."""
    waiting = 0
    for fd in fds:
        sock = socket.socket(fileno=os.dup(fd))
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
            # struct tcp_info: for a listening socket, tcpi_unacked is its accept queue.
            waiting += struct.unpack_from("I", info, 24)[0]
        except OSError:
            pass
        finally:
            sock.close()
    return waiting


# --- the parent's view of a worker -------------------------------------------------------------


class _Worker:
    """A worker process as the supervisor tracks it."""

    def __init__(self, pid, slot, generation, ctl):
        self.pid = pid
        self.slot = slot
        self.generation = generation
        self.ctl = ctl
        self.state = "starting"  # -> "serving" -> "retiring" (or "hung": killed)
        self.started = time.monotonic()
        self.last_beat = self.started
        self.description = None
        self.replaces = None  # the worker this one is to replace once it serves
        self.replacement = None  # the worker starting to replace this one
        self.retry_after = 0.0  # no recycling replacement before this (monotonic)
        self.recycle_reason = None
        self.closed = False  # its end of the control pair is closed: it is exiting
        self.metrics_slot = 0
        self.drain_deadline = None  # told to drain: killed if still alive then (monotonic)
        self.served = None  # the requests it answered in all, as it said when it stopped


class Supervisor:
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
        server,
        count,
        socket_file=None,
        loader=None,
        recycling=None,
        notifier=None,
        worker_timeout=0,
    ):
        self.server = server
        self.count = count
        self.socket_file = socket_file
        self.loader = loader
        self.recycling = recycling or Recycling()
        self.notifier = notifier
        self.worker_timeout = worker_timeout
        self.signal = None
        """The name of the signal that stopped the workers, if one did."""
        self.cut_short = None
        """The name of a second signal that ended the stop before the workers finished."""
        self.description = None
        """How the first worker that served named its application."""
        self.generation = 0
        """The generation serving: 0 at start, one more after each completed reload."""
        self.slots = list(range(count))
        self.workers = {}  # pid -> _Worker
        self._pending = []  # (due, slot): replacements waiting for their delay
        self._restarts = collections.defaultdict(collections.deque)  # slot -> times
        self._reload = None  # (generation, deadline) of the reload in progress
        self._reload_again = False
        self._removing = None  # (slot, since, empty_since) of a slot being removed
        self._steered = None  # how many slots the socket filter serves, if one is set
        # Slots whose worker reached its limit, out of the filter's rotation until their
        # replacement serves, and {pid: (since, empty_since)} of those workers while what
        # waits in their backlog is taken.
        self._resting = set()
        self._settling = {}
        self._commands = collections.deque()
        self._early_signals = []  # received while the workers started
        self._lock = threading.Lock()
        self._shutdown_lock = threading.RLock()
        self._finished = threading.Event()
        self._stopping = False
        self._loop_thread = None
        self._signal_time = None
        self._warned_threads = False
        self._last_check = None  # when the loop last looked at its workers (monotonic)
        self._parent_pid = os.getpid()
        self._die_with_parent = _parent_death_signal()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    @property
    def children(self):
        """``{pid: slot}`` of the workers alive."""
        return {pid: w.slot for pid, w in self.workers.items()}

    # --- starting ---------------------------------------------------------------------------

    def start(self):
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
        self.server._native.set_workers_running(len(self.children))

    _failure = None
    _previous_signals = None

    def _put_back_signals(self):
        previous, self._previous_signals = self._previous_signals, None
        if previous is not None:
            self._restore_signals(previous)

    def _spawn(self, slot, generation, replaces=None):
        _flush_stdio()
        metrics_slot = self._free_metrics_slot()
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Signals wait until the child has put its own handlers in place: the ones inherited
        # would write to the parent's wake-up socket.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
        try:
            pid = os.fork()
            if pid == 0:
                parent_end.close()
                self._run_child(mask, slot, child_end, metrics_slot)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child_end.close()
        parent_end.setblocking(False)
        worker = _Worker(pid, slot, generation, parent_end)
        worker.metrics_slot = metrics_slot
        if replaces is not None:
            worker.replaces = replaces.pid
            replaces.replacement = pid
        self.workers[pid] = worker
        log.info("worker %d started", pid)
        native = self.server._native
        if native is not None:
            native.set_workers_running(len(self.workers))
        return worker

    def _free_metrics_slot(self):
        taken = {w.metrics_slot for w in self.workers.values()}
        capacity = metrics_capacity(self.count)
        for index in range(capacity):
            if index not in taken:
                return index
        # More processes at once than planned for: two share a slot (their sums stay right,
        # a retired one's counts move early).
        log.warning("more than %d worker processes at once: metrics slots are shared", capacity)
        return len(self.workers) % capacity

    # --- in a worker ------------------------------------------------------------------------

    def _run_child(self, mask, slot, ctl, metrics_slot):
        code = 1
        try:
            code = self._child_main(mask, slot, ctl, metrics_slot)
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

    def _child_main(self, mask, slot, ctl, metrics_slot):
        server = self.server
        object.__setattr__(server, "_supervisor", None)
        if self._die_with_parent is not None:
            self._die_with_parent()
        if os.getppid() != self._parent_pid:
            return 0  # the parent died before the line above
        # The other workers' sockets (listeners of other slots, the parent's ends of their
        # control pairs) are theirs: holding them would keep them open past their life.
        server._native.keep_slot(slot)
        for other in self.workers.values():
            other.ctl.close()
        self.workers = {}
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        # Kept until the process exits: a signal that comes after this function returns
        # must still find its wake-up socket's reader open.
        self._child_wake = (wake_r, wake_w)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (*_STOP_SIGNALS, signal.SIGUSR1):
            signal.signal(signum, _ignore)
        # A reload or a change of worker count is the parent's business; a hang-up sent to
        # the whole process group (a closed terminal) must not stop the workers either.
        for signum in _CONTROL_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self._wake_r.close()
        self._wake_w.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

        # A supervisor that stops reading (stopped, or gone) must not block this loop.
        ctl.setblocking(False)
        pid = os.getpid()
        description = None
        if self.loader is not None:
            try:
                app, description = self.loader()
            except BaseException as exc:
                reason = str(exc) if exc.args else type(exc).__name__
                _send(ctl, "failed " + " ".join(reason.split()))
                return EXIT_LOAD_FAILED
            server._use_app(app)
        limit = self.recycling.request_limit()
        # The pool counts the requests it served only while counting is on; nobody reads
        # this worker's own stats, so it costs nothing else.
        server._start_engine(
            remove_socket_file=False, slot=slot, metrics_slot=metrics_slot, count=bool(limit)
        )
        native = server._native
        recycle = f"recycle reached its limit of {limit} requests"
        if limit:
            # Told the supervisor the moment the count reaches the limit, by the engine: a
            # heartbeat later, a busy worker had answered hundreds more. It serves on until
            # its replacement does, but not past twice its limit (a replacement slow to
            # start on a busy machine): it then stops taking connections, which wait in the
            # socket's backlog for the replacement.
            native.announce_at_requests(limit, ctl.fileno(), recycle.encode())
            native.announce_at_requests(OVER_LIMIT * limit, wake_w.fileno(), bytes([_OVER]))
        _send(ctl, "ready " + (description or ""))
        log.debug("worker %d serving", pid)
        asked = False
        drain = False
        app_stopped = False
        while True:
            readable = _wait_readable([wake_r, ctl], BEAT_INTERVAL)
            received = _received_all(wake_r) if wake_r in readable else []
            if signal.SIGUSR1 in received:
                server.reopen_access_log()
            if set(received) & set(_STOP_SIGNALS):
                log.debug("worker %d stopping", pid)
                break
            if _OVER in received or (
                limit and native.counters().get("served", 0) >= OVER_LIMIT * limit
            ):
                _send(ctl, f"retiring it answered {OVER_LIMIT} times its limit of {limit}")
                drain = True
                break
            if ctl in readable:
                message = _recv(ctl)
                if message is None:
                    log.warning("worker %d: the supervisor is gone; stopping", pid)
                    break
                if message == "retire":
                    log.debug("worker %d draining", pid)
                    drain = True
                    break
            if os.getppid() != self._parent_pid:
                log.warning("worker %d: the supervisor is gone; stopping", pid)
                break
            if server._native is None:
                # The app called stop() (CherryPy's engine.exit() does): its request and
                # the others in flight finish in the background; wait for them.
                app_stopped = True
                break
            age = native.heartbeat_age()
            if age is not None and age < STALE_AFTER:
                _send(ctl, "beat")
            if limit and not asked and native.counters().get("served", 0) >= limit:
                # The engine told the supervisor; in case its message was lost (a full
                # socket), once more.
                asked = True
                _send(ctl, recycle)
        # Whatever holds the stop up, this process is gone by the time its supervisor
        # would kill it: a worker left behind would serve old code, or outlive a
        # supervisor that died.
        _exit_by(float(server.shutdown_timeout or 0) + STOP_MARGIN)
        server._stop_engine(drain=drain)
        if app_stopped:
            last = server._last_native
            deadline = time.monotonic() + float(server.shutdown_timeout) + 0.5
            while last.counters().get("connections", 0) and time.monotonic() < deadline:
                time.sleep(0.05)
        if limit:
            # The true total, for the supervisor's log (the limit was passed by what
            # came while the replacement started).
            _send(ctl, f"served {server._last_native.counters().get('served', 0)}")
        return 0

    # --- supervising ------------------------------------------------------------------------

    def serve(self):
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

    def reload(self):
        """Start a new generation of workers; the old ones drain once all of them serve."""
        self._command("reload")

    def add_worker(self):
        """Add a worker slot and its worker (as SIGTTIN)."""
        self._command("add")

    def remove_worker(self):
        """Remove the last worker slot; its worker drains (as SIGTTOU)."""
        self._command("remove")

    def _command(self, name):
        self._commands.append(name)
        self._wake()

    def _supervise(self, in_main):
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
                    log.info("%s received: stopping %d workers", self.signal, len(self.workers))
                    return
                self._run_command(
                    {signal.SIGHUP: "reload", signal.SIGTTIN: "add", signal.SIGTTOU: "remove"}[
                        signum
                    ]
                )

    def _run_command(self, name):
        if name == "reload":
            self._start_reload()
        elif name == "add":
            self._add_slot()
        elif name == "remove":
            self._remove_slot()

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
            if threading.current_thread() is threading.main_thread():
                self._put_back_signals()

    def _install_signals(self):
        previous = {
            "wakeup": signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        }
        for signum in (*_STOP_SIGNALS, *_CONTROL_SIGNALS, signal.SIGCHLD, signal.SIGUSR1):
            previous[signum] = signal.signal(signum, _ignore)
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

    def _select(self, timeout, messages=True):
        """Wait for a signal, a wake-up or (``messages``) a worker's message; return what the
        wake-up socket got."""
        socks = [self._wake_r]
        if messages:
            socks.extend(w.ctl for w in self.workers.values() if not w.closed)
        readable = _wait_readable(socks, timeout)
        if self._wake_r not in readable:
            return []
        received = _received_all(self._wake_r)
        if signal.SIGUSR1 in received:
            # logrotate: every worker reopens its access log.
            self._send_all(signal.SIGUSR1)
        return received

    def _wait(self, timeout, messages=True):
        """Wait; return the signals among SIGTERM, SIGINT, SIGHUP, SIGTTIN, SIGTTOU received."""
        wanted = (*_STOP_SIGNALS, *_CONTROL_SIGNALS)
        return [s for s in self._select(timeout, messages) if s in wanted]

    # --- what the workers say -----------------------------------------------------------------

    def _read_messages(self):
        for worker in list(self.workers.values()):
            self._read_from(worker)

    def _read_from(self, worker):
        while not worker.closed:
            message = _recv(worker.ctl, block=False)
            if message is None:
                worker.closed = True
            elif message == "":
                return
            else:
                self._on_message(worker, message)

    def _on_message(self, worker, message):
        kind, _, rest = message.partition(" ")
        if kind == "beat":
            worker.last_beat = time.monotonic()
        elif kind == "ready":
            worker.last_beat = time.monotonic()
            if worker.state != "starting":
                return
            worker.state = "serving"
            worker.description = rest or None
            if self.description is None:
                self.description = worker.description
            log.debug("worker %d serving", worker.pid)
            self._on_serving(worker)
        elif kind == "failed":
            worker.state = "failed"
            worker.description = rest
        elif kind == "recycle":
            self._recycle(worker, rest)
        elif kind == "served" and rest.isdigit():
            worker.served = int(rest)
        elif kind == "retiring" and worker.state == "serving":
            # It drains without being told (its replacement was slow): its slot is the
            # replacement's, or another's if the replacement fails.
            log.warning("worker %d %s before its replacement served: it stops", worker.pid, rest)
            self._settling.pop(worker.pid, None)
            self._mark_retiring(worker)

    def _on_serving(self, worker):
        self._resting.discard(worker.slot)
        if self._steered is not None and worker.slot in self.slots:
            # An added slot, or one that rested while its worker was replaced, gets
            # connections once its worker serves.
            self._steer(len(self.slots))
        if worker.replaces is not None:
            old = self.workers.get(worker.replaces)
            worker.replaces = None
            if old is not None:
                log.info("worker %d replaced by %d (%s)", old.pid, worker.pid, old.recycle_reason)
                self._retire(old)

    # --- reloading ------------------------------------------------------------------------------

    def _start_reload(self):
        if self._reload is not None:
            self._reload_again = True
            log.info("a reload is in progress: another one follows it")
            return
        if self.server.ssl_adapter is not None:
            # The new workers serve the certificate and key as the files are now (renewed,
            # say); files that cannot be read leave the old workers serving the old pair.
            try:
                ssl.configure(self.server, self.server._native)
            except Exception as exc:  # noqa: BLE001 - logged; the old workers go on
                log.error("reload failed: %s; the old workers go on serving", exc)
                return
        generation = self.generation + 1
        self._reload = (generation, time.monotonic() + START_TIMEOUT)
        log.info("reloading: starting %d workers", len(self.slots))
        if self.notifier is not None:
            self.notifier.reloading()
        for slot in self.slots:
            try:
                self._spawn(slot, generation)
            except OSError as exc:
                self._end_reload(f"cannot start a worker: {exc}")
                return

    def _progress(self):
        """Move a reload or the removal of a slot on when their time has come."""
        if self._reload is not None:
            generation, deadline = self._reload
            new = [
                w
                for w in self.workers.values()
                if w.generation == generation and w.state != "retiring"
            ]
            failed = [w for w in new if w.state == "failed"]
            if failed:
                self._end_reload(failed[0].description)
            elif self._failure is not None:
                self._end_reload(self._failure)
            elif new and all(w.state == "serving" for w in new):
                self._end_reload(None)
            elif time.monotonic() > deadline:
                self._end_reload(f"the new workers did not serve within {START_TIMEOUT:.0f} s")
        if self._removing is not None:
            self._progress_removal()
        if self._settling:
            self._progress_settling()

    def _end_reload(self, failure):
        generation, _ = self._reload
        self._reload = None
        self._failure = None
        new = [w for w in self.workers.values() if w.generation == generation]
        if failure is None:
            self.generation = generation
            old = [w for w in self.workers.values() if w.generation < generation]
            for worker in old:
                self._abandon(worker)
            # A new worker that died after it served left its slot to an old one, gone now.
            for slot in self.slots:
                if not self._slot_covered(slot):
                    self._schedule(slot)
            log.info(
                "reloaded: %d workers serving %s; %d old ones draining",
                len(new),
                new[0].description or "the app",
                len(old),
            )
            if self.notifier is not None:
                self.notifier.ready(f"reloaded: {len(new)} workers serving")
        else:
            for worker in new:
                self._abandon(worker)
            log.error("reload failed: %s; the old workers go on serving", failure)
            if self.notifier is not None:
                self.notifier.ready(f"reload failed: {failure}; the old workers serve")
        if self._reload_again:
            self._reload_again = False
            self._start_reload()

    def _abandon(self, worker):
        """Stop a worker that is not wanted any more: kill it if it serves nobody yet."""
        if worker.state == "serving":
            self._retire(worker)
            return
        worker.state = "retiring"
        _kill(worker.pid)

    def _retire(self, worker):
        if worker.state == "retiring":
            return
        self._mark_retiring(worker)
        if not _send(worker.ctl, "retire"):
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _mark_retiring(self, worker):
        worker.state = "retiring"
        # The worker exits on its own well before this; the supervisor enforces it all the
        # same, so that no bug of the worker's can leave old code serving.
        worker.drain_deadline = (
            time.monotonic() + float(self.server.shutdown_timeout or 0) + STOP_MARGIN
        )

    # --- recycling ------------------------------------------------------------------------------

    def _check_workers(self):
        now = time.monotonic()
        stalled = self._last_check is not None and now - self._last_check > SUPERVISOR_STALL
        self._last_check = now
        if stalled:
            # This process did not run: its workers' heartbeats wait unread, or they were
            # stopped with it. Neither makes them hung.
            for worker in self.workers.values():
                worker.last_beat = max(worker.last_beat, now)
        for worker in list(self.workers.values()):
            # A new worker that hangs before it serves (an import that never returns) would
            # hold its slot for good. A reload's workers have the reload's own deadline.
            reloading = self._reload is not None and worker.generation == self._reload[0]
            if (
                worker.state == "starting"
                and not reloading
                and now - worker.started >= START_TIMEOUT
            ):
                worker.state = "failed"  # reaped as a worker that could not start
                worker.description = f"it did not serve within {START_TIMEOUT:.0f} s"
                log.error("worker %d %s: killing it", worker.pid, worker.description)
                _kill(worker.pid)
        for worker in list(self.workers.values()):
            if worker.drain_deadline is not None and now >= worker.drain_deadline:
                log.warning(
                    "worker %d (slot %d, generation %d) still running %.1f s after it was told"
                    " to drain: killing it",
                    worker.pid,
                    worker.slot,
                    worker.generation,
                    float(self.server.shutdown_timeout or 0) + STOP_MARGIN,
                )
                worker.drain_deadline = None
                _kill(worker.pid)
        if self.worker_timeout:
            for worker in list(self.workers.values()):
                if worker.state == "serving" and now - worker.last_beat >= self.worker_timeout:
                    self._kill_hung(worker, now - worker.last_beat)
        recycling = self.recycling
        if not (recycling.max_memory or recycling.lifetime):
            return
        for worker in list(self.workers.values()):
            if worker.state != "serving":
                continue
            if recycling.lifetime and now - worker.started >= recycling.lifetime:
                self._recycle(worker, f"ran {recycling.lifetime} s")
            elif recycling.max_memory:
                rss = _rss(worker.pid)
                if rss is not None and rss > recycling.max_memory:
                    self._recycle(
                        worker,
                        f"uses {rss / 2**20:.0f} MB, over {recycling.max_memory / 2**20:.0f} MB",
                    )

    def _kill_hung(self, worker, silent):
        log.error(
            "worker %d sent no heartbeat for %.0f s (its engine or main thread is stuck):"
            " killing it",
            worker.pid,
            silent,
        )
        worker.state = "hung"  # reaped as a worker that died: its slot gets another
        _kill(worker.pid)

    def _recycle(self, worker, reason):
        if (
            worker.state != "serving"
            or worker.replacement is not None
            or time.monotonic() < worker.retry_after
            or self._reload is not None
            or worker.slot not in self.slots
        ):
            return
        worker.recycle_reason = reason
        log.info("worker %d %s: replacing it", worker.pid, reason)
        try:
            self._spawn(worker.slot, worker.generation, replaces=worker)
        except OSError as exc:
            log.error("cannot start a worker: %s", exc)
            worker.retry_after = time.monotonic() + RECYCLE_RETRY
            return
        self._rest(worker)

    def _rest(self, worker):
        """Let a worker being replaced stop serving now rather than once its replacement
        serves (which would let it answer what comes while the replacement imports the app:
        ``max_requests`` would mean much more), when other workers can take its clients: its
        TCP slot leaves the socket filter's rotation (connections of shared sockets go to
        the others anyway), it takes what already waits in its backlog, then drains."""
        others = [
            w
            for w in self.workers.values()
            if w.state == "serving"
            and w.slot != worker.slot
            and w.slot in self.slots
            and w.slot not in self._resting
            and w.pid not in self._settling
            and w.replacement is None  # past its own limit: it must not take all the load
        ]
        if not others or self._removing is not None:
            # Nobody under its limit to take the clients: the workers still settling go on
            # serving with this one until their replacements serve.
            if self._settling:
                for pid in self._settling:
                    if pid in self.workers:
                        self._resting.discard(self.workers[pid].slot)
                self._settling.clear()
                self._steer(len(self.slots))
            return
        if self.server._native.slot_fds(worker.slot):
            self._resting.add(worker.slot)
            if not self._steer(len(self.slots)):
                self._resting.discard(worker.slot)
                return
        self._settling[worker.pid] = (time.monotonic(), None)

    def _progress_settling(self):
        now = time.monotonic()
        for pid, (since, empty_since) in list(self._settling.items()):
            worker = self.workers.get(pid)
            if worker is None or worker.state != "serving":
                del self._settling[pid]
                continue
            if _backlog(self.server._native.slot_fds(worker.slot)):
                empty_since = None
            elif empty_since is None:
                empty_since = now
            if (empty_since is not None and now - empty_since >= SLOT_SETTLE) or (
                now - since >= SLOT_DRAIN_LIMIT
            ):
                del self._settling[pid]
                self._retire(worker)
            else:
                self._settling[pid] = (since, empty_since)

    def _replacement_failed(self, replacement, reason):
        old = self.workers.get(replacement.replaces) if replacement.replaces else None
        if old is None or old.state == "retiring":
            # It rested and drains: its slot needs a worker all the same.
            log.error("the replacement of a worker failed: %s; starting another", reason)
            if replacement.slot in self.slots and not self._slot_covered(replacement.slot):
                self._schedule(replacement.slot)
            return
        if self._settling.pop(old.pid, None) is not None or old.slot in self._resting:
            self._resting.discard(old.slot)
            self._steer(len(self.slots))
        old.replacement = None
        old.retry_after = time.monotonic() + RECYCLE_RETRY
        log.error(
            "the replacement of worker %d failed: %s; it goes on serving (next try in %.0f s)",
            old.pid,
            reason,
            RECYCLE_RETRY,
        )

    # --- more or fewer workers ----------------------------------------------------------------

    def _add_slot(self):
        native = self.server._native
        grouped = bool(native.slot_fds(self.slots[0]))
        if grouped and self._steered is None:
            # Else the new socket would get connections before its worker serves (they
            # would wait for it, unanswered).
            self._steer(len(self.slots))
        try:
            slot = native.add_slot()
        except OSError as exc:
            log.error("cannot add a worker: %s", exc)
            return
        if not grouped:
            slot = max(self.slots) + 1  # shared sockets only: the slot is a number
        self.slots.append(slot)
        log.info("SIGTTIN: adding a worker (%d in all)", len(self.slots))
        # During a reload the new slot's worker is one of the new generation.
        generation = self._reload[0] if self._reload is not None else self.generation
        try:
            self._spawn(slot, generation)
        except OSError as exc:
            log.error("cannot start a worker: %s", exc)
            self._schedule(slot)

    def _remove_slot(self):
        if len(self.slots) <= 1:
            log.warning("SIGTTOU: one worker is the fewest; none removed")
            return
        if self._removing is not None:
            log.warning("SIGTTOU: a worker is being removed already")
            return
        slot = self.slots.pop()
        self._resting.discard(slot)
        log.info("SIGTTOU: removing a worker (%d left)", len(self.slots))
        self._pending = [(due, s) for due, s in self._pending if s != slot]
        fds = self.server._native.slot_fds(slot)
        if fds and self._steer(len(self.slots)):
            # Its worker takes what already waits in the backlog, then drains.
            self._removing = (slot, time.monotonic(), None)
            return
        self._finish_removal(slot)

    def _progress_removal(self):
        slot, since, empty_since = self._removing
        now = time.monotonic()
        if _backlog(self.server._native.slot_fds(slot)):
            empty_since = None
        elif empty_since is None:
            empty_since = now
        if (empty_since is not None and now - empty_since >= SLOT_SETTLE) or (
            now - since >= SLOT_DRAIN_LIMIT
        ):
            self._removing = None
            self._finish_removal(slot)
        else:
            self._removing = (slot, since, empty_since)

    def _finish_removal(self, slot):
        for worker in list(self.workers.values()):
            if worker.slot == slot:
                self._abandon(worker)
        self.server._native.drop_slot(slot)

    def _steer(self, count):
        # The filter belongs to the whole group: any one socket of each group sets it.
        fds = self.server._native.slot_fds(self.slots[0])
        if not fds:
            return False
        if _steer(fds, count, self._resting):
            self._steered = count
            return True
        return False

    # --- health ---------------------------------------------------------------------------------

    def _healthy(self):
        """Whether every serving worker's engine sent its heartbeat lately (and one serves)."""
        now = time.monotonic()
        serving = [w for w in self.workers.values() if w.state == "serving"]
        return bool(serving) and all(now - w.last_beat < STALE_AFTER for w in serving)

    def _reap(self):
        """Collect workers that exited; schedule a replacement unless stopping."""
        for pid, worker in list(self.workers.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, None  # reaped elsewhere (a waitpid(-1) in the program)
            if not done:
                continue
            # What it said last may still wait in its socket (why it failed).
            self._read_from(worker)
            del self.workers[pid]
            worker.ctl.close()
            how = "exited" if status is None else _describe(status)
            with self._lock:
                stopping = self._stopping
            native = self.server._native
            if native is not None:
                # Its counts stay in the metrics' sums; a replacement counts as a restart.
                native.retire_worker(worker.metrics_slot, replaced=not stopping)
                native.set_workers_running(len(self.workers))
            if stopping or worker.state == "retiring":
                if worker.served is not None:
                    log.info("worker %d %s after answering %d requests", pid, how, worker.served)
                else:
                    log.debug("worker %d %s", pid, how)
                continue
            if worker.state in ("starting", "failed"):
                reason = worker.description if worker.state == "failed" else None
                reason = reason or f"worker {pid} {how} before it served"
                if worker.replaces is not None:
                    self._replacement_failed(worker, reason)
                    continue
                if self._reload is not None and worker.generation == self._reload[0]:
                    self._failure = reason
                    continue
                if self.generation == 0 and self._loop_thread is None:
                    self._failure = reason  # still starting: start() reports it
                    continue
                log.error("worker %d could not start: %s", pid, reason)
            else:
                log.warning("worker %d %s; starting another", pid, how)
            replacement = self.workers.get(worker.replacement) if worker.replacement else None
            if replacement is not None:
                replacement.replaces = None  # it takes the slot as it is
                continue
            if worker.slot in self.slots and not self._slot_covered(worker.slot):
                self._schedule(worker.slot)

    def _slot_covered(self, slot):
        return any(
            w.slot == slot and w.state in ("starting", "serving") for w in self.workers.values()
        )

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
            if slot not in self.slots or self._slot_covered(slot):
                continue
            threads = threading.active_count()
            if threads > 1 and not self._warned_threads:
                self._warned_threads = True
                log.warning(
                    "forking a worker while %d threads run in the supervising process:"
                    " a lock one of them holds stays held in the worker",
                    threads,
                )
            try:
                self._spawn(slot, self.generation)
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
            if not self.workers:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%d workers still running %.1f s after SIGTERM: killing them",
                    len(self.workers),
                    grace,
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
                    "%s received again: killing %d workers without waiting for running requests",
                    self.cut_short,
                    len(self.workers),
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

    def signal_workers(self, signum):
        """Send ``signum`` to every worker (SIGUSR1: reopen the access log)."""
        self._send_all(signum)

    def _send_all(self, signum):
        for pid in self.workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _remove_socket_file(self):
        paths = self.socket_file
        if isinstance(paths, (str, bytes)):
            paths = [paths]
        for path in paths or ():
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass


def _send(sock, text):
    """Send one message; False if the other end is gone (or, rarely, its queue is full)."""
    try:
        sock.send(text.encode("utf-8", "replace")[:_MESSAGE_SIZE])
        return True
    except OSError:
        return False


def _recv(sock, block=True):
    """One message: its text, ``""`` if none waits (``block=False``), None at the other end's
    close."""
    try:
        data = sock.recv(_MESSAGE_SIZE) if block else sock.recv(_MESSAGE_SIZE, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return ""
    except OSError:
        return None
    if not data:
        return None
    return data.decode("utf-8", "replace")


def _exit_by(seconds):
    """Have the kernel end this process ``seconds`` from now (SIGALRM, default action),
    whatever its threads are doing then."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.1))


def _wait_readable(socks, timeout):
    try:
        readable, _, _ = select.select(socks, [], [], max(timeout, 0))
    except InterruptedError:  # pragma: no cover - PEP 475 retries
        return list(socks)
    return readable


def _received_all(sock):
    """Drain the wake-up socket; return the signal numbers (and ``_OVER``) found in it, in
    order."""
    found = []
    while True:
        try:
            data = sock.recv(512)
        except (BlockingIOError, InterruptedError):
            return found
        if not data:
            return found
        found.extend(signum for signum in data if signum)
