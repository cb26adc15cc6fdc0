"""systemd integration, with no library: socket activation and ``sd_notify``.

- :func:`listen_fds` takes the listening sockets systemd (or ``systemd-socket-activate``)
  passed to this process (``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``; descriptors 3
  and up), as ``sd_listen_fds(3)`` does.
- :class:`Notifier` sends ``sd_notify(3)`` messages to ``NOTIFY_SOCKET`` (a UNIX datagram
  socket; ``@name`` is an abstract one): ``READY=1`` (with ``Type=notify``),
  ``RELOADING=1`` with ``MONOTONIC_USEC`` (as ``Type=notify-reload`` requires),
  ``STOPPING=1``, ``STATUS=`` and, when ``WATCHDOG_USEC`` is set, ``WATCHDOG=1`` at half
  that interval, but only while the server says it is healthy: a hung engine stops the
  pings and systemd restarts the service.

Without ``NOTIFY_SOCKET`` a notifier does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("stogie.systemd")

SD_LISTEN_FDS_START = 3

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import MutableMapping


def listen_fds(
    environ: MutableMapping[str, str] | None = None, unset_environment: bool = True
) -> list[tuple[int, str | None]]:
    """The descriptors of the sockets passed to this process by socket activation.

    Empty when there are none, or when they were meant for another process
    (``LISTEN_PID`` is not ours: a parent's variables inherited). The descriptors are made
    close-on-exec, and with ``unset_environment`` the variables are removed, so that no
    program started later takes them for its own.

    Returns:
        A list of ``(fd, name)`` pairs, each name from ``LISTEN_FDNAMES``
        (``FileDescriptorName=``) or None.
    """
    env = os.environ if environ is None else environ
    pid_text = env.get("LISTEN_PID")
    count_text = env.get("LISTEN_FDS")
    names_text = env.get("LISTEN_FDNAMES")
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(name, None)
    if not pid_text or not count_text:
        return []
    try:
        pid = int(pid_text)
        count = int(count_text)
    except ValueError:
        log.warning("ignoring LISTEN_PID=%r LISTEN_FDS=%r: not numbers", pid_text, count_text)
        return []
    if pid != os.getpid() or count <= 0:
        return []
    names = names_text.split(":") if names_text else []
    fds: list[tuple[int, str | None]] = []
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        fds.append((fd, names[index] if index < len(names) and names[index] else None))
    return fds


class Notifier:
    """Sends ``sd_notify`` messages to the service manager, if there is one.

    Args:
        environ: where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are read
            (default ``os.environ``; ``NOTIFY_SOCKET`` is removed from it, so that the
            application and the worker processes do not talk to systemd in our name).
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None) or None
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_usec = 0
        watchdog_pid = env.get("WATCHDOG_PID")
        if address and (watchdog_pid is None or watchdog_pid == str(os.getpid())):
            try:
                self.watchdog_usec = max(int(env.get("WATCHDOG_USEC") or 0), 0)
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r: not a number", env.get("WATCHDOG_USEC"))
        self._next_ping = 0.0
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one message made of ``fields`` (``"READY=1"``, ...); False if it failed."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %r: %s", self.address, exc)
            return False

    @staticmethod
    def _status(text: object) -> str:
        return "STATUS=" + " ".join(str(text).split())

    def ready(self, status: str | None = None) -> None:
        """Start-up or a reload is complete (``READY=1``)."""
        fields = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            fields.append(self._status(status))
        self.send(*fields)

    def reloading(self, status: str = "reloading") -> None:
        """A reload begins (``RELOADING=1`` with the monotonic clock, as
        ``Type=notify-reload`` requires); :meth:`ready` ends it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", self._status(status))

    def stopping(self, status: str = "stopping") -> None:
        """The server stops (``STOPPING=1``)."""
        self.send("STOPPING=1", self._status(status))

    def status(self, text: str) -> None:
        """A line for ``systemctl status`` (``STATUS=``)."""
        self.send(self._status(text))

    def interval(self) -> float:
        """How often :meth:`tick` should be called, in seconds."""
        if not self.watchdog_usec:
            return 3600.0
        return max(self.watchdog_usec / 1e6 / 4, 0.01)

    def tick(self, healthy: bool) -> None:
        """Ping the watchdog (``WATCHDOG=1``) if it is due and ``healthy`` is true."""
        if not self.watchdog_usec or not healthy:
            return
        now = time.monotonic()
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog_usec / 1e6 / 2
            self.send("WATCHDOG=1")
