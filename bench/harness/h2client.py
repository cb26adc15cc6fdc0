"""A small HTTP/2 client over sockets (the ``h2`` package): the readiness check of the HTTP/2
workloads, and the idle HTTP/2 test (h2load cannot hold connections idle).

Over TLS the connection offers ``h2`` (and ``http/1.1``) by ALPN; in cleartext it opens with
the HTTP/2 preface (h2c by prior knowledge). A server that does not answer in HTTP/2 raises
NoHTTP2, and its row reads "n/a (no HTTP/2 ...)".
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import statistics
import time

from harness.base import HOST, TLS_CERT, WrongResponse
from harness.idle import open_all
from harness.procs import tree_rss
from harness.results import Idle

NO_H2 = "no HTTP/2"


class NoHTTP2(WrongResponse):
    pass


def _tls_context():
    # http/1.1 offered too: a server without h2 then picks it (rustls refuses a handshake
    # with no protocol in common), and is told apart by the protocol it picked.
    ctx = ssl.create_default_context(cafile=str(TLS_CERT))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def _new_connection():
    import h2.config
    import h2.connection

    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    return conn


def _request_headers(w, port):
    scheme = "https" if w.tls else "http"
    return [
        (":method", w.method),
        (":scheme", scheme),
        (":authority", f"{HOST}:{port}"),
        (":path", w.path),
    ]


def _not_h2(first_bytes):
    if first_bytes.startswith(b"HTTP/"):
        answer = " ".join(first_bytes.split(b"\r\n", 1)[0].decode("latin-1").split()[:2])
        return NoHTTP2(f"{NO_H2} (answered {answer})")
    return NoHTTP2(NO_H2)


class _Exchange:
    """Feeds bytes to an H2Connection and collects one stream's response."""

    def __init__(self, conn):
        self.conn = conn
        self.responses: dict = {}  # stream id -> [status, body, ended]
        self.pings = 0
        self.terminated = None

    def feed(self, data):
        import h2.events
        import h2.exceptions

        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            raise NoHTTP2(f"{NO_H2}: {type(e).__name__}") from None
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(":status", "")
                self.responses.setdefault(ev.stream_id, [status, b"", False])[0] = status
            elif isinstance(ev, h2.events.DataReceived):
                entry = self.responses.setdefault(ev.stream_id, ["", b"", False])
                entry[1] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.responses.setdefault(ev.stream_id, ["", b"", False])[2] = True
            elif isinstance(ev, h2.events.StreamReset):
                self.responses[ev.stream_id] = [f"reset ({ev.error_code!r})", b"", True]
            elif isinstance(ev, h2.events.PingAckReceived):
                self.pings += 1
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = f"GOAWAY {ev.error_code!r}"

    def done(self, sid):
        entry = self.responses.get(sid)
        return entry is not None and entry[2]


def _check_one(ex, sid, w):
    status, body, _ = ex.responses[sid]
    if status != "200":
        raise WrongResponse(f"status {status}")
    if not w.expect(body):
        raise WrongResponse(f"wrong body ({len(body)} bytes)")


