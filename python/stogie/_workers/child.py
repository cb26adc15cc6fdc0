"""A worker process's own life: from the fork to its exit, serving until its supervisor tells
it to drain, a signal stops it, or the supervisor is gone."""

import logging
import os
import signal
import socket
import time

from .._text import quantity
from . import (
    _CONTROL_SIGNALS,
    _OVER,
    _STOP_SIGNALS,
    BEAT_INTERVAL,
    EXIT_LOAD_FAILED,
    OVER_LIMIT,
    STALE_AFTER,
    STOP_MARGIN,
    log,
)
from .process import _exit_by, _flush_stdio, _ignore, _received_all, _recv, _send, _wait_readable


class WorkerSide:
    """What a forked worker runs (the supervisor's ``_spawn`` calls it in the child)."""

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
        recycle = f"recycle reached its limit of {quantity(limit, 'request')}"
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
