"""How a WSGI app's response goes on the wire: framing (Content-Length, chunked, close),
bodiless responses, the head as the app wrote it, keep-alive, pipelining, half-close,
and wsgi.file_wrapper."""

import http.client
import io
import logging
import os
import socket
import threading
import time

import pytest

from conftest import ResponseReader, header, raw_request


def app_with(status="200 OK", headers=(("Content-Type", "text/plain"),), body=(b"hello",)):
    def app(environ, start_response):
        start_response(status, list(headers))
        return list(body)

    return app


def exchange(server, requests_, head=False):
    """Sends raw requests one after the other on one connection; returns the responses
    and whether the server closed the connection afterwards."""
    out = []
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        reader = ResponseReader(sock)
        for raw in requests_:
            sock.sendall(raw)
            out.append(reader.read_response(head=raw.startswith(b"HEAD ") or head))
        return out, reader.closed(timeout=0.3)


GET11 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
GET10 = b"GET / HTTP/1.0\r\n\r\n"


# Framing ---------------------------------------------------------------------------------


def test_content_length_from_the_app_is_kept(serve):
    server = serve(app_with(headers=[("Content-Type", "text/plain"), ("Content-Length", "5")]))
    (resp, resp2), closed = exchange(server, [GET11, GET11])
    for status, headers, body, complete in (resp, resp2):
        assert status == b"HTTP/1.1 200 OK"
        assert header(headers, "Content-Length") == ["5"]
        assert header(headers, "Transfer-Encoding") == []
        assert body == b"hello" and complete
    assert not closed


@pytest.mark.parametrize("as_list", [True, False], ids=["list", "iterator"])
def test_first_chunk_over_content_length_is_500(serve, caplog, as_list):
    # Nothing went out yet: Cheroot's 500 and its words, not a 200 with a cut body.

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        chunks = [b"hello world", b"!"]
        return chunks if as_list else iter(chunks)

    server = serve(app)
    with caplog.at_level(logging.WARNING, logger="stogie.error"):
        raw = raw_request(server.bind_addr, GET11)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert rest == b"The requested resource returned more bytes than the declared Content-Length."
    assert "exceeds the declared Content-Length" in caplog.text


@pytest.mark.parametrize("body", [(b"hello", b" world"), (b"hel", b"", b"lo", b" world")])
def test_more_bytes_than_content_length_are_cut_and_close(serve, caplog, body):
    server = serve(
        app_with(headers=[("Content-Type", "text/plain"), ("Content-Length", "5")], body=body)
    )
    with caplog.at_level(logging.WARNING, logger="stogie.error"):
        with socket.create_connection(server.bind_addr, timeout=5) as sock:
            sock.sendall(GET11 + GET11)  # a second request waits behind the first
            raw = b""
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                raw += piece
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 5\r\n" in head + b"\r\n"
    assert rest == b"hello", "the extra bytes must not reach the client"


@pytest.mark.parametrize("body", [(b"hel",), (b"h", b"el")])
def test_fewer_bytes_than_content_length_close(serve, body):
    server = serve(
        app_with(headers=[("Content-Type", "text/plain"), ("Content-Length", "10")], body=body)
    )
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(GET11)
        reader = ResponseReader(sock)
        status, _, got, complete = reader.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert got == b"hel" and not complete
        assert reader.eof


def test_no_content_length_is_chunked_on_http11(serve):
    server = serve(app_with(body=(b"hello", b" ", b"world")))
    (resp,), closed = exchange(server, [GET11])
    status, headers, body, complete = resp
    assert header(headers, "Transfer-Encoding") == ["chunked"]
    assert header(headers, "Content-Length") == []
    assert body == b"hello world" and complete
    assert not closed


def test_no_content_length_is_close_delimited_on_http10(serve):
    server = serve(app_with(body=(b"hello", b" ", b"world")))
    out = raw_request(server.bind_addr, GET10)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Content-Length" not in head
    assert body == b"hello world"


