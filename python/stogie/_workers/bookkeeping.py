"""The supervisor's bookkeeping of its workers: forking them, what each says over its control
channel, which exited and which slot needs another, and their health."""

import os
import signal
import socket
import threading
import time

from .._text import quantity
from . import (
    _BLOCKED,
    MAX_RESTART_DELAY,
    MAX_RESTARTS_PER_MINUTE,
    RESTART_DELAY,
    STALE_AFTER,
    log,
)
from .process import _describe, _flush_stdio, _recv


def metrics_capacity(count: int) -> int:
    """Metrics slots for ``count`` workers: each worker process alive at a time has one, and a
    reload runs two generations at once; a few more for workers added by SIGTTIN."""
    return 2 * count + 8


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


class Bookkeeping:
    """The supervisor's record of its worker processes."""

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
                    log.info(
                        "worker %d %s after answering %s",
                        pid,
                        how,
                        quantity(worker.served, "request"),
                    )
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