def check_h2(port, w, timeout=5.0):
    """Two requests, one after the other, on one HTTP/2 connection. OSError means not
    listening yet; NoHTTP2, a server that does not speak HTTP/2 (here); WrongResponse, a
    broken answer."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        if w.tls:
            try:
                sock = _tls_context().wrap_socket(sock, server_hostname=HOST)
            except ssl.SSLError as e:
                if "NO_APPLICATION_PROTOCOL" in str(e).upper().replace(" ", "_"):
                    raise NoHTTP2(f"{NO_H2} (ALPN: none in common)") from None
                raise WrongResponse(f"TLS handshake failed: {e}"[:80]) from None
            if sock.selected_alpn_protocol() != "h2":
                raise NoHTTP2(f"{NO_H2} (ALPN: {sock.selected_alpn_protocol() or 'none'})")
        conn = _new_connection()
        ex = _Exchange(conn)
        sock.sendall(conn.data_to_send())
        first = True
        for _ in range(2):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, _request_headers(w, port), end_stream=True)
            sock.sendall(conn.data_to_send())
            deadline = time.monotonic() + timeout
            while not ex.done(sid):
                if time.monotonic() > deadline:
                    raise WrongResponse("no HTTP/2 response in time")
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, ssl.SSLError) as e:
                    raise NoHTTP2(f"{NO_H2}: {type(e).__name__}") from None
                if not data:
                    raise NoHTTP2(f"{NO_H2}: closed" if first else "closed after one stream")
                if first and not w.tls and not data.startswith(b"\x00"):
                    # A server frame starts with a 24-bit length, its SETTINGS a small one.
                    raise _not_h2(data)
                first = False
                ex.feed(data)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
                if ex.terminated and not ex.done(sid):
                    raise WrongResponse(f"connection ended: {ex.terminated}")
            _check_one(ex, sid, w)
    except TimeoutError:
        raise WrongResponse("no HTTP/2 response in time") from None
    finally:
        sock.close()


# --------------------------------------------------------------------------------------------
# Idle HTTP/2 connections


class _Client:
    """One HTTP/2 connection of the idle test."""

    def __init__(self, w, port):
        self.w, self.port = w, port
        self.reader = self.writer = self.ex = None

    async def open(self):
        ctx = _tls_context() if self.w.tls else None
        self.reader, self.writer = await asyncio.open_connection(
            HOST, self.port, ssl=ctx, server_hostname=HOST if ctx else None
        )
        if ctx:
            alpn = self.writer.get_extra_info("ssl_object").selected_alpn_protocol()
            if alpn != "h2":
                raise NoHTTP2(NO_H2)
        conn = _new_connection()
        self.ex = _Exchange(conn)
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, _request_headers(self.w, self.port), end_stream=True)
        self.writer.write(conn.data_to_send())
        await self._read_until(lambda: self.ex.done(sid))
        _check_one(self.ex, sid, self.w)

    async def _read_until(self, cond):
        while not cond():
            data = await self.reader.read(65536)
            if not data:
                raise NoHTTP2("closed")
            self.ex.feed(data)
            out = self.ex.conn.data_to_send()
            if out:
                self.writer.write(out)
            if self.ex.terminated:
                raise WrongResponse(self.ex.terminated)

    async def alive(self, timeout):
        """A PING answered: the connection is still open and served."""
        try:
            self.ex.conn.ping(b"stogie!!")
            self.writer.write(self.ex.conn.data_to_send())
            pings = self.ex.pings
            await asyncio.wait_for(self._read_until(lambda: self.ex.pings > pings), timeout)
            return True
        except Exception:  # h2's own errors too: a connection it knows to be closed
            return False

    def abort(self):
        if self.writer is not None:
            self.writer.transport.abort()


_FAILURES = (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, WrongResponse)


async def _idle_h2_clients(w, port, n, quiet, root, result):
    sem = asyncio.Semaphore(100)
    clients = []
    failures: dict = {}

    async def one():
        async with sem:
            c = _Client(w, port)
            try:
                await asyncio.wait_for(c.open(), 5)
            except _FAILURES as e:
                name = str(e) if isinstance(e, NoHTTP2) else type(e).__name__
                failures[name] = failures.get(name, 0) + 1
                c.abort()
                return
            except BaseException:  # cancelled at the deadline
                c.abort()
                raise
            clients.append(c)

    result.open_seconds, late = await open_all(one, n, per_second=100)
    if late:
        failures["not done in time"] = late
    result.opened = len(clients)
    result.open_errors = ", ".join(f"{v} {k}" for k, v in failures.items())

    await asyncio.sleep(quiet)
    result.rss_after = tree_rss(root)

    latencies = []
    for _ in range(20):
        t1 = time.perf_counter()
        c = _Client(w, port)
        try:
            await asyncio.wait_for(c.open(), 5)
            latencies.append((time.perf_counter() - t1) * 1e3)
        except _FAILURES:
            result.probe_failed += 1
        finally:
            c.abort()
        await asyncio.sleep(0.05)
    if latencies:
        result.probe_p50 = statistics.median(latencies)
        result.probe_max = max(latencies)

    alive = await asyncio.gather(*(c.alive(5) for c in clients))
    result.still_open = sum(alive)
    for c in clients:
        c.abort()


def idle_h2_test(port, proc, w, n, quiet):
    """n HTTP/2 connections, one request each, then quiet: the RSS they add to the server's
    process tree, and how many still answer a PING afterwards."""
    result = Idle(wanted=n)
    time.sleep(1.0)
    result.rss_before = tree_rss(proc.pid)
    asyncio.run(_idle_h2_clients(w, port, n, quiet, proc.pid, result))
    return result
