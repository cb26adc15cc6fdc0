"""PEP 3333 end to end: apps checked by wsgiref.validate, start_response and exc_info,
write(), headers held back until the first non-empty chunk, close() always called, and
what the client sees when the application fails."""

import http.client
import logging
import socket
import sys
import threading
from wsgiref.validate import validator

import pytest
import requests

from conftest import ResponseReader, header

# Every WSGIWarning the validator raises becomes an error: inside the app, a 500.
pytestmark = pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")


def no_app_errors(caplog):
    return [r for r in caplog.records if r.name == "stogie.error" and r.levelno >= logging.ERROR]


@pytest.fixture
def checked(serve, caplog):
    """``checked(app)`` serves ``validator(app)``; the test then asserts no app errors."""
    caplog.set_level(logging.INFO, logger="stogie.error")

    def start(app, **kwargs):
        return serve(validator(app), **kwargs)

    yield start
    assert no_app_errors(caplog) == []


def url(server, path="/"):
    return "http://%s:%d%s" % (server.bind_addr[0], server.bind_addr[1], path)


def test_validator_get(checked):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]

    server = checked(app)
    resp = requests.get(url(server, "/x?y=1"), timeout=5)
    assert resp.status_code == 200
    assert resp.content == b"hello"


def test_validator_head_and_options(checked):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["REQUEST_METHOD"].encode()]

    server = checked(app)
    assert requests.head(url(server), timeout=5).content == b""
    assert requests.options(url(server), timeout=5).content == b"OPTIONS"


def test_validator_post_read_n(checked):
    def app(environ, start_response):
        inp = environ["wsgi.input"]
        n = int(environ["CONTENT_LENGTH"])
        got = b""
        while len(got) < n:
            got += inp.read(min(1000, n - len(got)))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [got[::-1]]

    server = checked(app)
    data = bytes(range(256)) * 400
    resp = requests.post(url(server), data=data, timeout=5)
    assert resp.status_code == 200
    assert resp.content == data[::-1]


def test_validator_readline(checked):
    def app(environ, start_response):
        inp = environ["wsgi.input"]
        out = []
        while True:
            line = inp.readline()
            if not line:
                break
            out.append(line.upper())
        out.append(inp.readline(10))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return out

    server = checked(app)
    resp = requests.post(url(server), data=b"a\nbb\nccc", timeout=5)
    assert resp.content == b"A\nBB\nCCC"


def test_validator_input_iteration_and_readlines(checked):
    def app(environ, start_response):
        inp = environ["wsgi.input"]
        first = next(iter(inp))
        rest = inp.readlines()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [first, b"|".join(rest)]

    server = checked(app)
    resp = requests.post(url(server), data=b"one\ntwo\nthree\n", timeout=5)
    assert resp.content == b"one\ntwo\n|three\n"


def test_validator_write_callable(checked):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"twice ")
        return [b"then returned"]

    server = checked(app)
    resp = requests.get(url(server), timeout=5)
    assert resp.content == b"written twice then returned"
    assert resp.headers["Transfer-Encoding"] == "chunked"


def test_validator_generator_and_close(checked):
    closed = threading.Event()

    class Body:
        def __iter__(self):
            yield b"a"
            yield b""
            yield b"b"

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain"), ("Location", "/new")])
        return Body()

    server = checked(app)
    resp = requests.post(url(server), data=b"", timeout=5)
    assert resp.status_code == 201
    assert resp.content == b"ab"
    assert closed.wait(5)


def test_validator_no_content(checked):
    def app(environ, start_response):
        start_response("204 No Content", [])
        return []

    server = checked(app)
    resp = requests.delete(url(server), timeout=5)
    assert resp.status_code == 204
    assert resp.content == b""


def test_validator_exc_info(checked):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("boom")
        except KeyError:
            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"handled"]

    server = checked(app)
    resp = requests.get(url(server), timeout=5)
    assert resp.status_code == 500
    assert resp.content == b"handled"


