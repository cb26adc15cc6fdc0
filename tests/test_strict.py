"""Strict HTTP/1.1 parsing and the limits (issue 3), end to end over real sockets.

Every rule gets a request that breaks it: the client must get the status named here, the
connection must close, and the app must never see the request. The near misses that are
valid get served, as the app sees them.
"""

import json
import socket
import ssl
import threading
import time

import pytest

from conftest import ResponseReader, running
from stogie import errors, wsgi

CALLS = []
CALLS_LOCK = threading.Lock()


def recording_app(environ, start_response):
    """Echoes what it got as JSON: method, path, query, HTTP_*/CONTENT_* keys and the body."""
    body = environ["wsgi.input"].read()
    seen = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "headers": {
            k: v
            for k, v in environ.items()
            if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")
        },
        "body": body.decode("latin-1"),
    }
    with CALLS_LOCK:
        CALLS.append((environ["REMOTE_PORT"], seen))
    out = json.dumps(seen).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    )
    return [out]


DEFAULTS = {
    "max_request_line": 8190,
    "max_header_count": 100,
    "max_header_field": 8190,
    "max_request_header_size": 0,
    "max_request_body_size": 0,
    "allow_underscore_headers": False,
}


@pytest.fixture(scope="module")
def module_server():
    server = wsgi.Server(("127.0.0.1", 0), recording_app, numthreads=4, timeout=5)
    with running(server):
        yield server


@pytest.fixture
def server(module_server):
    """The shared server with default limits; a test may change them, they come back after."""
    for name, value in DEFAULTS.items():
        setattr(module_server, name, value)
    with CALLS_LOCK:
        CALLS.clear()
    yield module_server
    for name, value in DEFAULTS.items():
        setattr(module_server, name, value)


def calls_from(port):
    with CALLS_LOCK:
        return [seen for p, seen in CALLS if p == str(port)]