def test_app_transfer_encoding_is_not_doubled(serve):
    server = serve(
        app_with(headers=[("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
    )
    (resp,), _ = exchange(server, [GET11])
    assert header(resp[1], "Transfer-Encoding") == ["chunked"]
    assert resp[2] == b"hello" and resp[3]


def test_bad_content_length_from_the_app_is_500(serve, caplog):
    server = serve(app_with(headers=[("Content-Type", "text/plain"), ("Content-Length", "five")]))
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        (resp,), closed = exchange(server, [GET11])
    assert resp[0] == b"HTTP/1.1 500 Internal Server Error"
    assert header(resp[1], "Content-Length") != ["five"]


# Bodiless responses -------------------------------------------------------------------


@pytest.mark.parametrize("cl", [None, "5"])
def test_head_has_no_body(serve, cl):
    headers = [("Content-Type", "text/plain")] + ([("Content-Length", cl)] if cl else [])
    server = serve(app_with(headers=headers))
    head_req = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        # Pipelined: any body bytes after the HEAD answer would corrupt the next response.
        sock.sendall(head_req + GET11)
        reader = ResponseReader(sock)
        status, headers_out, _, _ = reader.read_response(head=True)
        assert status == b"HTTP/1.1 200 OK"
        assert header(headers_out, "Content-Length") == ([cl] if cl else [])
        assert header(headers_out, "Transfer-Encoding") == []
        status, _, body, complete = reader.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == b"hello" and complete


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_204_and_304_have_no_body(serve, status):
    server = serve(app_with(status=status, body=(b"must not be sent",)))
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(GET11 + GET11)
        reader = ResponseReader(sock)
        for _ in range(2):
            line, headers, _, _ = reader.read_response()
            assert line == b"HTTP/1.1 " + status.encode()
            assert header(headers, "Transfer-Encoding") == []
        assert reader.closed(timeout=0.3) is False
    assert b"must not" not in reader.buf


def test_head_on_http10(serve):
    server = serve(app_with())
    out = raw_request(server.bind_addr, b"HEAD / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.0 200 OK\r\n")
    assert out.endswith(b"\r\n\r\n")
    assert b"hello" not in out


# The head as the app wrote it -----------------------------------------------------------


def test_date_and_server_added(serve):
    server = serve(app_with())
    (resp,), _ = exchange(server, [GET11])
    assert header(resp[1], "Server") == [server.server_name]
    (date,) = header(resp[1], "Date")
    parsed = http.client.email.utils.parsedate_to_datetime(date)
    assert abs(parsed.timestamp() - time.time()) < 5
    assert date.endswith(" GMT")


def test_date_and_server_from_the_app_are_kept(serve):
    server = serve(
        app_with(
            headers=[
                ("Content-Type", "text/plain"),
                ("server", "MyServer/1.0"),
                ("DATE", "Mon, 01 Jan 2001 00:00:00 GMT"),
            ]
        )
    )
    (resp,), _ = exchange(server, [GET11])
    assert header(resp[1], "Server") == ["MyServer/1.0"]
    assert header(resp[1], "Date") == ["Mon, 01 Jan 2001 00:00:00 GMT"]


def test_server_name_setting_is_the_server_header(serve):
    server = serve(app_with(), server_name="Named/2")
    (resp,), _ = exchange(server, [GET11])
    assert header(resp[1], "Server") == ["Named/2"]


def test_status_and_header_spelling_kept(serve):
    server = serve(
        app_with(
            status="299 Something Custom happened",
            headers=[
                ("content-TYPE", "text/plain"),
                ("X-mIxEd-CaSe", "Value  With  Spaces"),
                ("x-repeated", "1"),
                ("X-Repeated", "2"),
            ],
        )
    )
    out = raw_request(server.bind_addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw_head = out.partition(b"\r\n\r\n")[0]
    lines = raw_head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 299 Something Custom happened"
    assert lines[1:5] == [
        b"content-TYPE: text/plain",
        b"X-mIxEd-CaSe: Value  With  Spaces",
        b"x-repeated: 1",
        b"X-Repeated: 2",
    ]


def test_status_without_reason_phrase(serve):
    server = serve(app_with(status="200"))
    (resp,), _ = exchange(server, [GET11])
    assert resp[0] in (b"HTTP/1.1 200", b"HTTP/1.1 200 ")
    assert resp[2] == b"hello"


def test_latin1_header_value(serve):
    server = serve(app_with(headers=[("Content-Type", "text/plain"), ("X-Name", "caf\xe9")]))
    out = raw_request(server.bind_addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"\r\nX-Name: caf\xe9\r\n" in out


# Connection management -----------------------------------------------------------------


def test_app_connection_close_is_honoured(serve):
    server = serve(
        app_with(
            headers=[
                ("Content-Type", "text/plain"),
                ("Content-Length", "5"),
                ("Connection", "close"),
            ]
        )
    )
    (resp,), closed = exchange(server, [GET11])
    assert resp[2] == b"hello"
    assert header(resp[1], "Connection") == ["close"]
    assert closed


def test_client_connection_close(serve):
    server = serve(app_with(headers=[("Content-Type", "text/plain"), ("Content-Length", "5")]))
    (resp,), closed = exchange(server, [b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
    assert header(resp[1], "Connection") == ["close"]
    assert closed


def test_keep_alive_http11(serve):
    seen = []

    def app(environ, start_response):
        seen.append(environ["REMOTE_PORT"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    server = serve(app)
    conn = http.client.HTTPConnection(*server.bind_addr, timeout=5)
    for i in range(5):
        conn.request("GET", "/r%d" % i)
        resp = conn.getresponse()
        assert resp.read() == b"/r%d" % i
        assert not resp.will_close
    conn.close()
    assert len(set(seen)) == 1


@pytest.mark.parametrize("timeout", [7, 2.5])
def test_keep_alive_http10_with_keep_alive_header(serve, timeout):
    server = serve(
        app_with(headers=[("Content-Type", "text/plain"), ("Content-Length", "5")]),
        timeout=timeout,
    )
    req = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    responses, closed = exchange(server, [req, req, GET10])
    for status, headers, body, _ in responses[:2]:
        assert status == b"HTTP/1.0 200 OK"
        assert [v.lower() for v in header(headers, "Connection")] == ["keep-alive"]
        # How long the server keeps the connection, as Cheroot says it.
        assert header(headers, "Keep-Alive") == [f"timeout={timeout}"]
        assert body == b"hello"
    assert [v.lower() for v in header(responses[2][1], "Connection")] != ["keep-alive"]
    assert header(responses[2][1], "Keep-Alive") == []
    assert closed


def test_http10_keep_alive_without_length_closes(serve):
    server = serve(app_with())
    (resp,), closed = exchange(server, [b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"])
    assert resp[2] == b"hello"
    assert [v.lower() for v in header(resp[1], "Connection")] != ["keep-alive"]
    assert closed


def test_pipelined_requests_answered_in_order(serve):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            time.sleep(0.2)
        body = environ["PATH_INFO"].encode() + environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = serve(app)
    batch = (
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n+abc"
        b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(batch)
        reader = ResponseReader(sock)
        bodies = [reader.read_response(head=(i == 3))[2] for i in range(5)]
        assert reader.closed(timeout=3)
    assert bodies == [b"/slow", b"/post+abc", b"/fast", b"", b"/last"]


def test_pipelined_requests_sent_byte_by_byte(serve):
    server = serve(app_with(headers=[("Content-Type", "text/plain"), ("Content-Length", "5")]))
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in GET11 * 2:
            sock.send(bytes([b]))
        reader = ResponseReader(sock)
        assert [reader.read_response()[2] for _ in range(2)] == [b"hello", b"hello"]


@pytest.mark.parametrize(
    "req", [GET11, GET10, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"]
)
def test_half_closed_client_gets_the_response(serve, req):
    def app(environ, start_response):
        data = environ["wsgi.input"].read()
        time.sleep(0.05)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got:" + data]

    server = serve(app)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(req)
        sock.shutdown(socket.SHUT_WR)
        reader = ResponseReader(sock)
        status, _, body, complete = reader.read_response()
        assert reader.closed(timeout=3)
    assert status == req.split(b"\r\n")[0][-8:] + b" 200 OK"
    assert complete
    assert body == (b"got:abc" if req.startswith(b"POST") else b"got:")


def test_large_streamed_response(serve):
    chunk = os.urandom(100_000)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (chunk for _ in range(50))

    server = serve(app)
    conn = http.client.HTTPConnection(*server.bind_addr, timeout=5)
    conn.request("GET", "/")
    resp = conn.getresponse()
    data = resp.read()
    assert len(data) == 50 * len(chunk)
    assert data == chunk * 50
    conn.request("GET", "/")
    assert len(conn.getresponse().read()) == 50 * len(chunk)
    conn.close()


def test_slow_reader_does_not_lose_bytes(serve):
    """The client reads late and slowly: backpressure, then every byte in order."""
    chunk = os.urandom(256 * 1024)
    produced = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for i in range(64):
            produced.append(i)
            yield chunk

    server = serve(app)
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(GET11)
        time.sleep(0.5)
        # 16 MiB cannot all sit in socket buffers: the app must be waiting on the client.
        assert len(produced) < 64
        reader = ResponseReader(sock)
        status, _, body, complete = reader.read_response()
    assert status == b"HTTP/1.1 200 OK"
    assert complete and len(body) == 64 * len(chunk)
    assert body == chunk * 64


# wsgi.file_wrapper ---------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path):
    data = os.urandom(300_000 + 123)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


def file_app(path, offset=0, content_length=True, blksize=None):
    opened = []

    def app(environ, start_response):
        f = open(path, "rb")
        opened.append(f)
        f.seek(offset)
        size = os.path.getsize(path) - offset
        headers = [("Content-Type", "application/octet-stream")]
        if content_length:
            headers.append(("Content-Length", str(size)))
        start_response("200 OK", headers)
        wrapper = environ["wsgi.file_wrapper"]
        return wrapper(f, blksize) if blksize else wrapper(f)

    app.opened = opened
    return app


def test_file_wrapper_with_content_length(serve, data_file):
    path, data = data_file
    app = file_app(path)
    server = serve(app)
    responses, closed = exchange(server, [GET11, GET11])
    for status, headers, body, complete in responses:
        assert status == b"HTTP/1.1 200 OK"
        assert header(headers, "Content-Length") == [str(len(data))]
        assert complete and body == data
    assert not closed
    assert all(f.closed for f in app.opened), "close() must close the file"


def test_file_wrapper_chunked(serve, data_file):
    path, data = data_file
    server = serve(file_app(path, content_length=False))
    responses, closed = exchange(server, [GET11, GET11])
    for status, headers, body, complete in responses:
        assert status == b"HTTP/1.1 200 OK"
        assert header(headers, "Transfer-Encoding") == ["chunked"]
        assert complete and body == data
    assert not closed


def test_file_wrapper_http10(serve, data_file):
    path, data = data_file
    server = serve(file_app(path, content_length=False))
    out = raw_request(server.bind_addr, GET10)
    assert out.partition(b"\r\n\r\n")[2] == data


@pytest.mark.parametrize("content_length", [True, False])
def test_file_wrapper_from_an_offset(serve, data_file, content_length):
    path, data = data_file
    server = serve(file_app(path, offset=1000, content_length=content_length))
    (resp,), _ = exchange(server, [GET11])
    assert resp[3] and resp[2] == data[1000:]


def test_file_wrapper_head(serve, data_file):
    path, data = data_file
    server = serve(file_app(path))
    (head, get), _ = exchange(server, [b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", GET11])
    assert header(head[1], "Content-Length") == [str(len(data))]
    assert get[2] == data


def test_file_wrapper_shorter_content_length_truncates(serve, data_file):
    path, data = data_file

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "x/y"), ("Content-Length", "100")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    server = serve(app)
    (resp,), closed = exchange(server, [GET11])
    assert resp[2] == data[:100]
    assert closed


def test_file_wrapper_without_fileno(serve):
    data = os.urandom(50_000)
    closed = threading.Event()

    class Stream(io.BytesIO):
        def close(self):
            closed.set()
            super().close()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](Stream(data), 1000)

    server = serve(app)
    (resp,), _ = exchange(server, [GET11])
    assert resp[3] and resp[2] == data
    assert closed.wait(5)


def test_file_wrapper_blksize_iteration():
    from stogie import wsgi

    wrapper = wsgi.file_wrapper(io.BytesIO(b"abcdefg"), 3)
    assert list(wrapper) == [b"abc", b"def", b"g"]