def test_validator_catches_a_broken_app(serve, caplog):
    """The other tests' silence means something: the validator does catch a bad app."""

    def app(environ, start_response):
        start_response("200 OK", [])  # no Content-Type: the validator objects
        return [b"x"]

    server = serve(validator(app))
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        resp = requests.get(url(server), timeout=5)
    assert resp.status_code == 500
    assert no_app_errors(caplog)


# start_response and exc_info --------------------------------------------------------


def get_raw(server, request=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", closed_wait=0.2):
    """Sends one request; returns (status_line, headers, body, complete, closed_after).

    ``closed_after``: whether the server closed the connection within ``closed_wait`` s
    (it closes at once when it does; a test that expects a close waits longer).
    """
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(request)
        reader = ResponseReader(sock)
        status, headers, body, complete = reader.read_response()
        return status, headers, body, complete, reader.closed(timeout=closed_wait)


def test_exc_info_replaces_status_and_headers_before_output(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html"), ("X-Old", "1")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("503 Try Later", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]

    server = serve(app)
    status, headers, body, complete, _ = get_raw(server)
    assert status == b"HTTP/1.1 503 Try Later"
    assert header(headers, "Content-Type") == ["text/plain"]
    assert header(headers, "X-Old") == []
    assert body == b"error page"
    assert complete


def test_exc_info_after_output_reraises_and_closes(serve, caplog):
    reraised = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        try:
            raise ValueError("late failure")
        except ValueError as exc:
            original = exc
            try:
                start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
            except BaseException as again:
                reraised.append(again is original)
                raise
        yield b"never"

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status, _, body, complete, closed = get_raw(server, closed_wait=3)
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"partial"
    assert not complete, "a truncated response must not end with the 0-chunk"
    assert reraised == [True]
    assert closed


def test_start_response_twice_without_exc_info_is_an_error(serve, caplog):
    errors = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            start_response("201 Created", [("Content-Type", "text/plain")])
        except Exception as exc:
            errors.append(exc)
            raise
        return [b"no"]

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status, _, body, _, closed = get_raw(server, closed_wait=3)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert b"no" not in body
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert no_app_errors(caplog)
    assert closed


def test_exc_info_none_is_a_first_call(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")], None)
        return [b"fine"]

    server = serve(app)
    assert get_raw(server)[2] == b"fine"


# Headers held back ---------------------------------------------------------------------


def test_headers_wait_for_the_first_nonempty_chunk(serve, caplog):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        yield b""
        raise RuntimeError("failed before any output")

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status, headers, body, complete, closed = get_raw(server, closed_wait=3)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert header(headers, "Content-Type")[0].startswith("text/plain")
    assert complete and closed
    assert no_app_errors(caplog)


def test_empty_write_does_not_send_headers(serve, caplog):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"")
        raise RuntimeError("failed before any output")

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status = get_raw(server)[0]
    assert status == b"HTTP/1.1 500 Internal Server Error"


def test_headers_only_response_goes_out_at_the_end(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Only", "headers")])
        yield b""

    server = serve(app)
    status, headers, body, complete, closed = get_raw(server)
    assert status == b"HTTP/1.1 200 OK"
    assert header(headers, "X-Only") == ["headers"]
    assert body == b"" and complete
    assert not closed


def test_body_before_start_response_is_an_error(serve, caplog):
    def app(environ, start_response):
        yield b"too early"
        start_response("200 OK", [("Content-Type", "text/plain")])

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status, _, body, _, _ = get_raw(server)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert b"too early" not in body


def test_start_response_called_late_in_a_generator(serve):
    """PEP 3333: start_response may be called as late as the first iteration."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"late"

    server = serve(app)
    assert get_raw(server)[2] == b"late"


# write() -------------------------------------------------------------------------------


def test_write_then_iterable(serve):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one,")
        write(b"two,")
        return iter([b"three,", b"", b"four"])

    server = serve(app)
    status, headers, body, complete, closed = get_raw(server)
    assert body == b"one,two,three,four"
    assert header(headers, "Transfer-Encoding") == ["chunked"]
    assert complete and not closed


def test_write_with_content_length(serve):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        write(b"abc")
        write(b"def")
        return []

    server = serve(app)
    status, headers, body, complete, closed = get_raw(server)
    assert body == b"abcdef"
    assert header(headers, "Transfer-Encoding") == []
    assert complete and not closed


def test_write_rejects_str(serve, caplog):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write("text")
        return []

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status = get_raw(server)[0]
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert no_app_errors(caplog)


# close() ------------------------------------------------------------------------------


class Tracked:
    """An app result whose close() sets an Event; iterates ``parts`` (exceptions raised)."""

    def __init__(self, parts):
        self.parts = parts
        self.closed = threading.Event()

    def __iter__(self):
        for p in self.parts:
            if isinstance(p, BaseException):
                raise p
            yield p

    def close(self):
        self.closed.set()


def test_close_called_after_normal_end(serve):
    result = Tracked([b"a", b"b"])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    server = serve(app)
    assert get_raw(server)[2] == b"ab"
    assert result.closed.wait(5)


def test_close_called_on_a_list_subclass(serve):
    closed = threading.Event()

    class Body(list):
        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body([b"x", b"y"])

    server = serve(app)
    assert get_raw(server)[2] == b"xy"
    assert closed.wait(5)


def test_close_called_after_error_mid_iteration(serve, caplog):
    result = Tracked([b"first", RuntimeError("mid-stream")])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status, _, body, complete, closed = get_raw(server, closed_wait=3)
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"first"
    assert not complete
    assert closed
    assert result.closed.wait(5)
    assert any(r.exc_info and "mid-stream" in str(r.exc_info[1]) for r in no_app_errors(caplog))


def test_close_called_after_error_before_output(serve, caplog):
    result = Tracked([RuntimeError("at once")])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        assert get_raw(server)[0] == b"HTTP/1.1 500 Internal Server Error"
    assert result.closed.wait(5)


def test_close_called_when_the_client_disconnects_mid_stream(serve):
    produced = []
    closed = threading.Event()

    class Endless:
        def __iter__(self):
            while len(produced) < 100_000:
                produced.append(1)
                yield b"x" * 65536

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Endless()

    server = serve(app)
    sock = socket.create_connection(server.bind_addr, timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(1000).startswith(b"HTTP/1.1 200 OK\r\n")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    assert closed.wait(5), "close() was not called after the client left"
    assert len(produced) < 100_000


def test_client_disconnect_during_write_is_not_an_app_error(serve, caplog):
    errors = []
    done = threading.Event()

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        try:
            for _ in range(100_000):
                write(b"x" * 65536)
        except OSError as exc:
            errors.append(exc)
            raise
        finally:
            done.set()
        return []

    server = serve(app)
    with caplog.at_level(logging.INFO, logger="stogie.error"):
        sock = socket.create_connection(server.bind_addr, timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200 OK\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        assert done.wait(5)
    assert len(errors) == 1, "write() must raise once the client is gone"
    assert no_app_errors(caplog) == []


def test_close_exception_is_logged(serve, caplog):
    class Body:
        def __iter__(self):
            yield b"body"

        def close(self):
            raise RuntimeError("close failed")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return Body()

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status, _, body, _, _ = get_raw(server)
    assert status == b"HTTP/1.1 200 OK" and body == b"body"
    assert any(r.exc_info and "close failed" in str(r.exc_info[1]) for r in no_app_errors(caplog))


# Application errors --------------------------------------------------------------------


def test_app_error_before_output_is_500_and_logged(serve, caplog):
    def app(environ, start_response):
        raise ZeroDivisionError("app is broken")

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status, headers, body, complete, closed = get_raw(server)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert header(headers, "Content-Type")[0].startswith("text/plain")
    assert complete
    assert b"app is broken" not in body  # no traceback for the client
    records = no_app_errors(caplog)
    assert len(records) == 1
    assert records[0].exc_info[0] is ZeroDivisionError
    assert "ZeroDivisionError: app is broken" in caplog.text  # the traceback


def test_app_error_after_output_truncates(serve, caplog):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a" * 1000
        raise ZeroDivisionError("late")

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        with socket.create_connection(server.bind_addr, timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            raw = b""
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                raw += piece
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.endswith(b"3e8\r\n" + b"a" * 1000 + b"\r\n")
    assert not raw.endswith(b"0\r\n\r\n")
    assert len(no_app_errors(caplog)) == 1


def test_app_error_after_output_with_content_length(serve, caplog):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        yield b"12345"
        raise ZeroDivisionError("late")

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status, _, body, complete, closed = get_raw(server)
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"12345" and not complete


@pytest.mark.parametrize(
    "bad",
    [
        ("X-Injected", "a\r\nSet-Cookie: evil=1"),
        ("X-Injected", "a\nSet-Cookie: evil=1"),
        ("X-Injected", "a\rSet-Cookie: evil=1"),
        ("X-Injected", "nul\x00Set-Cookie: evil=1"),
        ("X-Bad Name", "v"),
        ("X-Bad\r\nSet-Cookie", "evil=1"),
        ("X-Injected", "\u20ac Set-Cookie: evil=1"),
    ],
)
def test_unsafe_header_is_never_written(serve, caplog, bad):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), bad])
        return [b"body"]

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status, headers, body, _, closed = get_raw(server)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert header(headers, "Set-Cookie") == []
    assert not any("Injected" in k or "Bad" in k for k, _ in headers)
    assert b"body" != body
    assert no_app_errors(caplog)


@pytest.mark.parametrize(
    "make_headers",
    [
        lambda: {"X-A": "1", "X-B": "2"}.items(),
        lambda: (("X-A", "1"), ("X-B", "2")),
        lambda: (pair for pair in [("X-A", "1"), ("X-B", "2")]),
        lambda: [["X-A", "1"], ["X-B", "2"]],
        lambda: [iter(("X-A", "1")), iter(("X-B", "2"))],
    ],
    ids=["dict.items()", "tuple of pairs", "generator", "lists as pairs", "iterators as pairs"],
)
def test_headers_may_be_any_iterable_of_pairs(serve, make_headers):
    # Cheroot takes any iterable of 2-item sequences (its own test app passes
    # headers.items()): the names and values are still checked one by one.
    def app(environ, start_response):
        start_response("200 OK", make_headers())
        return [b"body"]

    status, headers, body, _, _ = get_raw(serve(app))
    assert status == b"HTTP/1.1 200 OK"
    assert header(headers, "X-A") == ["1"] and header(headers, "X-B") == ["2"]
    assert body == b"body"


@pytest.mark.parametrize("status", ["200 OK\r\nSet-Cookie: evil=1", "2000 OK", "OK", "99 Low", 200])
def test_bad_status_is_500(serve, caplog, status):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain")])
        return [b"body"]

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status_line, headers, _, _, _ = get_raw(server)
    assert status_line == b"HTTP/1.1 500 Internal Server Error"
    assert header(headers, "Set-Cookie") == []
    assert no_app_errors(caplog)


@pytest.mark.parametrize(
    "headers",
    [[("X", 1)], [(b"X", "1")], [("X",)], ("X", "1"), "X: 1", [("X", "1", "2")], [42], 42],
)
def test_bad_header_types_are_500(serve, caplog, headers):
    def app(environ, start_response):
        start_response("200 OK", headers)
        return [b"body"]

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        assert get_raw(server)[0] == b"HTTP/1.1 500 Internal Server Error"
    assert no_app_errors(caplog)


def test_strings_checked_before_are_checked_again_in_another_role(serve, caplog):
    # The worker remembers the status and header strings it has checked (by identity): one
    # accepted as a value is still no header name, nor a status.
    value = "text/plain; charset=x"
    uses = iter(
        [
            ("200 OK", [("Content-Type", value)]),
            ("200 OK", [("Content-Type", value)]),
            ("200 OK", [(value, "x")]),
            (value, [("Content-Type", "text/plain")]),
            ("200 OK", [("Content-Type", value)]),
        ]
    )

    def app(environ, start_response):
        start_response(*next(uses))
        return [b"body"]

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        statuses = [get_raw(server)[0] for _ in range(5)]
    ok, error = b"HTTP/1.1 200 OK", b"HTTP/1.1 500 Internal Server Error"
    assert statuses == [ok, ok, error, error, ok]
    assert len(no_app_errors(caplog)) == 2


@pytest.mark.parametrize(
    "result",
    [
        ["text, not bytes"],
        [b"ok", "then text"],
        iter(["text from an iterator"]),
        [bytearray(b"bytearray")],
        [memoryview(b"memoryview")],
        [None],
    ],
)
def test_non_bytes_chunk_is_500(serve, caplog, result):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        status, _, body, _, _ = get_raw(server)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert b"ok" not in body
    assert no_app_errors(caplog)


def test_non_iterable_result_is_500(serve, caplog):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return 42

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        assert get_raw(server)[0] == b"HTTP/1.1 500 Internal Server Error"


def test_app_returns_without_start_response(serve, caplog):
    def app(environ, start_response):
        return []

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        assert get_raw(server)[0] == b"HTTP/1.1 500 Internal Server Error"
    assert no_app_errors(caplog)


def test_server_survives_failures(serve, caplog):
    """After failing requests, the same server answers normally."""
    count = []

    def app(environ, start_response):
        count.append(1)
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("fail")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="stogie.error"):
        for _ in range(5):
            assert get_raw(server, b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")[0].split()[1] == b"500"
    conn = http.client.HTTPConnection(*server.bind_addr, timeout=5)
    conn.request("GET", "/ok")
    assert conn.getresponse().read() == b"fine"
    conn.close()
    assert len(count) == 6


def test_start_response_and_input_kept_by_the_app_stay_its_own(serve):
    """The worker reuses a request's start_response and wsgi.input objects only when nothing
    else holds them: ones the app kept are never handed to a later request, and a request
    whose objects were reused sees nothing of the one before (its own body, a fresh start)."""
    kept = []

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        fresh = all(sr is not start_response and i is not environ["wsgi.input"] for sr, i in kept)
        if environ["PATH_INFO"] == "/keep":
            kept.append((start_response, environ["wsgi.input"]))
        out = b"%s %s %d" % (body, b"fresh" if fresh else b"reused", len(kept))
        start_response("200 OK", [("Content-Length", str(len(out)))])
        return [out]

    server = serve(app, numthreads=1)
    conn = http.client.HTTPConnection(*server.bind_addr, timeout=5)
    answers = []
    for i, path in enumerate(["/", "/keep", "/", "/", "/keep", "/", "/"]):
        conn.request("POST", path, body=b"body%d" % i)
        answers.append(conn.getresponse().read())
    conn.close()
    assert answers == [
        b"body0 fresh 0",
        b"body1 fresh 1",
        b"body2 fresh 1",
        b"body3 fresh 1",
        b"body4 fresh 2",
        b"body5 fresh 2",
        b"body6 fresh 2",
    ]
    # A kept start_response belongs to a request that is over: it refuses a second status
    # line as it would have then (PEP 3333: only with exc_info once headers went).
    kept_sr, kept_input = kept[0]
    assert kept_input.read() == b""
    with pytest.raises(RuntimeError, match="second time"):
        kept_sr("500 Oops", [])
