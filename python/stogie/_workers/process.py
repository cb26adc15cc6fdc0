"""Process helpers of the supervisor and its workers: exit statuses, memory, signals, and the
control channel (a socket pair) between a worker and its supervisor."""

import ctypes
import os
import select
import signal
import socket
import sys

from . import _MESSAGE_SIZE, _PR_SET_PDEATHSIG


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
