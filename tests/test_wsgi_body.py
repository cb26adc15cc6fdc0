"""wsgi.input end to end: every read method, chunked and large (streamed) bodies,
Expect: 100-continue, and what happens to a body the app does not read."""

import hashlib
import http.client
import logging
import os
import socket
import threading
import time

import pytest

from conftest import ResponseReader, header

BODY = b"first line\nsecond\n\n" + b"x" * 50 + b"\nno newline at the end"


def reading_app(environ, start_response):
    """Reads the body the way PATH_INFO names and echoes what it read, as repr lines."""
    inp = environ["wsgi.input"]
    how = environ["PATH_INFO"]
    pieces = []
    if how == "/read":
        pieces.append(inp.read())
    elif how == "/read-1":
        pieces.append(inp.read(-1))
    elif how == "/read-none":
        pieces.append(inp.read(None))
    elif how.startswith("/readn/"):
        n = int(how.rsplit("/", 1)[1])
        while True:
            piece = inp.read(n)
            assert len(piece) <= n
            if not piece:
                break
            pieces.append(piece)
    elif how.startswith("/readlinen/"):
        n = int(how.rsplit("/", 1)[1])
        while True:
            piece = inp.readline(n)
            assert len(piece) <= n
            if not piece:
                break
            pieces.append(piece)
    elif how == "/readline":
        while True:
            line = inp.readline()
            if not line:
                break
            pieces.append(line)
    elif how == "/readlines":
        pieces.extend(inp.readlines())
    elif how == "/iter":
        pieces.extend(inp)
    else:
        raise AssertionError(how)
    # After the end: every read returns b"" at once.
    assert inp.read() == b""
    assert inp.read(10) == b""
    assert inp.readline() == b""
    assert inp.readlines() == []
    body = b"|".join(repr(p).encode() for p in pieces)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def expected(pieces):
    return b"|".join(repr(p).encode() for p in pieces)


def lines(data):
    return data.splitlines(keepends=True)


def chunked(data, size):
    out = b""
    for i in range(0, len(data), size):
        part = data[i : i + size]
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


def post(addr, path, body, headers=None, chunk_size=None):
    conn = http.client.HTTPConnection(*addr, timeout=5)
    try:
        if chunk_size:
            hdrs = {"Transfer-Encoding": "chunked", **(headers or {})}
            conn.putrequest("POST", path)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders()
            conn.send(chunked(body, chunk_size))
        else:
            conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


CASES = [
    ("/read", lambda b: [b]),
    ("/read-1", lambda b: [b]),
    ("/read-none", lambda b: [b]),
    ("/readn/7", lambda b: [b[i : i + 7] for i in range(0, len(b), 7)]),
    ("/readn/100000", lambda b: [b]),
    ("/readline", lines),
    ("/readlinen/4", lambda b: [ln[i : i + 4] for ln in lines(b) for i in range(0, len(ln), 4)]),
    ("/readlines", lines),
    ("/iter", lines),
]


@pytest.mark.parametrize(("path", "split"), CASES)
def test_read_methods_content_length(serve, path, split):
    server = serve(reading_app)
    status, body = post(server.bind_addr, path, BODY)
    assert status == 200
    assert body == expected(split(BODY))


@pytest.mark.parametrize(("path", "split"), CASES)
def test_read_methods_chunked(serve, path, split):
    server = serve(reading_app)
    status, body = post(server.bind_addr, path, BODY, chunk_size=5)
    assert status == 200
    assert body == expected(split(BODY))


def test_readlines_hint(serve):
    def app(environ, start_response):
        got = environ["wsgi.input"].readlines(12)
        rest = environ["wsgi.input"].read()
        body = repr((got, rest)).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = serve(app)
    status, body = post(server.bind_addr, "/", BODY)
    assert status == 200
    assert body == repr(([b"first line\n", b"second\n"], BODY[18:])).encode()


def test_empty_body_reads_return_at_once(serve):
    timings = []

    def app(environ, start_response):
        started = time.monotonic()
        data = environ["wsgi.input"].read()
        data += environ["wsgi.input"].read(100)
        data += environ["wsgi.input"].readline()
        timings.append(time.monotonic() - started)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr(data).encode()]

    server = serve(app)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body, _ = ResponseReader(sock).read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"b''"
    assert timings[0] < 0.5


@pytest.mark.parametrize("size", [10, 200_000])
def test_reads_past_the_end_do_not_wait_for_the_client(serve, size):
    """The client keeps the connection open after its body: read(n) must not wait for more."""
    timings = []
    data = os.urandom(size)

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        started = time.monotonic()
        got = inp.read(size + 1000)
        while len(got) < size:
            piece = inp.read(size + 1000)
            if not piece:
                break
            got += piece
        tail = inp.read(1)
        timings.append(time.monotonic() - started)
        body = hashlib.sha256(got).hexdigest().encode() + repr(tail).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = serve(app)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + data)
        status, _, body, complete = ResponseReader(sock).read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert complete
    assert body == hashlib.sha256(data).hexdigest().encode() + b"b''"
    assert timings[0] < 2.0


