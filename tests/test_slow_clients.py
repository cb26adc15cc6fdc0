"""Timeouts and slow clients (issue 3), over real sockets on loopback.

A head must arrive whole within ``timeout``, however it trickles in; a body or a response
that stops moving for ``timeout`` ends the request; idle keep-alive connections close after
``timeout``; and a thousand slow clients holding connections open cost the normal clients
nothing, because they hold no Python thread.
"""

import resource
import selectors
import socket
import statistics
import threading
import time

import pytest

from conftest import ResponseReader, hello_app, wait_closed
from stogie import errors


def test_head_trickle_gets_408_within_timeout(serve):
    """One byte every 0.3 s keeps every recv busy but never finishes the head in time."""
    server = serve(hello_app, timeout=1)
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: " + b"x" * 100
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.setblocking(False)
        start = time.monotonic()
        answer = b""
        for byte in head:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.3)
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                continue
            break
        took = time.monotonic() - start
        sock.setblocking(True)
        rest_took, rest = wait_closed(sock, 3)
    answer += rest
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.9 <= took <= 1.7, took
    assert rest_took < 1


@pytest.mark.parametrize("after_response", [False, True], ids=["fresh", "after a response"])
def test_idle_connection_closes_quietly_after_timeout(serve, after_response):
    """A connection idle for ``timeout``, whether nothing was ever asked on it or it is
    kept alive after a response, is closed with nothing sent (Cheroot closes silently)."""
    server = serve(hello_app, timeout=1)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        if after_response:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            reader = ResponseReader(sock)
            status, _, body, complete = reader.read_response()
            assert status == b"HTTP/1.1 200 OK"
            assert (body, complete, reader.buf) == (b"Hello, World!", True, b"")
        idle_since = time.monotonic()
        # the connection is kept open for a while ...
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(1)
        # ... and closed, silently, once it has been idle for ``timeout``.
        elapsed, data = wait_closed(sock, 3)
        idle = time.monotonic() - idle_since
    assert data == b""
    assert 0.9 <= 0.5 + elapsed, elapsed
    assert idle <= 1.7, idle


def test_keep_alive_head_gets_its_own_timeout(serve):
    """A request that starts late in an idle period still has ``timeout`` to arrive."""
    server = serve(hello_app, timeout=1)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert reader.read_response()[0] == b"HTTP/1.1 200 OK"
        time.sleep(0.7)
        sock.sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.6)
        sock.sendall(b"Host: h\r\n\r\n")
        assert reader.read_response()[0] == b"HTTP/1.1 200 OK"


def test_stalled_small_body_gets_408_and_never_reaches_the_app(serve):
    called = []

    def app(environ, start_response):
        called.append(1)
        return hello_app(environ, start_response)

    server = serve(app, timeout=1)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        took, data = wait_closed(sock, 4)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert 0.9 <= took <= 1.7, took
    assert called == []


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_stalled_streamed_body_fails_the_apps_read(serve, framing):
    """The body stops arriving while the app reads it: after ``timeout`` the read raises,
    the client gets a 408 (nothing was sent yet) and the close."""
    outcome = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except Exception as exc:
            outcome.append((time.monotonic(), exc))
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unexpected"]

    server = serve(app, timeout=1)
    part = b"a" * 100_000
    if framing == "length":
        raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n" + part
    else:
        raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        raw += b"%x\r\n%s\r\n" % (len(part), part) + b"10\r\nabc"
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(raw)
        stalled = time.monotonic()
        took, data = wait_closed(sock, 4)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert 0.9 <= took <= 1.9, took
    assert len(outcome) == 1
    when, exc = outcome[0]
    assert isinstance(exc, errors.RequestBodyError)
    assert isinstance(exc, OSError)
    assert 0.9 <= when - stalled <= 1.9


def test_slow_body_that_keeps_moving_is_not_cut(serve):
    """``timeout`` is between reads, not for the whole body."""
    got = []

    def app(environ, start_response):
        got.append(len(environ["wsgi.input"].read()))
        return hello_app(environ, start_response)

    server = serve(app, timeout=1)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\n\r\n")
        for _ in range(8):  # 2 s in all, 0.25 s apart
            sock.sendall(b"b" * 25_000)
            time.sleep(0.25)
        status = ResponseReader(sock).read_response()[0]
    assert status == b"HTTP/1.1 200 OK"
    assert got == [200_000]