def refused(server, raw, eof=False, pieces=1):
    """Sends ``raw`` (in ``pieces``), half-closing after it when ``eof``; asserts that an
    answer comes, then the close, and that the app saw nothing. Returns (code, body)."""
    with socket.create_connection(server.bind_addr, timeout=10) as sock:
        port = sock.getsockname()[1]
        step = max(1, -(-len(raw) // pieces))
        try:
            for i in range(0, len(raw), step):
                sock.sendall(raw[i : i + step])
                if pieces > 1:
                    time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the end: the answer is what counts
        if eof:
            sock.shutdown(socket.SHUT_WR)
        reader = ResponseReader(sock)
        status_line, headers, body, _ = reader.read_response()
        assert reader.closed(5), "the connection stayed open after %r" % status_line
    assert calls_from(port) == [], "the app saw a refused request"
    content_type = [v for k, v in headers if k.lower() == "content-type"]
    assert content_type and content_type[0].startswith("text/plain"), headers
    return int(status_line.split()[1]), body


def served(server, raw):
    """Sends ``raw``; asserts a 200 from the app and returns what the app saw."""
    with socket.create_connection(server.bind_addr, timeout=10) as sock:
        sock.sendall(raw)
        status_line, _, body, complete = ResponseReader(sock).read_response()
    assert status_line.split()[1] == b"200", (status_line, body)
    assert complete
    return json.loads(body)


def get(target=b"/", headers=b"Host: h\r\n", version=b"HTTP/1.1", method=b"GET"):
    return method + b" " + target + b" " + version + b"\r\n" + headers + b"\r\n"


def chunked(body_wire, extra_headers=b""):
    return (
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        + extra_headers
        + b"\r\n"
        + body_wire
    )


# -- parsing rules ------------------------------------------------------------------------

REFUSALS = {
    # line ends: CRLF only
    "bare LF ends the request line": (b"GET / HTTP/1.1\nHost: h\r\n\r\n", 400),
    "bare LF ends a field": (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
    "bare LF ends the head": (b"GET / HTTP/1.1\r\nHost: h\r\n\n", 400),
    "bare LF only": (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    "bare CR in the request line": (b"GET /\r HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "bare CR in a value": (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400),
    "bare CR ends a field": (b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
    # the method is a token
    "method with (": (get(method=b"G(T"), 400),
    "method with NUL": (get(method=b"GE\x00T"), 400),
    "method with non-ASCII": (get(method=b"GET\xc3\x9f"), 400),
    "method with colon": (get(method=b"GET:"), 400),
    "empty method": (b" / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "two spaces after the method": (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    # request-target forms
    "asterisk without OPTIONS": (get(b"*"), 400),
    "authority-form without CONNECT": (get(b"h:443"), 400),
    "CONNECT": (get(b"h:443", headers=b"Host: h:443\r\n", method=b"CONNECT"), 405),
    "relative target": (get(b"a/b"), 400),
    "empty target": (b"GET  HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "fragment": (get(b"/a#f"), 400),
    "raw UTF-8 in the target": (get(b"/\xc3\xa9"), 400),
    "DEL in the target": (get(b"/a\x7fb"), 400),
    "NUL in the target": (get(b"/a\x00b"), 400),
    "TAB in the target": (get(b"/a\tb"), 400),
    "absolute-form, other scheme": (get(b"ftp://h/x"), 400),
    "absolute-form with userinfo": (get(b"http://u:p@h/x"), 400),
    "absolute-form, empty authority": (get(b"http:///x"), 400),
    "absolute-form, bad port": (get(b"http://h:x/"), 400),
    # the version
    "HTTP/1.2": (get(version=b"HTTP/1.2"), 505),
    "HTTP/2.0": (get(version=b"HTTP/2.0"), 505),
    "HTTP/0.9": (get(version=b"HTTP/0.9"), 505),
    "HTTP/1.10": (get(version=b"HTTP/1.10"), 400),
    "lower-case http/1.1": (get(version=b"http/1.1"), 400),
    "HTTP/1": (get(version=b"HTTP/1"), 400),
    "no version": (b"GET /\r\nHost: h\r\n\r\n", 400),
    "space after the version": (get(version=b"HTTP/1.1 "), 400),
    # field names and values
    "space before the colon": (get(headers=b"Host: h\r\nX : y\r\n"), 400),
    "tab before the colon": (get(headers=b"Host: h\r\nX\t: y\r\n"), 400),
    "empty field name": (get(headers=b"Host: h\r\n: y\r\n"), 400),
    "no colon": (get(headers=b"Host: h\r\nXy\r\n"), 400),
    "( in a field name": (get(headers=b"Host: h\r\nX(: y\r\n"), 400),
    "non-ASCII field name": (get(headers=b"Host: h\r\nX\xc3\x9f: y\r\n"), 400),
    "NUL in a value": (get(headers=b"Host: h\r\nX: a\x00b\r\n"), 400),
    "DEL in a value": (get(headers=b"Host: h\r\nX: a\x7fb\r\n"), 400),
    "BEL in a value": (get(headers=b"Host: h\r\nX: a\x07b\r\n"), 400),
    "ESC in a value": (get(headers=b"Host: h\r\nX: a\x1bb\r\n"), 400),
    "obs-fold": (get(headers=b"Host: h\r\nX: a\r\n b\r\n"), 400),
    "obs-fold with a tab": (get(headers=b"Host: h\r\nX: a\r\n\tb\r\n"), 400),
    "whitespace before the first field": (b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400),
    # Host
    "HTTP/1.1 without Host": (get(headers=b"X: y\r\n"), 400),
    "two Hosts": (get(headers=b"Host: a\r\nHost: b\r\n"), 400),
    "two equal Hosts": (get(headers=b"Host: a\r\nHost: a\r\n"), 400),
    "Host with a space": (get(headers=b"Host: a b\r\n"), 400),
    "Host with a path": (get(headers=b"Host: a/b\r\n"), 400),
    "Host with userinfo": (get(headers=b"Host: u@a\r\n"), 400),
    "Host with a bad port": (get(headers=b"Host: a:8x\r\n"), 400),
    "Host with a long port": (get(headers=b"Host: a:123456\r\n"), 400),
    "Host with an open bracket": (get(headers=b"Host: [::1\r\n"), 400),
    "Host with a bad IPv6": (get(headers=b"Host: [g::1]\r\n"), 400),
    "Host with a malformed IPv6": (get(headers=b"Host: [:::::]\r\n"), 400),
    "Host with a bad percent-escape": (get(headers=b"Host: a%zz\r\n"), 400),
    # Content-Type is one value
    "two Content-Types": (
        get(headers=b"Host: h\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n"),
        400,
    ),
    # Content-Length
    "Content-Length +1": (get(headers=b"Host: h\r\nContent-Length: +1\r\n") + b"x", 400),
    "Content-Length -1": (get(headers=b"Host: h\r\nContent-Length: -1\r\n"), 400),
    "Content-Length 0x1": (get(headers=b"Host: h\r\nContent-Length: 0x1\r\n") + b"x", 400),
    "Content-Length 1.0": (get(headers=b"Host: h\r\nContent-Length: 1.0\r\n") + b"x", 400),
    "Content-Length 1 1": (get(headers=b"Host: h\r\nContent-Length: 1 1\r\n") + b"x", 400),
    "Content-Length list": (get(headers=b"Host: h\r\nContent-Length: 1, 1\r\n") + b"x", 400),
    "Content-Length empty": (get(headers=b"Host: h\r\nContent-Length: \r\n"), 400),
    "Content-Length 20 digits": (
        get(headers=b"Host: h\r\nContent-Length: 10000000000000000000\r\n"),
        400,
    ),
    "two differing Content-Lengths": (
        get(headers=b"Host: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n") + b"xy",
        400,
    ),
    # Transfer-Encoding
    "Transfer-Encoding and Content-Length": (
        chunked(b"0\r\n\r\n", b"Content-Length: 5\r\n"),
        400,
    ),
    "Transfer-Encoding gzip": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    ),
    "Transfer-Encoding gzip, chunked": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "Transfer-Encoding chunked, gzip": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        501,
    ),
    "Transfer-Encoding identity": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
        501,
    ),
    "Transfer-Encoding chunked twice": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "Transfer-Encoding empty": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n",
        400,
    ),
    "chunked on HTTP/1.0": (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # chunk sizes: hex digits only
    "chunk size 0x5": (chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size -5": (chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size +5": (chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size 5_0": (chunked(b"5_0\r\n"), 400),
    "chunk size with a space before": (chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size with a space after": (chunked(b"5 \r\nhello\r\n0\r\n\r\n"), 400),
    "last chunk with a space after": (chunked(b"0 \r\n\r\n"), 400),
    "empty chunk size": (chunked(b"\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size g": (chunked(b"g\r\n"), 400),
    "chunk size over 2**60": (chunked(b"10000000000000000\r\n"), 400),
    "chunk size line ends in bare LF": (chunked(b"5\nhello\r\n0\r\n\r\n"), 400),
    # chunk extensions: validated and bounded
    "bare ;": (chunked(b"5;\r\nhello\r\n0\r\n\r\n"), 400),
    "extension without a name": (chunked(b"5;=x\r\nhello\r\n0\r\n\r\n"), 400),
    "extension with an empty value": (chunked(b"5;a=\r\nhello\r\n0\r\n\r\n"), 400),
    "extension with an open quote": (chunked(b'5;a="x\r\nhello\r\n0\r\n\r\n'), 400),
    "extension with a control byte": (chunked(b'5;a="\x01"\r\nhello\r\n0\r\n\r\n'), 400),
    "extension escaping a control byte": (chunked(b'5;a="\\\x01"\r\nhello\r\n0\r\n\r\n'), 400),
    "extension with a bare CR": (chunked(b"5;a=b\rc\r\nhello\r\n0\r\n\r\n"), 400),
    "extension line over 4 KiB": (chunked(b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n"), 400),
    "extensions over 16 KiB in all": (
        chunked(b"".join(b"1;a=" + b"b" * 3000 + b"\r\nx\r\n" for _ in range(6))),
        400,
    ),
    # chunk data and the end of the body
    "chunk data longer than its size": (chunked(b"5\r\nhelloXX\r\n0\r\n\r\n"), 400),
    "chunk data without its CRLF": (chunked(b"5\r\nhello0\r\n\r\n"), 400),
    "chunk data ending in bare LF": (chunked(b"5\r\nhello\n0\r\n\r\n"), 400),
    # trailers: read, bounded, and some fields never allowed
    "Content-Length trailer": (chunked(b"0\r\nContent-Length: 5\r\n\r\n"), 400),
    "Transfer-Encoding trailer": (chunked(b"0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400),
    "Host trailer": (chunked(b"0\r\nHost: evil\r\n\r\n"), 400),
    "Authorization trailer": (chunked(b"0\r\nAuthorization: x\r\n\r\n"), 400),
    "trailer without a colon": (chunked(b"0\r\nX-T\r\n\r\n"), 400),
    "trailer name with a space": (chunked(b"0\r\nX T: 1\r\n\r\n"), 400),
    "trailer value with NUL": (chunked(b"0\r\nX-T: a\x00b\r\n\r\n"), 400),
    "33 trailers": (
        chunked(b"0\r\n" + b"".join(b"X-T%d: 1\r\n" % i for i in range(33)) + b"\r\n"),
        400,
    ),
    "trailers over 8 KiB": (
        chunked(b"0\r\n" + b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 1000) for i in range(9))),
        400,
    ),
}


@pytest.mark.parametrize("pieces", [1, 7], ids=["whole", "pieces"])
@pytest.mark.parametrize("name", list(REFUSALS))
def test_refused(server, name, pieces):
    raw, status = REFUSALS[name]
    code, body = refused(server, raw, pieces=pieces)
    assert code == status, body
    assert body  # a short text saying why


# Refusals Cheroot shares with stogie get Cheroot's words (code that matched on them, and
# Cheroot's own tests, keep working).
CHEROOT_WORDS = {
    "no leading slash": (
        get(b"hello"),
        b"Invalid path in Request-URI: request-target must contain origin-form which starts"
        b' with absolute-path (URI starting with a slash "/").',
    ),
    "not HTTP/": (get(version=b"HTTPS/1.1"), b"Malformed Request-Line: bad protocol"),
    "bad version": (get(version=b"HTTP/1"), b"Malformed Request-Line: bad version"),
    "field line without a colon": (
        get(headers=b"Host: h\r\nRe, 1.2.3.4#015#012\r\n"),
        b"Illegal header line.",
    ),
    "fragment": (get(b"/a#b"), b"Illegal #fragment in Request-URI."),
    "bad Content-Length": (
        get(headers=b"Host: h\r\nContent-Length: 1x\r\n"),
        b"Malformed Content-Length Header.",
    ),
}


@pytest.mark.parametrize("name", list(CHEROOT_WORDS))
def test_refusals_use_cheroots_words(server, name):
    raw, text = CHEROOT_WORDS[name]
    code, body = refused(server, raw)
    assert (code, body) == (400, text)


def test_tls_client_hello_on_a_plain_port_is_refused_at_once(server):
    # A client speaking TLS to the plain-HTTP port: its ClientHello is not HTTP from the
    # first byte, so the 400 comes at once, not after the head timeout (5 s here).
    hello = bytes.fromhex("16030100c4010000c00303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"
    started = time.monotonic()
    code, body = refused(server, hello)
    assert code == 400 and b"TLS" in body
    assert time.monotonic() - started < 1.0


def test_tls_client_on_a_plain_port_gets_an_error_at_once(server):
    # What a real TLS client sees: the plain 400 is not a TLS record, so its handshake
    # fails at once with a protocol error instead of hanging until the timeout.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.monotonic()
    with socket.create_connection(server.bind_addr, timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="localhost")
    assert time.monotonic() - started < 1.0


def test_underscore_transfer_encoding_is_not_framing(server):
    """The underscore spelling never frames: what follows the head is the next request."""
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(
            b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        reader = ResponseReader(sock)
        first = json.loads(reader.read_response()[2])
        second = json.loads(reader.read_response()[2])
    assert (first["path"], first["body"]) == ("/a", "")
    assert "HTTP_TRANSFER_ENCODING" not in first["headers"]
    assert second["path"] == "/b"


EOF_REFUSALS = {
    "inside the request line": b"GET /foo",
    "after the request line": b"GET / HTTP/1.1\r\n",
    "inside a field": b"GET / HTTP/1.1\r\nHost: h\r\nX: y",
    "before the blank line": b"GET / HTTP/1.1\r\nHost: h\r\n",
    "inside a Content-Length body": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc",
    "inside a chunk": chunked(b"5\r\nhel"),
    "before the last chunk": chunked(b"5\r\nhello\r\n"),
    "inside the trailers": chunked(b"5\r\nhello\r\n0\r\n"),
    "after a trailer": chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\n"),
}


@pytest.mark.parametrize("name", list(EOF_REFUSALS))
def test_truncated_request_is_refused(server, name):
    """The client ends its side in the middle of a request: 400, never served."""
    code, _ = refused(server, EOF_REFUSALS[name], eof=True)
    assert code == 400


def test_end_before_any_request_is_a_quiet_close(server):
    for raw in (b"", b"\r\n", b"\r\n\r\n"):
        with socket.create_connection(server.bind_addr, timeout=5) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(100) == b""


def test_nothing_after_a_refusal_is_read(server):
    """Pipelined requests after a refused one are never served."""
    raw = get(b"/bad#f") + get(b"/next") + get(b"/last")
    code, _ = refused(server, raw)
    assert code == 400


def test_nothing_after_a_bad_body_is_read(server):
    raw = chunked(b"5\r\nhello\r\nzz\r\n") + get(b"/next")
    code, _ = refused(server, raw)
    assert code == 400


SERVED = {
    "lower-case method, kept as sent": (
        get(method=b"get"),
        {"method": "get", "path": "/"},
    ),
    "unusual token method": (get(method=b"-BLARGH"), {"method": "-BLARGH"}),
    # PATH_INFO starts with a slash, as in Cheroot; REQUEST_URI keeps the "*".
    "OPTIONS *": (get(b"*", method=b"OPTIONS"), {"method": "OPTIONS", "path": "/*"}),
    "leading empty lines are ignored": (b"\r\n\r\n" + get(b"/x"), {"path": "/x"}),
    "quotes and percent-escapes in the target": (
        get(b'/a%20b/"c"?q="1"'),
        {"path": '/a b/"c"', "query": 'q="1"'},
    ),
    "HTTP/1.0 without Host": (get(headers=b"", version=b"HTTP/1.0"), {"protocol": "HTTP/1.0"}),
    "empty Host": (get(headers=b"Host:\r\n"), {"headers": {"HTTP_HOST": ""}}),
    "IPv6 Host": (get(headers=b"Host: [::1]:8080\r\n"), {"headers": {"HTTP_HOST": "[::1]:8080"}}),
    "reg-name Host with sub-delims": (
        get(headers=b"Host: a-b.c_d~e!$&'()*+,;=:80\r\n"),
        {"headers": {"HTTP_HOST": "a-b.c_d~e!$&'()*+,;=:80"}},
    ),
    "HTAB and obs-text in a value, OWS trimmed": (
        get(headers=b"Host: h\r\nX:\t a\tb\xe9 \t\r\n"),
        {"headers": {"HTTP_HOST": "h", "HTTP_X": "a\tb\xe9"}},
    ),
    "absolute-form: path, query, and Host from the target": (
        get(b"http://example.com:8080/p?q=1", headers=b"Host: other\r\n"),
        {"path": "/p", "query": "q=1", "headers": {"HTTP_HOST": "example.com:8080"}},
    ),
    "absolute-form on HTTP/1.0 without Host": (
        get(b"https://example.com", headers=b"", version=b"HTTP/1.0"),
        {"path": "/", "headers": {"HTTP_HOST": "example.com"}},
    ),
    "two equal Content-Lengths": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        {"body": "abc", "headers": {"HTTP_HOST": "h", "CONTENT_LENGTH": "3"}},
    ),
    "Content-Length with leading zeros": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 003\r\n\r\nabc",
        {"body": "abc"},
    ),
    "chunked: extensions, leading zeros, upper-case hex, trailers dropped": (
        chunked(
            b'5;a=b ; c = "d \\" e";f\r\nhello\r\n0000A\r\n0123456789\r\n'
            b"0;last\r\nX-Trailer: 1\r\nContent-Type: text/plain\r\n\r\n"
        ),
        {
            "body": "hello0123456789",
            "headers": {"HTTP_HOST": "h", "HTTP_TRANSFER_ENCODING": "chunked"},
        },
    ),
    "Transfer-Encoding in capitals": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        {"body": "abc"},
    ),
    "underscore names dropped, hyphen names kept": (
        get(headers=b"Host: h\r\nX_Forwarded_For: evil\r\nX-Forwarded-For: good\r\n"),
        {"headers": {"HTTP_HOST": "h", "HTTP_X_FORWARDED_FOR": "good"}},
    ),
    "underscore name alone is dropped": (
        get(headers=b"Host: h\r\nX_Auth_User: admin\r\n"),
        {"headers": {"HTTP_HOST": "h"}},
    ),
}


@pytest.mark.parametrize("name", list(SERVED))
def test_served(server, name):
    raw, expected = SERVED[name]
    seen = served(server, raw)
    for key, value in expected.items():
        assert seen[key] == value, key


def test_underscore_headers_allowed_by_the_setting(server):
    server.allow_underscore_headers = True
    seen = served(server, get(headers=b"Host: h\r\nX_Auth_User: admin\r\n"))
    assert seen["headers"] == {"HTTP_HOST": "h", "HTTP_X_AUTH_USER": "admin"}
    server.allow_underscore_headers = False
    seen = served(server, get(headers=b"Host: h\r\nX_Auth_User: admin\r\n"))
    assert seen["headers"] == {"HTTP_HOST": "h"}


# -- limits -------------------------------------------------------------------------------


def line_of(length, version=b"HTTP/1.1"):
    """A request line of exactly ``length`` bytes (without CRLF)."""
    fill = length - len(b"GET / ") - len(version)
    return b"GET /" + b"a" * fill + b" " + version


def field_of(length, name=b"X-Long"):
    """A field line of exactly ``length`` bytes (without CRLF)."""
    return name + b": " + b"v" * (length - len(name) - 2)


def test_request_line_limit(server):
    assert served(server, line_of(8190) + b"\r\nHost: h\r\n\r\n")["path"].startswith("/aaa")
    code, _ = refused(server, line_of(8191) + b"\r\nHost: h\r\n\r\n")
    assert code == 414


def test_request_line_limit_refuses_before_the_line_ends(server):
    """A request line that never ends is refused once it passes the limit: not buffered."""
    code, _ = refused(server, b"GET /" + b"a" * 200_000)
    assert code == 414


def test_request_line_limit_setting(server):
    server.max_request_line = 100
    served(server, line_of(100) + b"\r\nHost: h\r\n\r\n")
    code, _ = refused(server, line_of(101) + b"\r\nHost: h\r\n\r\n")
    assert code == 414


def test_header_count_limit(server):
    fields = b"Host: h\r\n" + b"".join(b"X-F%d: %d\r\n" % (i, i) for i in range(99))
    assert len(served(server, get(headers=fields))["headers"]) == 100
    code, _ = refused(server, get(headers=fields + b"X-One-More: 1\r\n"))
    assert code == 431


def test_header_count_limit_refuses_a_flood(server):
    code, _ = refused(server, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100_000)
    assert code == 431


def test_header_count_limit_setting(server):
    server.max_header_count = 3
    served(server, get(headers=b"Host: h\r\nA: 1\r\nB: 2\r\n"))
    code, _ = refused(server, get(headers=b"Host: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n"))
    assert code == 431


def test_header_field_limit(server):
    seen = served(server, get(headers=b"Host: h\r\n" + field_of(8190) + b"\r\n"))
    assert len(seen["headers"]["HTTP_X_LONG"]) == 8190 - len(b"X-Long: ")
    code, _ = refused(server, get(headers=b"Host: h\r\n" + field_of(8191) + b"\r\n"))
    assert code == 431


def test_header_field_limit_refuses_before_the_line_ends(server):
    code, _ = refused(server, b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 200_000)
    assert code == 431


def test_header_field_limit_setting(server):
    server.max_header_field = 50
    served(server, get(headers=b"Host: h\r\n" + field_of(50) + b"\r\n"))
    code, _ = refused(server, get(headers=b"Host: h\r\n" + field_of(51) + b"\r\n"))
    assert code == 431


@pytest.mark.parametrize(
    ("name", "value"),
    [("max_request_line", 0), ("max_header_field", -1), ("max_header_count", -1)],
)
def test_limit_settings_are_checked(server, name, value):
    with pytest.raises(ValueError, match=name):
        setattr(server, name, value)


def test_max_request_header_size(server):
    head = get(headers=b"Host: h\r\nX: " + b"v" * 100 + b"\r\n")
    server.max_request_header_size = len(head)
    served(server, head)
    code, _ = refused(server, get(headers=b"Host: h\r\nX: " + b"v" * 101 + b"\r\n"))
    assert code == 431


def test_max_request_header_size_request_line_alone_is_414(server):
    server.max_request_header_size = 200
    code, _ = refused(server, line_of(201) + b"\r\nHost: h\r\n\r\n")
    assert code == 414
    code, _ = refused(server, line_of(150) + b"\r\nHost: h\r\nX: " + b"v" * 100 + b"\r\n\r\n")
    assert code == 431


def test_max_request_body_size_content_length(server):
    server.max_request_body_size = 10
    seen = served(server, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n" + b"a" * 10)
    assert seen["body"] == "a" * 10
    # Refused from the head alone: before the body is sent, before the app runs.
    code, _ = refused(server, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n")
    assert code == 413


def test_max_request_body_size_chunked_small(server):
    server.max_request_body_size = 10
    seen = served(server, chunked(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"))
    assert seen["body"] == "helloworld"
    code, _ = refused(server, chunked(b"5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n"))
    assert code == 413


# -- body errors met while the app reads --------------------------------------------------


def body_reading_app(outcome):
    """Reads the whole body; records what read() raised, then re-raises it."""

    def app(environ, start_response):
        try:
            data = environ["wsgi.input"].read()
        except Exception as exc:
            outcome.append(exc)
            raise
        outcome.append(len(data))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % len(data)]

    return app


def big_chunks(total, size=10_000):
    return b"".join(b"%x\r\n%s\r\n" % (size, b"q" * size) for _ in range(total // size))


BODY_ERRORS = {
    "bad chunk size": (big_chunks(200_000) + b"zz\r\n", False, 400, errors.RequestBodyError),
    "missing CRLF after data": (
        big_chunks(200_000) + b"3\r\nabcX",
        False,
        400,
        errors.RequestBodyError,
    ),
    "forbidden trailer": (
        big_chunks(200_000) + b"0\r\nHost: evil\r\n\r\n",
        False,
        400,
        errors.RequestBodyError,
    ),
    "truncated": (big_chunks(200_000), True, 400, errors.RequestBodyError),
    "past max_request_body_size": (big_chunks(200_000), False, 413, errors.MaxSizeExceeded),
}


@pytest.mark.parametrize("name", list(BODY_ERRORS))
def test_body_error_while_the_app_reads(serve, name):
    """The body is streamed (larger than what is read ahead): the app's read raises an
    OSError subclass, the client gets a 400 or 413, never a 500, and the close."""
    tail, eof, status, exc_type = BODY_ERRORS[name]
    outcome = []
    server = serve(body_reading_app(outcome))
    if exc_type is errors.MaxSizeExceeded:
        server.max_request_body_size = 150_000
    code, body = refused_streaming(server, chunked(tail), eof)
    assert code == status, body
    assert len(outcome) == 1
    assert isinstance(outcome[0], exc_type)
    assert isinstance(outcome[0], OSError)
    assert str(outcome[0])


def refused_streaming(server, raw, eof):
    with socket.create_connection(server.bind_addr, timeout=10) as sock:
        sock.sendall(raw)
        if eof:
            sock.shutdown(socket.SHUT_WR)
        reader = ResponseReader(sock)
        status_line, _, body, _ = reader.read_response()
        assert reader.closed(5)
    return int(status_line.split()[1]), body


def test_truncated_content_length_body_while_the_app_reads(serve):
    outcome = []
    server = serve(body_reading_app(outcome))
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 300000\r\n\r\n" + b"a" * 200_000
    code, _ = refused_streaming(server, raw, eof=True)
    assert code == 400
    assert isinstance(outcome[0], errors.RequestBodyError)


def test_max_request_body_size_content_length_streamed(serve):
    """A large declared body over the limit is refused before the app runs."""
    outcome = []
    server = serve(body_reading_app(outcome))
    server.max_request_body_size = 100_000
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\n\r\n" + b"a" * 200_000
    code, _ = refused_streaming(server, raw, eof=False)
    assert code == 413
    assert outcome == []


def test_app_that_catches_the_body_error_answers_but_the_connection_closes(serve):
    """The framing is in doubt after a body error: whatever the app answers, no keep-alive."""
    caught = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except errors.RequestBodyError as exc:
            caught.append(exc)
        start_response("422 Unprocessable Content", [("Content-Type", "text/plain")])
        return [b"bad upload"]

    server = serve(app)
    raw = chunked(big_chunks(200_000) + b"zz\r\n") + get(b"/next")
    with socket.create_connection(server.bind_addr, timeout=10) as sock:
        sock.sendall(raw)
        reader = ResponseReader(sock)
        status_line, _, body, _ = reader.read_response()
        assert status_line.split()[1] == b"422"
        assert body == b"bad upload"
        assert reader.closed(5)
    assert len(caught) == 1


def test_error_classes_are_oserrors():
    assert issubclass(errors.RequestBodyError, OSError)
    assert issubclass(errors.MaxSizeExceeded, errors.RequestBodyError)
