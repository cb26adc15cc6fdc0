"""Threads started from Rust never crash the interpreter: not at exit, and not under
faulthandler's thread dumps (which walk the thread states without a lock)."""

import http.client
import subprocess
import sys
import textwrap
import threading
import time

# A request is still in the app (its GIL released in time.sleep) when the main thread ends,
# and comes back for the GIL while the interpreter is being torn down: CPython 3.11-3.13 end
# such a thread with pthread_exit, whose unwinding through the worker's Rust frames aborted
# the process ("Fatal Python error: PyGILState_Release: thread state ... must be current").
# An object whose __del__ sleeps keeps the teardown going long enough to see it every time.
EXIT_SCRIPT = """
import builtins, os, socket, sys, time
from stogie import wsgi

def app(environ, start_response):
    time.sleep(0.6)
    os.write(1, b"app returned\\n")
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]

class SlowTeardown:
    def __init__(self):
        self.sleep, self.write = time.sleep, os.write
    def __del__(self):
        self.write(1, b"finalizing\\n")
        self.sleep(1.0)

server = wsgi.Server(("127.0.0.1", 0), app, numthreads=1)
server.shutdown_timeout = 0.1
server.prepare()
client = socket.create_connection(("127.0.0.1", server.bind_addr[1]))
client.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
time.sleep(0.2)
if sys.argv[1] == "stopped":
    server.stop()  # gives up on the request after 0.1 s
# else: the atexit handler stops it, with the same result
builtins._teardown = SlowTeardown()  # collected late in the interpreter's teardown
"""


def run_script(script, *args, timeout=30):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_exit_with_a_request_in_the_app_after_stop():
    proc = run_script(EXIT_SCRIPT, "stopped")
    assert "Fatal Python error" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    # The exit waited for the request (as Cheroot's stop() joins its workers).
    assert proc.stdout.split() == ["app", "returned", "finalizing"], proc.stdout


def test_exit_with_a_request_in_the_app_of_a_running_server():
    proc = run_script(EXIT_SCRIPT, "running")
    assert "Fatal Python error" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["app", "returned", "finalizing"], proc.stdout


def test_forked_child_exits_while_the_parent_has_a_request_in_the_app():
    # The child has none of the parent's threads: its exit must not wait for them.
    proc = run_script(
        """
        import os, socket, sys, time
        from stogie import wsgi

        def app(environ, start_response):
            time.sleep(1.5)
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]

        server = wsgi.Server(("127.0.0.1", 0), app, numthreads=1)
        server.shutdown_timeout = 0.1
        server.prepare()
        client = socket.create_connection(("127.0.0.1", server.bind_addr[1]))
        client.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        time.sleep(0.2)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal exit: atexit handlers run in the child
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), round(time.monotonic() - started, 1))
        server.stop()
        """
    )
    assert proc.returncode == 0, proc.stderr
    code, took = proc.stdout.split()
    assert code == "0", proc.stderr
    assert float(took) < 1.0, proc.stdout


def test_engine_log_keeps_one_thread_state_per_io_thread(serve):
    # The engine logs through Python from its I/O thread. A thread state made and freed per
    # message (and its frame stack) is what faulthandler's lock-free all-thread dump trips
    # over (measured: a dump every 0.5 ms crashed within a second while each response was
    # logged); one kept per thread is not freed under it. Data in a threading.local lives
    # in the thread state: it survives from one message to the next only if the state does.
    local = threading.local()
    seen = []

    def error_log(msg="", level=20, traceback=False):
        if "short of its Content-Length" in msg:
            local.n = getattr(local, "n", 0) + 1
            seen.append(local.n)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "20")])
        return [b"hi"]  # 18 bytes short: the engine logs it and closes the connection

    server = serve(app, attrs={"error_log": error_log})
    host, port = server.bind_addr
    for _ in range(3):
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", "/")
        resp = conn.getresponse()
        try:
            resp.read()
        except http.client.IncompleteRead:
            pass
        conn.close()
    for _ in range(100):
        if len(seen) == 3:
            break
        time.sleep(0.02)
    assert seen == [1, 2, 3]
