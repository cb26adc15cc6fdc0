"""Worker slots: adding and removing them (SIGTTIN, SIGTTOU), and steering new connections
over the sockets of an SO_REUSEPORT group with a socket filter."""

import ctypes
import os
import socket
import struct
import time

from . import SLOT_DRAIN_LIMIT, SLOT_SETTLE, log

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


class Slots:
    """The supervisor's worker slots: more or fewer of them, and which get new connections."""

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