def hashing_app(environ, start_response):
    """Reads the body in odd-sized pieces and answers its length and SHA-256."""
    inp = environ["wsgi.input"]
    h = hashlib.sha256()
    n = 0
    while True:
        piece = inp.read(7777)
        if not piece:
            break
        n += len(piece)
        h.update(piece)
    body = b"%d %s %s" % (n, h.hexdigest().encode(), environ.get("CONTENT_LENGTH", "-").encode())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@pytest.mark.parametrize("chunk_size", [None, 65536, 1000])
def test_large_body_streams(serve, chunk_size):
    server = serve(hashing_app)
    data = os.urandom(3 * 1024 * 1024 + 17)
    status, body = post(server.bind_addr, "/", data, chunk_size=chunk_size)
    assert status == 200
    cl = b"-" if chunk_size else str(len(data)).encode()
    assert body == b"%d %s %s" % (len(data), hashlib.sha256(data).hexdigest().encode(), cl)


def test_large_body_readline_and_iteration(serve):
    data = b"".join(b"line %06d %s\n" % (i, b"y" * (i % 300)) for i in range(20000))
    assert len(data) > 1024 * 1024

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        first = inp.readline()
        partial = inp.readline(5)
        rest = list(inp)
        body = repr((first, partial, len(rest), rest[0], rest[-1], sum(map(len, rest)))).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = serve(app)
    all_lines = lines(data)
    want = (
        all_lines[0],
        all_lines[1][:5],
        len(all_lines) - 1,
        all_lines[1][5:],
        all_lines[-1],
        len(data) - len(all_lines[0]) - 5,
    )
    status, body = post(server.bind_addr, "/", data)
    assert status == 200
    assert body == repr(want).encode()


def test_slow_streamed_body_is_delivered_as_it_arrives(serve):
    """A large body arriving slowly: the app gets the first bytes before the rest is sent."""
    first_seen = threading.Event()

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        first = inp.read(1000)
        first_seen.set()
        rest = inp.read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % (len(first) + len(rest))]

    server = serve(app)
    size = 512 * 1024
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        sock.sendall(b"a" * (256 * 1024))
        assert first_seen.wait(3), "the app never got the first part of the body"
        sock.sendall(b"b" * (256 * 1024))
        status, _, body, _ = ResponseReader(sock).read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"%d" % size


@pytest.mark.parametrize("size", [100, 200 * 1024])
@pytest.mark.parametrize("chunk", [False, True])
def test_unread_body_is_drained_for_keep_alive(serve, size, chunk):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    data = b"z" * size
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        reader = ResponseReader(sock)
        if chunk:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunked(data, 8192)
            )
        else:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + data)
        status, headers, body, _ = reader.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == b"ok"
        assert header(headers, "Connection") == []
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body, _ = reader.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == b"ok"


