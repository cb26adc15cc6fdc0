"""HTTP/2 for the tests: a client on the Python ``h2`` package over a plain or TLS socket
(requests in, every frame's event recorded per stream), raw frame bytes for what ``h2``
refuses to send, TLS contexts offering ``h2``, and the ``stogie`` command serving HTTP/2 in
a subprocess with a test app that counts its calls."""

import contextlib
import socket
import ssl
import struct
import textwrap
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2attack import (  # noqa: F401 (the wire's names, for the tests that import them from here)
    ACK,
    CANCEL,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INTERNAL_ERROR,
    NO_ERROR,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
)

from conftest import free_port, wait_until_serving

# The h2 package closes the whole connection when it receives a GOAWAY, but a graceful one
# (RFC 9113 §6.8) lets the streams in flight go on (with a PING to answer): H2Client's
# connections stay open, and note the GOAWAY (H2Client.goaway). Its own copy of the
# package's table: other users of h2 (httpx) keep theirs.
_TRANSITIONS = {
    **h2.connection.H2ConnectionStateMachine._transitions,
    (h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionInputs.RECV_GOAWAY): (
        None,
        h2.connection.ConnectionState.CLIENT_OPEN,
    ),
}


def settings_frame(**values):
    """A SETTINGS frame: ``settings_frame(INITIAL_WINDOW_SIZE=0)``."""
    payload = b"".join(
        struct.pack(">HI", h2.settings.SettingCodes[name], v) for name, v in values.items()
    )
    return frame(SETTINGS, 0, 0, payload)


def read_frames(sock, timeout=5.0, until=None):
    """Reads raw frames (after the server's preface) until ``until(kind, flags, stream,
    payload)`` is true, the connection closes or ``timeout`` passes; returns the list of
    (kind, flags, stream, payload) and whether the server closed."""
    sock.settimeout(0.2)
    buf = b""
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
            continue
        except (ConnectionResetError, BrokenPipeError):
            return frames, True
        if not chunk:
            return frames, True
        buf += chunk
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            f = (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9 : 9 + n])
            buf = buf[9 + n :]
            frames.append(f)
            if until and until(*f):
                return frames, False
    return frames, False


def goaway_code(frames):
    """The error code of the first GOAWAY among raw frames, or None."""
    for kind, _, _, payload in frames:
        if kind == GOAWAY:
            return int.from_bytes(payload[4:8], "big")
    return None


class Response:
    """What came back on one stream."""

    def __init__(self):
        self.status = None
        self.headers = []
        self.informational = []
        self.body = b""
        self.data_frames = 0
        self.ended = False
        self.reset = None
        self.trailers = None
        self.times = {}

    def header(self, name):
        return [v for k, v in self.headers if k == name]

    @property
    def done(self):
        return self.ended or self.reset is not None

    def __repr__(self):
        return (
            f"<Response {self.status} {len(self.body)} bytes ended={self.ended} reset={self.reset}>"
        )


class H2Client:
    """An HTTP/2 client connection on the ``h2`` package. Received data is acknowledged
    (the window given back) unless ``auto_window`` is False; outbound headers are sent as
    given (no validation), so that tests can send what a browser would not."""

    def __init__(self, sock, settings=None, auto_window=True):
        self.sock = sock
        # What :scheme says unless a request says otherwise: the transport's.
        self.scheme = "https" if isinstance(sock, ssl.SSLSocket) else "http"
        self.auto_window = auto_window
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=True,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.state_machine._transitions = _TRANSITIONS
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.streams = {}
        self.goaway = None  # (error code, last stream id) of the latest GOAWAY
        self.closed = False
        self.events = []
        self.flush()

    @classmethod
    def connect(cls, addr, context=None, server_hostname="localhost", timeout=5, **kw):
        raw = socket.create_connection(addr, timeout=timeout)
        # As browsers and curl do: each frame goes when written.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            try:
                raw = context.wrap_socket(raw, server_hostname=server_hostname)
            except BaseException:
                raw.close()
                raise
            assert raw.selected_alpn_protocol() == "h2", raw.selected_alpn_protocol()
        return cls(raw, **kw)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        method="GET",
        path="/",
        headers=(),
        body=None,
        authority="localhost",
        scheme=None,
        end=None,
    ):
        """Opens a stream; sends ``body`` (bytes) through the window if given. ``end``:
        whether the request ends (default: when a body was given or none is to follow)."""
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Response()
        self.streams[sid].times["sent"] = time.monotonic()
        pseudo = [(":method", method), (":scheme", scheme or self.scheme), (":path", path)]
        if authority is not None:
            pseudo.insert(1, (":authority", authority))
        if end is None:
            end = True
        self.conn.send_headers(sid, pseudo + list(headers), end_stream=end and body is None)
        self.flush()
        if body is not None:
            self.send_body(sid, body, end=end)
        return sid

    def send_body(self, sid, data, end=True, timeout=10):
        """Sends ``data`` as flow control allows, reading while the window is closed."""
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            room = min(
                self.conn.local_flow_control_window(sid),
                self.conn.max_outbound_frame_size,
                len(view),
            )
            if room <= 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stream {sid}: no window for {len(view)} bytes")
                self.pump(0.1)
                if self.streams[sid].reset is not None:
                    return
                continue
            self.conn.send_data(sid, bytes(view[:room]))
            view = view[room:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout=0.1):
        """Reads once (up to ``timeout``) and records what came; False when closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return True
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            self.on_event(ev)
        with contextlib.suppress(OSError):
            self.flush()
        return True

    def on_event(self, ev):
        self.events.append(ev)
        now = time.monotonic()
        r = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived):
            r.status = int(dict(ev.headers)[":status"])
            r.headers = [(k, v) for k, v in ev.headers if not k.startswith(":")]
            r.times["head"] = now
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            r.informational.append(dict(ev.headers))
            r.times.setdefault("informational", now)
        elif isinstance(ev, h2.events.DataReceived):
            r.body += ev.data
            r.data_frames += 1
            if self.auto_window and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            r.trailers = ev.headers
        elif isinstance(ev, h2.events.StreamEnded):
            r.ended = True
            r.times["end"] = now
        elif isinstance(ev, h2.events.StreamReset):
            if r is not None:
                r.reset = ev.error_code
                r.times["end"] = now
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (ev.error_code, ev.last_stream_id)

    def wait(self, predicate, timeout=5.0):
        """Reads until ``predicate()`` is true; its value."""
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            if not self.pump(min(0.1, max(deadline - time.monotonic(), 0.001))):
                break
        return predicate()

    def response(self, sid, timeout=5.0):
        """The stream's response once it ended or was reset (fails if neither came)."""
        r = self.streams[sid]
        assert self.wait(lambda: r.done, timeout), f"stream {sid}: no end in {timeout} s: {r}"
        return r

    def get(self, path="/", timeout=5.0, **kw):
        return self.response(self.request("GET", path, **kw), timeout)


