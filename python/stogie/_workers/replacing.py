"""Replacing workers: a reload (a new generation of workers, then the old ones drain), and
recycling (one worker replaced once it reached its limits), with the drain's deadline."""

import os
import signal
import time

from .. import ssl
from .._text import quantity
from . import (
    RECYCLE_RETRY,
    SLOT_DRAIN_LIMIT,
    SLOT_SETTLE,
    START_TIMEOUT,
    STOP_MARGIN,
    SUPERVISOR_STALL,
    log,
)
from .process import _kill, _rss, _send
from .steering import _backlog


class Replacing:
    """The supervisor's reloads and recycling."""

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
        log.info("reloading: starting %s", quantity(len(self.slots), "worker"))
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
                "reloaded: %s serving %s; %s draining",
                quantity(len(new), "worker"),
                new[0].description or "the app",
                quantity(len(old), "old one"),
            )
            if self.notifier is not None:
                self.notifier.ready(f"reloaded: {quantity(len(new), 'worker')} serving")
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
        if worker.state == "retiring" and worker.drain_deadline is not None:
            # It drains already (its slot was removed during a reload, say): killed, it
            # would reset the clients whose requests it is still answering. Its deadline
            # stands.
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