def test_unread_body_past_the_drain_limit_closes(serve):
    """A huge unread body is not drained: the client gets the whole answer, then EOF."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    size = 4 * 1024 * 1024
    with socket.create_connection(server.bind_addr, timeout=5) as sock:

        def send():
            try:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
                sock.sendall(b"z" * size)
            except OSError:
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        reader = ResponseReader(sock)
        status, _, body, complete = reader.read_response()
        assert (status, body, complete) == (b"HTTP/1.1 200 OK", b"ok", True)
        assert reader.closed(timeout=4)
        try:
            sock.shutdown(socket.SHUT_RDWR)  # unblocks the sender if it still waits
        except OSError:
            pass  # already reset by the server
        sender.join(5)


def test_partly_read_body_is_drained_for_keep_alive(serve):
    def app(environ, start_response):
        got = environ["wsgi.input"].read(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [got]

    server = serve(app)
    data = bytes(range(256)) * 1024
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
        assert reader.read_response()[2] == data[:10]
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nhello world!")
        assert reader.read_response()[2] == b"hello worl"


class ExpectApp:
    """Waits for ``go`` before reading the body, so the test controls when it reads."""

    def __init__(self, read=True):
        self.read = read
        self.go = threading.Event()
        self.entered = threading.Event()

    def __call__(self, environ, start_response):
        self.entered.set()
        assert self.go.wait(5)
        data = environ["wsgi.input"].read() if self.read else b"not read"
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))]
        )
        return [data]


def nothing_arrives(sock, seconds=0.3):
    sock.settimeout(seconds)
    try:
        return sock.recv(100) == b"" and False
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)


@pytest.mark.parametrize("size", [5, 200 * 1024])
def test_expect_100_continue_sent_when_the_app_reads(serve, size):
    app = ExpectApp()
    server = serve(app)
    data = os.urandom(size)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
            % size
        )
        assert app.entered.wait(5)
        assert nothing_arrives(sock), "100 Continue went out before the app read"
        app.go.set()
        status, headers, _, _ = reader.read_response()
        assert status == b"HTTP/1.1 100 Continue"
        assert headers == []
        sock.sendall(data)
        status, _, body, complete = reader.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert complete and body == data
        # The connection stays usable.
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        status, _, body, _ = reader.read_response()
        assert (status, body) == (b"HTTP/1.1 200 OK", b"hi")


def test_expect_100_continue_chunked(serve):
    app = ExpectApp()
    app.go.set()
    server = serve(app)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        assert reader.read_response()[0] == b"HTTP/1.1 100 Continue"
        sock.sendall(chunked(b"chunked body", 4))
        status, _, body, _ = reader.read_response()
        assert (status, body) == (b"HTTP/1.1 200 OK", b"chunked body")


def test_expect_100_continue_not_sent_when_the_app_does_not_read(serve):
    app = ExpectApp(read=False)
    app.go.set()
    server = serve(app)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n"
        )
        status, headers, body, _ = reader.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == b"not read"
        # The body may or may not follow now: the server says it closes, and does.
        assert header(headers, "Connection") == ["close"]
        assert reader.closed()


def test_http10_never_gets_100_continue(serve):
    app = ExpectApp()
    app.go.set()
    server = serve(app)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        assert nothing_arrives(sock)
        sock.sendall(b"data")
        out = ResponseReader(sock)
        status, _, body, _ = out.read_response()
    assert status == b"HTTP/1.0 200 OK"
    assert body == b"data"


def test_truncated_body_fails_the_read_not_the_server(serve, caplog):
    """The client sends less than its Content-Length and closes: read() raises, no hang."""
    errors = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except Exception as exc:
            errors.append(exc)
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unexpected"]

    server = serve(app)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"a" * 100_000
        )
        sock.shutdown(socket.SHUT_WR)
        out = ResponseReader(sock)
        try:
            status = out.read_response()[0]
        except EOFError:
            status = None
    assert status in (None, b"HTTP/1.1 400 Bad Request")
    assert len(errors) == 1
    assert isinstance(errors[0], OSError)


def test_streaming_echo_reads_while_responding(serve):
    """The app answers while the body is still arriving (full duplex, streamed path)."""

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        while True:
            piece = inp.read(10_000)
            if not piece:
                break
            yield piece

    server = serve(app)
    data = os.urandom(1024 * 1024)
    status, body = post(server.bind_addr, "/", data)
    assert status == 200
    assert body == data
    status, body = post(server.bind_addr, "/", data, chunk_size=30_000)
    assert body == data


def test_concurrent_uploads(serve):
    """Many clients, keep-alive, bodies small and large: each gets its own body back."""

    def app(environ, start_response):
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [hashlib.sha256(data).hexdigest().encode()]

    server = serve(app, numthreads=4, max=16)
    failures = []

    def client(seed):
        conn = http.client.HTTPConnection(*server.bind_addr, timeout=5)
        try:
            for i in range(8):
                size = (seed * 7919 + i * 104729) % (300 * 1024)
                data = os.urandom(size)
                conn.request("POST", "/", body=data)
                got = conn.getresponse().read()
                if got != hashlib.sha256(data).hexdigest().encode():
                    failures.append((seed, i, size))
        except Exception as exc:  # reported below
            failures.append((seed, repr(exc)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert failures == []


def test_malformed_small_chunked_body_never_reaches_the_app(serve):
    called = []

    def app(environ, start_response):
        called.append(1)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.input"].read()]

    server = serve(app)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
        )
        reader = ResponseReader(sock)
        status, _, _, _ = reader.read_response()
        assert status == b"HTTP/1.1 400 Bad Request"
        assert reader.closed(timeout=3)
    assert called == []


@pytest.mark.parametrize(
    ("tail", "status"),
    [
        (b"zz\r\n", b"400"),
        (b"", b"413"),
    ],
)
def test_streamed_body_error_surfaces_through_read(serve, caplog, tail, status):
    """A framing error (or the size limit) met while the app reads: the read raises and
    the client gets the 4xx, not a 500; nothing is logged as an application error."""
    errors = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except OSError as exc:
            errors.append(exc)
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unexpected"]

    limit = 150_000 if not tail else 0
    server = serve(app, attrs={"max_request_body_size": limit})
    body = b"".join(b"%x\r\n%s\r\n" % (10_000, b"q" * 10_000) for _ in range(20))
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        with socket.create_connection(server.bind_addr, timeout=5) as sock:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body + tail
            )
            reader = ResponseReader(sock)
            got = reader.read_response()[0]
            assert reader.closed(timeout=3)
    assert got.split()[1] == status
    assert len(errors) == 1
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