def h2_context(pki, protocols=("h2",)):
    """A TLS client context trusting the pki's CA, offering ``protocols`` by ALPN."""
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    ctx.set_alpn_protocols(list(protocols))
    return ctx


def rss_kib(pid):
    """A process's resident memory in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# An app for the servers in a subprocess. /work counts its calls (one byte per call in
# calls.txt: appends are atomic) and the most running at once of one connection and of all
# (peak.txt); it sleeps
# ?ms=N first. /big answers ?n= bytes from a generator (its start and its close are noted
# in started.txt and closed.txt); /wait?for=NAME holds its thread until the file NAME
# exists (noted in waiting.txt); /count, /peak (of one connection) and /peakall say what
# calls.txt and peak.txt hold;
# anything else answers "ok".
COUNTING_APP = """
import os
import threading
import time
from urllib.parse import parse_qs

HERE = os.path.dirname(os.path.abspath(__file__))
LOCK = threading.Lock()
RUNNING = {}  # /work calls running now, by connection (client address and port)
PEAK = [0, 0]  # the most of one connection's at once, the most of all at once


def note(name, text):
    fd = os.open(os.path.join(HERE, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, text)
    finally:
        os.close(fd)


def read(name):
    try:
        with open(os.path.join(HERE, name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def big(n, chunk):
    try:
        sent = 0
        while sent < n:
            piece = min(chunk, n - sent)
            yield b"x" * piece
            sent += piece
    finally:
        note("closed.txt", b"%.3f\\n" % time.time())


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    headers = [("Content-Type", "text/plain")]
    if path == "/work":
        conn = (environ["REMOTE_ADDR"], environ["REMOTE_PORT"])
        with LOCK:
            RUNNING[conn] = RUNNING.get(conn, 0) + 1
            PEAK[0] = max(PEAK[0], RUNNING[conn])
            PEAK[1] = max(PEAK[1], sum(RUNNING.values()))
            note("peak.txt", b"%d %d\\n" % tuple(PEAK))
        note("calls.txt", b".")
        try:
            time.sleep(int(q.get("ms", "0")) / 1000)
        finally:
            with LOCK:
                RUNNING[conn] -= 1
                if not RUNNING[conn]:
                    del RUNNING[conn]
        body = b"worked"
    elif path == "/big":
        note("started.txt", b"%.3f\\n" % time.time())
        start_response("200 OK", headers)
        return big(int(q.get("n", "1000000")), int(q.get("chunk", "65536")))
    elif path == "/count":
        body = str(len(read("calls.txt"))).encode()
    elif path in ("/peak", "/peakall"):
        lines = read("peak.txt").splitlines()
        body = lines[-1].split()[path == "/peakall"] if lines else b"0"
    elif path == "/wait":
        # Holds its thread until the file the query names exists.
        note("waiting.txt", b".")
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(HERE, q["for"])) and time.monotonic() < deadline:
            time.sleep(0.01)
        body = b"waited"
    else:
        body = b"ok"
    headers.append(("Content-Length", str(len(body))))
    start_response("200 OK", headers)
    return [body]
"""


@contextlib.contextmanager
def stogie_h2(tmp_path, *args, app=COUNTING_APP, env=None, wait=True):
    """``stogie`` in a subprocess serving h2c (prior knowledge, from 127.0.0.1) and HTTP/1
    on a free port, with ``app`` as ``h2app:application`` in ``tmp_path``; yields
    (the process, port). Stopped (then killed) on exit."""
    from test_cli import stogie_process

    (tmp_path / "h2app.py").write_text(textwrap.dedent(app))
    port = free_port()
    cmd = ["--bind", f"127.0.0.1:{port}", "--http2-cleartext", *args, "h2app:application"]
    with stogie_process(cmd, tmp_path, env=env) as running:
        if wait:
            wait_until_serving(running, lambda: socket.create_connection(("127.0.0.1", port), 5))
        yield running, port


def count(port, what="count"):
    """What the counting app's /count (or /peak, /peakall) says, over HTTP/1.1."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/{what}")
        return int(conn.getresponse().read())
    finally:
        conn.close()


def dedent(text):
    return textwrap.dedent(text)
