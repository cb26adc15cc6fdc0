"""Server processes: start, sample (CPU time, RSS of the process tree), kill."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import threading
import time

from harness.base import BENCH, HOST, PAGE, TICK

# --------------------------------------------------------------------------------------------
# Processes: every server runs in its own session; all of them are killed on the way out.

RUNNING: dict = {}  # pid -> Popen
_seen_pids: dict = {}  # root pid -> set of pids seen in its tree


def _threads(pid):
    """The thread ids of a process (none once it is gone)."""
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def tree_pids(root):
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        for tid in _threads(pid):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    return pids


def tree_rss(root):
    """RSS in bytes summed over the process tree under ``root``."""
    total = 0
    pids = tree_pids(root)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    _seen_pids.setdefault(root, set()).update(pids)
    return total


def tree_cpu(root):
    """CPU seconds (user + system) used so far by the processes now in the tree under
    ``root``, all of their threads included."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                # The command name may hold spaces: count fields after its closing paren.
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def tree_switches(root):
    """Context switches (voluntary + involuntary) so far by the threads now in the tree under
    ``root``: a request that makes one thread wake another costs one or two of them."""
    total = 0
    for pid in tree_pids(root):
        for tid in _threads(pid):
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if "ctxt_switches:" in line:
                            total += int(line.split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return total


def children_cpu():
    """CPU seconds used by the children this process has waited for (wrk, here)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_server(proc):
    pid = proc.pid
    pids = set(tree_pids(pid)) | _seen_pids.pop(pid, set())
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(pid, sig)
        except OSError:
            pass
        for p in pids - {pid}:
            if _alive(p):
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait
        while any(_alive(p) for p in pids - {pid}) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(_alive(p) for p in pids):
            break
    RUNNING.pop(pid, None)


def cleanup():
    for proc in list(RUNNING.values()):
        kill_server(proc)


def _on_signal(signum, frame):
    raise KeyboardInterrupt


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(argv, log_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(BENCH) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    log = open(log_path, "wb")
    try:
        proc = subprocess.Popen(
            argv,
            cwd=BENCH,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # A process group of its own (to kill the whole tree), but not a session: Linux
            # puts each session in its own scheduling autogroup, and CPU is then shared
            # between groups, not threads, capping a server at one CPU while wrk has the
            # other, however many threads or processes it runs. In the same autogroup as wrk,
            # every server's threads compete with wrk's on equal terms, as when both are
            # started from one shell (as the figures in issue 4 were).
            process_group=0,
        )
    finally:
        log.close()
    RUNNING[proc.pid] = proc
    return proc


class RssSampler(threading.Thread):
    def __init__(self, root, interval=0.2):
        super().__init__(daemon=True)
        self.root, self.interval, self.peak = root, interval, 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.peak = max(self.peak, tree_rss(self.root))
            self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, tree_rss(self.root))
        return self.peak
