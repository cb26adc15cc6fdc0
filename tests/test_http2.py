"""HTTP/2's behaviour over real sockets: each stream a WSGI request under HTTP/1's environ
rules, who gets HTTP/2 (ALPN over TLS; h2c by prior knowledge only when turned on and only
from trusted peers; never by ``Upgrade: h2c``), bodies both ways through flow control, the
response rules (connection-specific fields, HEAD/204/304, a short Content-Length), and what
HTTP/1 has (access log, TLS environ, PROXY protocol, idle timeout, graceful stop and
reload). Clients: the Python ``h2`` package on plain and TLS sockets (tests/h2kit.py)."""

import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time

import pytest
from h2kit import (
    ACK,
    END_HEADERS,
    FRAME_SIZE_ERROR,
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
    H2Client,
    frame,
    goaway_code,
    h2_context,
    read_frames,
    settings_frame,
    stogie_h2,
)
from test_cli import run_to_exit
from tlskit import Pki, tls_connect

from conftest import raw_request, wait_for
from stogie import wsgi
from stogie.ssl.builtin import BuiltinSSLAdapter

H2C = {"http2_cleartext": True}


class App:
    """The test app, one per test: what it saw and did is kept on it."""

    def __init__(self, tmp_path=None):
        self.log = []
        self.calls = 0
        self.first_read = None
        self.started = threading.Event()
        self.file = None
        if tmp_path is not None:
            self.file = tmp_path / "payload.bin"
            self.file.write_bytes(os.urandom(300_000))

    def __call__(self, environ, start_response):
        self.calls += 1
        path = environ["PATH_INFO"]
        q = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
        self.started.set()
        if path == "/env":
            env = {k: v for k, v in environ.items() if isinstance(v, str)}
            return self.answer(start_response, json.dumps(env).encode())
        if path == "/upload":
            time.sleep(float(q.get("sleep", 0)))
            digest, size = hashlib.sha256(), 0
            while True:
                piece = environ["wsgi.input"].read(8192)
                if self.first_read is None:
                    self.first_read = time.monotonic()
                if not piece:
                    break
                digest.update(piece)
                size += len(piece)
            return self.answer(start_response, b"%d %s" % (size, digest.hexdigest().encode()))
        if path == "/ignore":
            return self.answer(start_response, b"ignored")
        if path == "/big":
            n, chunk = int(q.get("n", 1_000_000)), int(q.get("chunk", 65536))
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return (
                b"%c" % (48 + i % 10) * min(chunk, n - i * chunk) for i in range(-(-n // chunk))
            )
        if path == "/bigone":
            body = os.urandom(int(q.get("n", 1_000_000)))
            start_response("200 OK", [("X-Sha256", hashlib.sha256(body).hexdigest())])
            return [body]
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            start_response(f"{code} Whatever", [("Content-Length", "8"), ("X-Status", str(code))])
            return Tracked([b"body", b"more"], self.log)
        if path == "/short":
            start_response("200 OK", [("Content-Length", "100")])
            return [b"only this"]
        if path == "/hop":
            start_response(
                "200 OK",
                [
                    ("Content-Type", "text/plain"),
                    ("Connection", "close, X-Hop"),
                    ("X-Hop", "1"),
                    ("Keep-Alive", "timeout=5"),
                    ("Transfer-Encoding", "chunked"),
                    ("Upgrade", "h2c"),
                    ("Proxy-Connection", "keep-alive"),
                    ("TE", "trailers"),
                    ("X-Kept", "yes"),
                ],
            )
            return [b"hop"]
        if path == "/file":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return environ["wsgi.file_wrapper"](open(self.file, "rb"), 8192)
        if path == "/slow":
            time.sleep(float(q.get("s", 1)))
            return self.answer(start_response, b"slow and complete")
        return self.answer(start_response, b"ok")

    @staticmethod
    def answer(start_response, body):
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]


class Tracked:
    """A response iterable that notes its iteration and its close()."""

    def __init__(self, parts, log):
        self.parts, self.log = parts, log

    def __iter__(self):
        for p in self.parts:
            self.log.append("yield")
            yield p
        self.log.append("iterated")

    def close(self):
        self.log.append("closed")


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


@pytest.fixture
def h2c(serve, tmp_path):
    """``h2c(**attrs)``: a server in this process serving h2c to 127.0.0.1; (server, app)."""

    def start(app=None, **attrs):
        app = app or App(tmp_path)
        return serve(app, attrs={**H2C, **attrs}), app

    return start


@pytest.fixture
def tls(serve, pki, tmp_path):
    """``tls(**attrs)``: a server in this process serving HTTPS (h2 and HTTP/1.1 by ALPN)."""

    def start(app=None, **attrs):
        app = app or App(tmp_path)
        adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
        return serve(app, attrs={"ssl_adapter": adapter, **attrs}), app

    return start


def env_of(client, **kw):
    r = client.get("/env", **kw)
    assert r.status == 200, r
    return json.loads(r.body)


# --- each stream is a WSGI request -----------------------------------------------------------


def test_each_stream_is_a_request_with_http1s_environ_rules(h2c):
    srv, app = h2c()
    with H2Client.connect(srv.bind_addr) as c:
        sids = [
            c.request(
                "GET",
                f"/env?n={i}",
                authority="example.com:8443",
                headers=[
                    ("cookie", "a=1"),
                    ("cookie", "b=2"),
                    ("x_forwarded_for", "6.6.6.6"),
                    ("x-custom", f"v{i}"),
                ],
            )
            for i in range(3)
        ]
        envs = [json.loads(c.response(s).body) for s in sids]
    for i, env in enumerate(envs):
        assert env["SERVER_PROTOCOL"] == "HTTP/2.0"
        # Cheroot-style code that reads the protocol's digits still works.
        proto = env["SERVER_PROTOCOL"]
        assert (int(proto[5]), int(proto[7])) == (2, 0)
        assert env["REQUEST_METHOD"] == "GET"
        assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/env", f"n={i}")
        assert env["HTTP_HOST"] == "example.com:8443"
        assert env["HTTP_COOKIE"] == "a=1; b=2"
        assert env["HTTP_X_CUSTOM"] == f"v{i}"
        # A name with "_" is dropped, never passed on as its "-" twin.
        assert "HTTP_X_FORWARDED_FOR" not in env
        assert env["wsgi.url_scheme"] == "http"
        assert "HTTPS" not in env
        assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert app.calls == 3


def test_a_host_that_differs_from_authority_is_a_stream_error(h2c):
    srv, app = h2c()
    with H2Client.connect(srv.bind_addr) as c:
        r = c.get("/env", authority="example.com", headers=[("host", "evil.example")])
        assert r.reset == PROTOCOL_ERROR and r.status is None, r
        # Only the stream: the connection goes on.
        same = env_of(c, authority="example.com", headers=[("host", "example.com")])
        assert same["HTTP_HOST"] == "example.com"
    assert app.calls == 1


@pytest.mark.parametrize("value", [" leading", "trailing\t", "trailing "])
def test_a_value_with_outer_whitespace_is_a_stream_error(h2c, value):
    # RFC 9113 §8.2.1: a malformed request, refused on its stream.
    srv, app = h2c()
    with H2Client.connect(srv.bind_addr) as c:
        r = c.get("/env", headers=[("x-a", value)])
        assert r.reset == PROTOCOL_ERROR and r.status is None, r
        assert env_of(c)["SERVER_PROTOCOL"] == "HTTP/2.0"
    assert app.calls == 1


@pytest.mark.parametrize("char", ["\x00", "\x01", "\r", "\n", "\x7f"])
def test_a_control_character_in_a_value_never_reaches_the_app(h2c, char):
    srv, app = h2c()
    with H2Client.connect(srv.bind_addr) as c:
        sid = c.request("GET", "/env", headers=[("x-a", f"a{char}b")])
        c.wait(lambda: c.streams[sid].done or c.goaway or c.closed)
        r = c.streams[sid]
        # The h2 crate refuses the whole connection (GOAWAY PROTOCOL_ERROR) for a value
        # that is no valid field value; what is a field value but not HTTP/1's gets a
        # stream error or a 400 as in HTTP/1.
        if c.goaway is not None:
            assert c.goaway[0] == PROTOCOL_ERROR, c.goaway
        elif r.reset is not None:
            assert r.reset == PROTOCOL_ERROR
        else:
            assert r.status == 400, r
    assert app.calls == 0


def test_too_many_fields_and_too_large_a_head_get_431(h2c):
    srv, app = h2c(max_header_count=50)
    with H2Client.connect(srv.bind_addr) as c:
        r = c.get("/env", headers=[(f"x-{i}", "v") for i in range(60)])
        assert r.status == 431, r
        # Larger than http2_max_header_list_size (64 KiB): the h2 crate's own 431.
        r = c.get("/env", headers=[("x-big", "v" * 70_000)])
        assert r.status == 431, r
        r = c.get("/env", headers=[(f"x-{i}", "v") for i in range(40)])
        assert r.status == 200, r
    assert app.calls == 1


def test_a_smaller_header_list_limit_is_told_and_enforced(h2c):
    srv, app = h2c(http2_max_header_list_size=4096)
    with H2Client.connect(srv.bind_addr) as c:
        c.wait(lambda: c.conn.remote_settings.max_header_list_size == 4096)
        r = c.get("/env", headers=[("x-big", "v" * 5000)])
        assert r.status == 431, r
        assert c.get("/env").status == 200
    assert app.calls == 1


def test_scheme_from_the_transport_and_from_scheme_only_for_a_trusted_peer(h2c, tls, pki):
    srv, _ = h2c()
    with H2Client.connect(srv.bind_addr) as c:
        # A trusted proxy speaking h2c says in :scheme what its client used (as it would
        # in X-Forwarded-Proto: HTTPS stays the transport's, as with HTTP/1).
        env = env_of(c, scheme="https")
        assert env["wsgi.url_scheme"] == "https" and "HTTPS" not in env
        env = env_of(c, scheme="http")
        assert env["wsgi.url_scheme"] == "http" and "HTTPS" not in env
    # Over TLS from a peer that is no trusted proxy, :scheme says nothing.
    srv, _ = tls(forwarded_allow_ips="10.0.0.1")
    with H2Client.connect(srv.bind_addr, h2_context(pki)) as c:
        env = env_of(c, scheme="http", headers=[("x-forwarded-proto", "http")])
        assert (env["wsgi.url_scheme"], env["HTTPS"]) == ("https", "on")
        env = env_of(c, scheme="https")
        assert (env["wsgi.url_scheme"], env["HTTPS"]) == ("https", "on")
    # From a trusted one (127.0.0.1 by default) it is believed, as its X-Forwarded-Proto.
    srv, _ = tls()
    with H2Client.connect(srv.bind_addr, h2_context(pki)) as c:
        env = env_of(c, scheme="http")
        assert (env["wsgi.url_scheme"], env["HTTPS"]) == ("http", "on")


def test_forwarded_headers_only_from_trusted_peers(h2c, tls, pki):
    fwd = [("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")]
    srv, _ = h2c()
    with H2Client.connect(srv.bind_addr) as c:
        env = env_of(c, headers=fwd)
        assert env["REMOTE_ADDR"] == "203.0.113.9"
        assert env["wsgi.url_scheme"] == "https"
    srv, _ = tls(forwarded_allow_ips="10.0.0.1")
    with H2Client.connect(srv.bind_addr, h2_context(pki)) as c:
        env = env_of(c, headers=fwd)
        assert env["REMOTE_ADDR"] == "127.0.0.1"


@pytest.mark.parametrize(
    "bad,code",
    [
        (frame(PING, 0, 0, b"123456"), FRAME_SIZE_ERROR),
        (frame(SETTINGS, 0, 0, b"12345"), FRAME_SIZE_ERROR),
        (frame(SETTINGS, ACK, 0, b"123456"), FRAME_SIZE_ERROR),
        (frame(WINDOW_UPDATE, 0, 0, b"123"), FRAME_SIZE_ERROR),
        (frame(RST_STREAM, 0, 1, b"12345"), FRAME_SIZE_ERROR),
        (frame(PRIORITY, 0, 1, b"1234"), FRAME_SIZE_ERROR),
        (frame(PUSH_PROMISE, END_HEADERS, 1, b"\0\0\0\2\x88"), PROTOCOL_ERROR),
    ],
    ids=["ping", "settings", "settings-ack", "window-update", "rst", "priority", "push"],
)
def test_a_frame_the_protocol_forbids_ends_the_connection_with_its_error(h2c, bad, code):
    # RFC 9113's codes (§4.2, §8.4): the h2 crate would say PROTOCOL_ERROR for a frame of
    # the wrong size, and wait for the rest of a client's PUSH_PROMISE.
    srv, app = h2c()
    with socket.create_connection(srv.bind_addr, timeout=5) as sock:
        sock.sendall(PREFACE + settings_frame())
        read_frames(sock, 2, until=lambda kind, flags, *_: kind == SETTINGS and not flags)
        sock.sendall(bad + frame(PING, 0, 0, b"after it"))
        frames, closed = read_frames(sock, 5)
    assert goaway_code(frames) == code, frames
    assert closed
    # Nothing after the frame was taken (no PING answered).
    assert not [f for f in frames if f[0] == PING and f[3] == b"after it"], frames


# --- who gets HTTP/2 -------------------------------------------------------------------------


def h2_preface_answer(addr):
    """What the server answers to a connection that opens with the HTTP/2 preface."""
    return raw_request(addr, PREFACE + settings_frame(), timeout=3, shut_write=True)


def is_h2(answer):
    # An HTTP/2 server's preface is a SETTINGS frame.
    return len(answer) >= 9 and answer[3] == 0x4 and answer[5:9] == b"\0\0\0\0"


def test_h2c_is_off_by_default(serve):
    srv = serve(App())
    answer = h2_preface_answer(srv.bind_addr)
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    assert http_get_protocol(srv.bind_addr) == "HTTP/1.1"


def test_h2c_only_from_trusted_peers(h2c):
    srv, app = h2c()
    assert is_h2(h2_preface_answer(srv.bind_addr))
    srv, app = h2c(forwarded_allow_ips="10.0.0.1")
    answer = h2_preface_answer(srv.bind_addr)
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    # And HTTP/1 is served to them as ever.
    assert http_get_protocol(srv.bind_addr) == "HTTP/1.1"


def test_h2c_from_a_unix_socket_client(serve, tmp_path):
    path = str(tmp_path / "h2.sock")
    serve(App(), bind_addr=path, attrs={**H2C, "forwarded_allow_ips": "10.0.0.1"})
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    with H2Client(sock) as c:
        assert env_of(c)["SERVER_PROTOCOL"] == "HTTP/2.0"


def http_get_protocol(addr, headers=None):
    conn = http.client.HTTPConnection(*addr, timeout=5)
    try:
        conn.request("GET", "/env", headers=headers or {})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.version == 11
        return json.loads(resp.read())["SERVER_PROTOCOL"]
    finally:
        conn.close()


def test_upgrade_h2c_is_not_honoured(h2c):
    srv, app = h2c()
    request = (
        b"GET /env HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    answer = raw_request(srv.bind_addr, request, timeout=3, shut_write=True)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
    assert b"101" not in answer.split(b"\r\n", 1)[0]
    assert b'"SERVER_PROTOCOL": "HTTP/1.1"' in answer
    assert app.calls == 1


def alpn_of(addr, pki, protocols):
    """The protocol a TLS client offering ``protocols`` gets (None: none chosen), or the
    SSLError its handshake fails with."""
    ctx = h2_context(pki, protocols)
    try:
        with tls_connect(addr, ctx) as s:
            return s.selected_alpn_protocol()
    except ssl.SSLError as e:
        return e


def test_alpn_offers_h2_then_http1(tls, pki):
    srv, _ = tls()
    assert alpn_of(srv.bind_addr, pki, ["h2", "http/1.1"]) == "h2"
    assert alpn_of(srv.bind_addr, pki, ["http/1.1", "h2"]) == "h2"
    # A client that does not offer h2 gets HTTP/1.1 exactly as before.
    assert alpn_of(srv.bind_addr, pki, ["http/1.1"]) == "http/1.1"
    ctx = h2_context(pki, ["http/1.1"])
    conn = http.client.HTTPSConnection(*srv.bind_addr, context=ctx, timeout=5)
    conn.request("GET", "/env")
    resp = conn.getresponse()
    assert (resp.status, resp.version) == (200, 11)
    assert json.loads(resp.read())["SERVER_PROTOCOL"] == "HTTP/1.1"
    conn.close()
    # No ALPN at all: HTTP/1.1.
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    with tls_connect(srv.bind_addr, ctx) as s:
        assert s.selected_alpn_protocol() is None
    with H2Client.connect(srv.bind_addr, h2_context(pki)) as c:
        assert env_of(c)["SERVER_PROTOCOL"] == "HTTP/2.0"


def test_http_protocols_chooses_what_alpn_offers(tls, pki):
    srv, _ = tls(http_protocols="h1")
    assert alpn_of(srv.bind_addr, pki, ["h2", "http/1.1"]) == "http/1.1"
    assert isinstance(alpn_of(srv.bind_addr, pki, ["h2"]), ssl.SSLError)
    srv, _ = tls(http_protocols="h1,h2")
    assert alpn_of(srv.bind_addr, pki, ["h2", "http/1.1"]) == "http/1.1"
    assert alpn_of(srv.bind_addr, pki, ["h2"]) == "h2"
    srv, _ = tls(http_protocols=["h2"])
    assert alpn_of(srv.bind_addr, pki, ["h2", "http/1.1"]) == "h2"
    assert isinstance(alpn_of(srv.bind_addr, pki, ["http/1.1"]), ssl.SSLError)


def test_http_protocols_is_live(tls, pki):
    srv, _ = tls()
    assert alpn_of(srv.bind_addr, pki, ["h2", "http/1.1"]) == "h2"
    srv.http_protocols = "h1"
    assert alpn_of(srv.bind_addr, pki, ["h2", "http/1.1"]) == "http/1.1"


def test_h2_alone_without_tls_or_cleartext_is_a_start_up_error(tmp_path, h2c):
    srv = wsgi.Server(("127.0.0.1", 0), App())
    srv.http_protocols = "h2"
    with pytest.raises(ValueError, match="'h2' alone serves nobody without TLS"):
        srv.prepare()
    code, _, err = run_to_exit(["--bind", "127.0.0.1:0", "--http-protocols", "h2"], tmp_path)
    assert code != 0
    assert "'h2' alone serves nobody without TLS" in err, err
    assert "Traceback" not in err
    # With h2c on it serves, HTTP/2 only: HTTP/1 is told so.
    srv, _ = h2c(http_protocols="h2")
    assert is_h2(h2_preface_answer(srv.bind_addr))
    answer = raw_request(srv.bind_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
    assert answer.startswith(b"HTTP/1.1 505 "), answer[:80]


# --- request bodies --------------------------------------------------------------------------


def test_a_large_upload_streams_to_the_app_through_a_small_window(h2c):
    srv, app = h2c(http2_initial_window_size=16384)
    body = os.urandom(3_000_000)
    with H2Client.connect(srv.bind_addr) as c:
        assert c.wait(lambda: c.conn.remote_settings.initial_window_size == 16384)
        for declared in (False, True):
            headers = [("content-length", str(len(body)))] if declared else []
            r = c.response(c.request("POST", "/upload", headers=headers, body=body), 20)
            assert (r.status, r.ended) == (200, True), r
            assert r.body == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


def test_the_window_the_client_sees_follows_the_apps_reading(h2c):
    window, frame = 16384, 16384
    srv, app = h2c(http2_initial_window_size=window)
    body = os.urandom(1_000_000)
    with H2Client.connect(srv.bind_addr) as c:
        assert c.wait(lambda: c.conn.remote_settings.initial_window_size == window)
        sid = c.request("POST", "/upload?sleep=1.2", end=False)
        assert app.started.wait(5)
        sent, deadline = 0, time.monotonic() + 0.8
        while time.monotonic() < deadline:
            room = min(c.conn.local_flow_control_window(sid), frame, len(body) - sent)
            if room > 0:
                c.conn.send_data(sid, body[sent : sent + room])
                c.flush()
                sent += room
            else:
                c.pump(0.05)
        assert app.first_read is None, "the app was to sleep"
        # Blocked by flow control: the stream's window, and the few pieces the engine
        # holds for the app (its body channel), and no more.
        assert c.conn.local_flow_control_window(sid) == 0
        assert window <= sent <= window + 4 * frame, sent
        c.send_body(sid, body[sent:], timeout=20)
        r = c.response(sid, 20)
    assert r.body == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


def test_expect_100_continue_is_sent_on_the_apps_first_read(h2c):
    srv, app = h2c()
    body = b"x" * 100_000
    with H2Client.connect(srv.bind_addr) as c:
        headers = [("expect", "100-continue"), ("content-length", str(len(body)))]
        sid = c.request("POST", "/upload?sleep=0.5", headers=headers, end=False)
        r = c.streams[sid]
        assert c.wait(lambda: r.informational, 5), r
        assert r.informational[0][":status"] == "100"
        waited = r.times["informational"] - r.times["sent"]
        assert waited >= 0.45, f"100 Continue after {waited:.2f} s, before the app read"
        c.send_body(sid, body)
        r = c.response(sid)
        assert r.body.startswith(b"100000 ")
        # An app that does not read: no 100, the answer, and the connection goes on.
        sid = c.request("POST", "/ignore", headers=headers, end=False)
        r = c.response(sid)
        assert (r.status, r.body, r.informational) == (200, b"ignored", [])
        assert env_of(c)["SERVER_PROTOCOL"] == "HTTP/2.0"


def test_an_unread_body_does_not_stall_the_connection(h2c):
    # One stream at a time and a connection window of one stream's: the unread body of
    # the first must be given back for the second to be sent at all.
    srv, app = h2c(http2_max_concurrent_streams=1, http2_initial_window_size=65535)
    with H2Client.connect(srv.bind_addr) as c:
        c.wait(lambda: c.conn.remote_settings.max_concurrent_streams == 1)
        for _ in range(3):
            sid = c.request("POST", "/ignore", end=False)
            c.send_body(sid, b"u" * 65535, end=False, timeout=5)
            r = c.response(sid)
            assert (r.status, r.body) == (200, b"ignored")
            # The answer is complete while the client still sends: the stream is reset
            # with NO_ERROR (RFC 9113 §8.1), so that it may stop.
            assert c.wait(lambda r=r: r.reset is not None), r
            assert r.reset == NO_ERROR
            body = os.urandom(200_000)
            r = c.response(c.request("POST", "/upload", body=body), 10)
            assert r.body == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


# --- responses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/big?n=3000000&chunk=65536", "/big?n=3000000&chunk=1000", "/bigone?n=3000000"]
)
def test_a_large_response_streams_through_a_small_client_window(h2c, path):
    srv, _ = h2c()
    with H2Client.connect(srv.bind_addr, settings={4: 1000}) as c:  # INITIAL_WINDOW_SIZE
        r = c.get(path, timeout=30)
    assert (r.status, r.ended, len(r.body)) == (200, True, 3_000_000), r
    if path.startswith("/bigone"):
        assert hashlib.sha256(r.body).hexdigest() == r.header("x-sha256")[0]
    else:
        assert r.body[:1] == b"0" and r.data_frames > 3000


def test_connection_specific_fields_the_app_sets_are_dropped(h2c):
    srv, _ = h2c()
    with H2Client.connect(srv.bind_addr) as c:
        # The h2 package would refuse a response that carried any (a ProtocolError).
        r = c.get("/hop")
    names = {k for k, _ in r.headers}
    assert (r.status, r.body) == (200, b"hop")
    assert r.header("x-kept") == ["yes"]
    for gone in ("connection", "x-hop", "keep-alive", "transfer-encoding", "upgrade"):
        assert gone not in names, r.headers
    assert "proxy-connection" not in names and "te" not in names


@pytest.mark.parametrize(
    "method,path", [("HEAD", "/status/200"), ("GET", "/status/204"), ("GET", "/status/304")]
)
def test_no_data_for_head_204_and_304_but_the_iterable_is_iterated_and_closed(h2c, method, path):
    srv, app = h2c()
    with H2Client.connect(srv.bind_addr) as c:
        r = c.response(c.request(method, path))
        assert c.wait(lambda: app.log[-1:] == ["closed"])
    assert (r.status, r.ended, r.reset) == (int(path[-3:]), True, None)
    assert r.data_frames == 0 and r.body == b""
    assert app.log == ["yield", "yield", "iterated", "closed"]


def test_a_body_short_of_its_content_length_ends_in_rst_stream(h2c):
    srv, _ = h2c()
    with H2Client.connect(srv.bind_addr) as c:
        r = c.get("/short")
        assert r.reset == INTERNAL_ERROR and not r.ended, r
        # The head and what the app sent arrive before the reset: the client sees a
        # status and a body cut short, not a bare reset.
        assert r.status == 200 and r.body, r
        # The connection goes on.
        assert c.get("/").body == b"ok"


def test_file_wrapper_over_h2(h2c, tmp_path):
    srv, app = h2c()
    with H2Client.connect(srv.bind_addr, settings={4: 4096}) as c:
        r = c.get("/file", timeout=20)
    assert (r.status, r.ended) == (200, True)
    assert r.body == app.file.read_bytes()


# --- everything HTTP/1 has -------------------------------------------------------------------


def test_the_access_log_says_http_2_0(h2c, tmp_path):
    log = tmp_path / "access.log"
    srv, _ = h2c(access_log=str(log), access_log_format="%(H)s %(m)s %(U)s %(s)s %(B)s")
    with H2Client.connect(srv.bind_addr) as c:
        assert c.get("/").body == b"ok"
        c.get("/env", headers=[("host", "other")])
    assert http_get_protocol(srv.bind_addr) == "HTTP/1.1"
    assert wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3)
    lines = log.read_text().splitlines()
    assert lines[0] == "HTTP/2.0 GET / 200 2", lines
    assert lines[1].startswith("HTTP/2.0 GET /env 400 "), lines
    assert lines[2].startswith("HTTP/1.1 GET /env 200 "), lines


def test_tls_environ_over_h2(tls, pki):
    srv, _ = tls()
    with H2Client.connect(srv.bind_addr, h2_context(pki)) as c:
        env = env_of(c)
        cipher, version = c.sock.cipher()[0], c.sock.version()
    assert env["SERVER_PROTOCOL"] == "HTTP/2.0"
    assert (env["wsgi.url_scheme"], env["HTTPS"]) == ("https", "on")
    assert env["SSL_PROTOCOL"] == version == "TLSv1.3"
    assert env["SSL_CIPHER"] == cipher
    assert env["SSL_TLS_SNI"] == "localhost"
    assert env["SSL_SERVER_SAN_DNS_0"] == "localhost"
    assert len(env["SSL_SESSION_ID"]) == 64


def test_proxy_protocol_in_front_of_tls_with_h2(tls, pki):
    srv, _ = tls(proxy_protocol=True)
    raw = socket.create_connection(srv.bind_addr, timeout=5)
    raw.sendall(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 443\r\n")
    sock = h2_context(pki).wrap_socket(raw, server_hostname="localhost")
    assert sock.selected_alpn_protocol() == "h2"
    with H2Client(sock) as c:
        env = env_of(c)
    assert env["SERVER_PROTOCOL"] == "HTTP/2.0"
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("198.51.100.7", "40000")
    assert env["HTTPS"] == "on"


def test_an_idle_connection_gets_goaway_after_the_timeout(h2c):
    srv, _ = h2c(timeout=1)
    with H2Client.connect(srv.bind_addr) as c:
        # A stream that outlasts the timeout is no idle time.
        r = c.get("/slow?s=1.6", timeout=5)
        assert (r.status, c.goaway) == (200, None)
        done = time.monotonic()
        assert c.wait(lambda: c.goaway is not None, 5)
        took = time.monotonic() - done
        assert c.goaway[0] == NO_ERROR
        assert 0.7 <= took <= 2.5, took
        assert c.wait(lambda: c.closed, 3), "closed after its GOAWAY"


def test_stop_sends_goaway_and_lets_streams_in_flight_finish(h2c):
    srv, app = h2c(shutdown_timeout=5)
    with H2Client.connect(srv.bind_addr) as c:
        sid = c.request("GET", "/slow?s=1")
        assert app.started.wait(5)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        try:
            r = c.response(sid, 5)
            assert (r.status, r.body) == (200, b"slow and complete")
            assert c.goaway is not None and c.goaway[0] == NO_ERROR, c.goaway
            assert c.goaway[1] >= sid
        finally:
            stopper.join(10)


def pid_over_h2(port):
    with H2Client.connect(("127.0.0.1", port)) as c:
        return int(c.get("/").body)


RELOAD_APP = """
import os
import time


def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        open(os.path.join(os.path.dirname(__file__), "started"), "w").close()
        time.sleep(1.5)
    body = b"%d" % os.getpid()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["reload", "stop"])
def test_reload_and_stop_with_workers_let_streams_in_flight_finish(tmp_path, sig):
    args = ["--workers", "2", "--shutdown-timeout", "5"]
    with stogie_h2(tmp_path, *args, app=RELOAD_APP) as (running, port):
        assert wait_for(lambda: "serving h2app" in running.stderr, 10), running.stderr
        with H2Client.connect(("127.0.0.1", port)) as c:
            old = int(c.get("/").body)
            sid = c.request("GET", "/slow")
            assert wait_for(lambda: (tmp_path / "started").exists(), 5)
            running.proc.send_signal(sig)
            r = c.response(sid, 10)
            assert (r.status, int(r.body)) == (200, old)
            assert c.wait(lambda: c.goaway is not None, 5)
            assert c.goaway[0] == NO_ERROR
        if sig == signal.SIGHUP:
            assert wait_for(lambda: pid_over_h2(port) != old, 10)
        else:
            assert running.proc.wait(10) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork")
def test_a_recycled_worker_sends_goaway_and_finishes_its_streams(tmp_path):
    # --max-requests counts streams: the worker that reaches it drains like a reload.
    args = ["--workers", "1", "--max-requests", "3", "--shutdown-timeout", "5"]
    with stogie_h2(tmp_path, *args, app=RELOAD_APP) as (running, port):
        assert wait_for(lambda: "serving h2app" in running.stderr, 10), running.stderr
        with H2Client.connect(("127.0.0.1", port)) as c:
            first = {int(c.get("/").body) for _ in range(2)}
            assert len(first) == 1
            sid = c.request("GET", "/slow")
            r = c.response(sid, 10)
            assert (r.status, {int(r.body)}) == (200, first)
            # A graceful GOAWAY: first for every stream (2^31-1), then, once the client
            # answered its PING, for the last one the server took.
            assert c.wait(lambda: c.goaway == (NO_ERROR, sid), 5), c.goaway
        assert wait_for(lambda: pid_over_h2(port) not in first, 10)