def big_response_app(finished, size=64 * 1024 * 1024, piece=256 * 1024):
    """Streams ``size`` bytes; records when and how its result was closed."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        sent = 0
        try:
            while sent < size:
                yield b"r" * piece
                sent += piece
        finally:
            finished.append((time.monotonic(), sent))

    return app


def test_client_that_stops_reading_is_cut_after_timeout(serve):
    finished = []
    server = serve(big_response_app(finished), timeout=1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(5)
    with sock:
        sock.connect(server.bind_addr)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        start = time.monotonic()
        deadline = start + 6
        while not finished and time.monotonic() < deadline:
            time.sleep(0.05)
    assert finished, "the server never gave up on a client that reads nothing"
    when, sent = finished[0]
    assert sent < 64 * 1024 * 1024
    # The buffers fill within moments; a second later without progress, the cut.
    assert 0.9 <= when - start <= 3, when - start


def test_slow_reader_that_keeps_reading_is_not_cut(serve):
    """``timeout`` is for a write that makes no progress, not for the whole response, nor
    for one large write (each piece here takes the client longer than ``timeout``)."""
    size = 8 * 1024 * 1024
    finished = []
    server = serve(big_response_app(finished, size=size, piece=4 * 1024 * 1024), timeout=1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(5)
    with sock:
        sock.connect(server.bind_addr)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        start = time.monotonic()
        total = 0
        while True:
            time.sleep(0.05)  # about 2.5 MB/s: the response takes seconds
            chunk = sock.recv(128 * 1024)
            if not chunk:
                break
            total += len(chunk)
        took = time.monotonic() - start
    assert took > 2, "the response was too fast to show anything"
    assert total > size  # the body and its chunked framing
    assert finished[0][1] == size


# -- a thousand slow clients --------------------------------------------------------------

SLOW_CLIENTS = 1000
SLOW_TIMEOUT = 4
NORMAL_REQUESTS = 50


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class SlowClients:
    """Opens ``count`` connections and trickles one header byte per second into each, from
    one thread with non-blocking sockets; records when each got its answer and the close."""

    HEAD = b"GET /slow HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"s" * 64

    def __init__(self, addr, count):
        self.addr = addr
        self.count = count
        self.socks = {}
        self.sent = {}
        self.first_byte = {}
        self.answer = {}
        self.closed_at = {}
        self.opened = threading.Event()
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def _open(self, sel):
        for _ in range(self.count):
            sock = socket.create_connection(self.addr, timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            fd = sock.fileno()
            self.socks[fd] = sock
            self.sent[fd] = 1
            self.answer[fd] = b""
            sock.send(self.HEAD[:1])
            self.first_byte[fd] = time.monotonic()
            sel.register(sock, selectors.EVENT_READ)

    def _run(self):
        sel = selectors.DefaultSelector()
        try:
            self._open(sel)
            self.opened.set()
            next_tick = time.monotonic() + 1
            while self.socks and not self.stop.is_set():
                for key, _ in sel.select(timeout=max(0, next_tick - time.monotonic())):
                    self._readable(sel, key.fileobj)
                if time.monotonic() >= next_tick:
                    next_tick += 1
                    for fd, sock in list(self.socks.items()):
                        pos = self.sent[fd]
                        try:
                            sock.send(self.HEAD[pos : pos + 1])
                            self.sent[fd] = pos + 1
                        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                            pass
        except Exception as exc:  # reported by the test
            self.error = exc
            self.opened.set()
        finally:
            for sock in self.socks.values():
                sock.close()
            sel.close()

    def _readable(self, sel, sock):
        fd = sock.fileno()
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = b""
        if data:
            self.answer[fd] += data
            return
        self.closed_at[fd] = time.monotonic()
        sel.unregister(sock)
        sock.close()
        del self.socks[fd]


def timed_request(addr):
    start = time.perf_counter()
    with socket.create_connection(addr, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: normal\r\nConnection: close\r\n\r\n")
        status, _, body, _ = ResponseReader(sock).read_response()
    took = time.perf_counter() - start
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"Hello, World!"
    return took


def latencies(addr, n):
    out = []
    for _ in range(n):
        out.append(timed_request(addr))
        time.sleep(0.01)
    return sorted(out)


@pytest.mark.timeout(30)
def test_thousand_slow_clients_do_not_delay_a_normal_client(serve):
    started = time.monotonic()
    raise_nofile(2 * SLOW_CLIENTS + 200)
    server = serve(
        hello_app, numthreads=4, timeout=SLOW_TIMEOUT, request_queue_size=SLOW_CLIENTS + 24
    )
    addr = server.bind_addr
    latencies(addr, 10)  # warm up
    baseline = latencies(addr, NORMAL_REQUESTS)

    slow = SlowClients(addr, SLOW_CLIENTS)
    slow.start()
    assert slow.opened.wait(10), "opening the slow connections took too long"
    assert slow.error is None, slow.error
    opened = time.monotonic()
    time.sleep(0.5)  # every slow connection has sent a byte or two and is waiting
    loaded = latencies(addr, NORMAL_REQUESTS)
    assert time.monotonic() - opened < SLOW_TIMEOUT, "the normal requests took too long"
    assert len(slow.closed_at) == 0, "slow clients were cut before their timeout"

    slow.thread.join(SLOW_TIMEOUT + 8)
    slow.stop.set()
    assert slow.error is None, slow.error
    print(
        "normal client, ms: baseline median %.2f max %.2f; with %d slow clients median %.2f "
        "p99 %.2f max %.2f; test took %.1f s"
        % (
            statistics.median(baseline) * 1e3,
            baseline[-1] * 1e3,
            SLOW_CLIENTS,
            statistics.median(loaded) * 1e3,
            loaded[int(len(loaded) * 0.99) - 1] * 1e3,
            loaded[-1] * 1e3,
            time.monotonic() - started,
        )
    )
    assert statistics.median(loaded) < 0.010, loaded
    assert loaded[-1] < 0.050, loaded

    assert len(slow.closed_at) == SLOW_CLIENTS, "some slow connections were never closed"
    not_408 = [a for a in slow.answer.values() if not a.startswith(b"HTTP/1.1 408 ")]
    assert not_408 == [], not_408[:3]
    waited = sorted(slow.closed_at[fd] - slow.first_byte[fd] for fd in slow.closed_at)
    # Each one is cut once its head has taken ``timeout``, not before and not much after.
    assert waited[0] >= SLOW_TIMEOUT - 0.1, waited[:5]
    assert waited[-1] <= SLOW_TIMEOUT + 2.5, waited[-5:]
    assert max(slow.sent.values(), default=0) < len(SlowClients.HEAD)
