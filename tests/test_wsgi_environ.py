"""The WSGI environ as an application sees it, end to end over real sockets (PEP 3333 and
Cheroot's extra keys)."""

import socket
import sys

import pytest

from conftest import ResponseReader
from stogie import wsgi


def capturing_app(seen):
    """Records a copy of each environ, answers 200 with the PATH_INFO as body."""

    def app(environ, start_response):
        seen.append(dict(environ))
        body = environ["PATH_INFO"].encode("utf-8", "surrogateescape")
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


def fetch_environ(server, seen, raw):
    """Sends one raw request; returns (environ seen by the app, client socket address)."""
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        client = sock.getsockname()
        sock.sendall(raw)
        status, _, _, complete = ResponseReader(sock).read_response()
    assert status.split()[1] == b"200", status
    assert complete
    assert len(seen) == 1
    return seen.pop(), client


@pytest.fixture
def env_server(serve):
    seen = []
    server = serve(capturing_app(seen))
    return server, seen


def test_pep3333_and_cheroot_keys(env_server):
    server, seen = env_server
    env, client = fetch_environ(
        server,
        seen,
        b"GET /a/b?x=1&y=%20z HTTP/1.1\r\nHost: example.org:8080\r\nX-Custom: yes\r\n\r\n",
    )
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/a/b"
    assert env["QUERY_STRING"] == "x=1&y=%20z"
    assert "CONTENT_TYPE" not in env
    assert "CONTENT_LENGTH" not in env
    assert env["SERVER_NAME"] == server.server_name
    assert env["SERVER_PORT"] == str(server.bind_addr[1])
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_HOST"] == "example.org:8080"
    assert env["HTTP_X_CUSTOM"] == "yes"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    for attr in ("read", "readline", "readlines", "__iter__"):
        assert hasattr(env["wsgi.input"], attr)
    assert env["wsgi.errors"] is sys.stderr
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    # Cheroot's additions.
    assert env["REQUEST_URI"] == "/a/b?x=1&y=%20z"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client[1])
    assert env["SERVER_SOFTWARE"] == server.software
    assert env["SERVER_SOFTWARE"].startswith("Stogie/")
    assert env["ACTUAL_SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.file_wrapper"] is wsgi.file_wrapper
    # PEP 3333: CGI keys are native strings.
    for key, value in env.items():
        if "." not in key:
            assert type(key) is str and type(value) is str, (key, value)


def test_server_software_follows_the_attribute(serve):
    seen = []
    server = serve(capturing_app(seen), attrs={"software": "Custom/9"})
    env, _ = fetch_environ(server, seen, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["SERVER_SOFTWARE"] == "Custom/9"


def test_body_headers_become_content_keys(env_server):
    server, seen = env_server
    env, _ = fetch_environ(
        server,
        seen,
        b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 3\r\n\r\na=b",
    )
    assert env["REQUEST_METHOD"] == "POST"
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_http10_request(env_server):
    server, seen = env_server
    env, _ = fetch_environ(server, seen, b"GET /old HTTP/1.0\r\n\r\n")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["ACTUAL_SERVER_PROTOCOL"] == "HTTP/1.1"
    assert "HTTP_HOST" not in env


def test_absolute_form_target(env_server):
    server, seen = env_server
    env, _ = fetch_environ(
        server, seen, b"GET http://example.org/p/q?z=1 HTTP/1.1\r\nHost: example.org\r\n\r\n"
    )
    assert env["PATH_INFO"] == "/p/q"
    assert env["QUERY_STRING"] == "z=1"
    assert env["REQUEST_URI"] == "http://example.org/p/q?z=1"


@pytest.mark.parametrize(
    ("target", "path_info"),
    [
        (b"/a%20b/c", "/a b/c"),
        (b"/%41%42%43", "/ABC"),
        (b"/keep%2Fslash", "/keep%2Fslash"),
        (b"/keep%2fslash", "/keep%2Fslash"),
        (b"/caf%C3%A9", "/caf\xc3\xa9"),  # UTF-8 bytes, each as a latin-1 character
        (b"/%FF%00x", "/\xff\x00x"),
        (b"/bad%zz%4", "/bad%zz%4"),
        (b"/plus+sign", "/plus+sign"),
        (b"//double//slash", "//double//slash"),
        (b"/a/../b/./c", "/a/../b/./c"),
    ],
)
def test_path_info_is_percent_decoded_latin1(env_server, target, path_info):
    server, seen = env_server
    env, _ = fetch_environ(server, seen, b"GET " + target + b"?q HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["PATH_INFO"] == path_info
    assert env["REQUEST_URI"] == target.decode("latin-1") + "?q"


def test_query_string_is_raw(env_server):
    server, seen = env_server
    env, _ = fetch_environ(
        server, seen, b"GET /p?a=%20b&c=d+e%2F&f=%C3%A9&&g HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert env["QUERY_STRING"] == "a=%20b&c=d+e%2F&f=%C3%A9&&g"


def test_question_mark_in_query_string(env_server):
    server, seen = env_server
    env, _ = fetch_environ(server, seen, b"GET /p?a?b=/c HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["PATH_INFO"] == "/p"
    assert env["QUERY_STRING"] == "a?b=/c"


def test_empty_query_string(env_server):
    server, seen = env_server
    env, _ = fetch_environ(server, seen, b"GET /p? HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["QUERY_STRING"] == ""
    assert env["PATH_INFO"] == "/p"


def test_header_value_bytes_are_latin1(env_server):
    server, seen = env_server
    env, _ = fetch_environ(
        server, seen, b"GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\n\r\n"
    )
    assert env["HTTP_X_NAME"] == "caf\xc3\xa9"


def test_header_names_are_upper_cased(env_server):
    server, seen = env_server
    env, _ = fetch_environ(
        server, seen, b"GET / HTTP/1.1\r\nhost: x\r\nx-lower-case: 1\r\nX-UPPER: 2\r\n\r\n"
    )
    assert env["HTTP_HOST"] == "x"
    assert env["HTTP_X_LOWER_CASE"] == "1"
    assert env["HTTP_X_UPPER"] == "2"


def test_repeated_headers_are_joined(env_server):
    server, seen = env_server
    env, _ = fetch_environ(
        server,
        seen,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Dup: a\r\nAccept: text/html\r\nx-dup: b\r\n"
        b"X-Dup: c, d\r\nCookie: a=1\r\nCookie: b=2\r\nAccept: text/plain\r\n\r\n",
    )
    assert env["HTTP_X_DUP"] == "a, b, c, d"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_ACCEPT"] == "text/html, text/plain"
    assert env["HTTP_HOST"] == "x"


def test_repeated_headers_are_joined_past_the_first_sixteen(env_server):
    # The environ tells a repeated field by its key without a dict lookup for up to 16
    # fields, and by looking past that: both ways must join.
    server, seen = env_server
    fields = b"".join(b"X-F%d: %d\r\n" % (i, i) for i in range(20))
    env, _ = fetch_environ(
        server,
        seen,
        b"GET /plain HTTP/1.1\r\nHost: x\r\n" + fields + b"x-f3: again\r\nX-F19: more\r\n\r\n",
    )
    assert env["HTTP_X_F3"] == "3, again"
    assert env["HTTP_X_F19"] == "19, more"
    assert env["HTTP_X_F0"] == "0"
    assert env["REQUEST_URI"] == env["PATH_INFO"] == "/plain"


def test_underscore_header_names_are_dropped(env_server):
    server, seen = env_server
    env, _ = fetch_environ(
        server,
        seen,
        b"GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 1.2.3.4\r\n"
        b"X_Only_Underscore: evil\r\n\r\n",
    )
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    assert "HTTP_X_ONLY_UNDERSCORE" not in env
    assert not any("evil" in v or "6.6.6.6" in v for v in env.values() if isinstance(v, str))


def test_underscore_header_names_when_allowed(serve):
    seen = []
    server = serve(capturing_app(seen), attrs={"allow_underscore_headers": True})
    env, _ = fetch_environ(server, seen, b"GET / HTTP/1.1\r\nHost: x\r\nX_Under: 1\r\n\r\n")
    assert env["HTTP_X_UNDER"] == "1"


def test_each_request_gets_a_fresh_environ(env_server):
    server, seen = env_server
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET /one?a HTTP/1.1\r\nHost: x\r\nX-First: 1\r\n\r\n")
        assert reader.read_response()[2] == b"/one"
        sock.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.read_response()[2] == b"/two"
    first, second = seen
    assert first["HTTP_X_FIRST"] == "1"
    assert "HTTP_X_FIRST" not in second
    assert second["QUERY_STRING"] == ""
    assert first["REMOTE_PORT"] == second["REMOTE_PORT"]


def test_what_a_worker_keeps_between_requests_never_leaks_into_the_next(serve):
    # One worker keeps the last requests' header fields by position, PATH_INFO and the
    # connections' ports as strings, and the template holds GET, HTTP/1.1 and an empty
    # query: each request must still see exactly its own.
    seen = []
    server = serve(capturing_app(seen), numthreads=1, max=1)
    long_value = "v" * 600
    requests = [
        (b"GET /same HTTP/1.1\r\nHost: a\r\nX-V: one\r\n\r\n", {"HTTP_X_V": "one"}),
        (
            b"POST /same?q=1 HTTP/1.0\r\nHost: a\r\nX-V: two\r\nContent-Length: 0\r\n"
            b"Connection: keep-alive\r\n\r\n",
            {"HTTP_X_V": "two", "REQUEST_METHOD": "POST", "QUERY_STRING": "q=1"},
        ),
        (b"GET /other HTTP/1.1\r\nX-V: one\r\nHost: b\r\n\r\n", {"HTTP_HOST": "b"}),
        (
            b"GET /same HTTP/1.1\r\nHost: a\r\nX-V: " + long_value.encode() + b"\r\n\r\n",
            {"HTTP_X_V": long_value},
        ),
        (b"GET /same HTTP/1.1\r\nHost: a\r\nX-V: \r\n\r\n", {"HTTP_X_V": ""}),
        (b"GET /same HTTP/1.1\r\nHost: a\r\nX-V: \xe9\r\n\r\n", {"HTTP_X_V": "\xe9"}),
        (
            b"PUT /%C3%A9 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            {"REQUEST_METHOD": "PUT"},
        ),
        (b"GET /same HTTP/1.1\r\nHost: a\r\n\r\n", {}),
    ]
    defaults = {"REQUEST_METHOD": "GET", "QUERY_STRING": "", "HTTP_HOST": "a"}
    ports = []
    for _ in range(2):
        with socket.create_connection(server.bind_addr, timeout=5) as sock:
            ports.append(str(sock.getsockname()[1]))
            reader = ResponseReader(sock)
            for raw, _ in requests:
                sock.sendall(raw)
                assert reader.read_response()[0].split()[1] == b"200"
    assert len(seen) == 2 * len(requests)
    for i, env in enumerate(seen):
        raw, expected = requests[i % len(requests)]
        expected = {**defaults, **expected}
        protocol = "HTTP/1.0" if b"HTTP/1.0" in raw.split(b"\r\n")[0] else "HTTP/1.1"
        target = raw.split(b" ")[1].decode()
        assert env["SERVER_PROTOCOL"] == protocol
        assert env["REQUEST_URI"] == target
        assert env["PATH_INFO"] == target.split("?")[0].replace("%C3%A9", "\xc3\xa9")
        assert env["REMOTE_PORT"] == ports[i // len(requests)]
        for key, value in expected.items():
            assert env[key] == value, (i, key)
        if b"X-V" not in raw:
            assert "HTTP_X_V" not in env
        if b"Content-Length" not in raw:
            assert "CONTENT_LENGTH" not in env


@pytest.fixture
def u0_server(serve):
    seen = []
    server = serve(capturing_app(seen), attrs={"gateway": wsgi.Gateway_u0})
    return server, seen


def test_gateway_u0_decodes_utf8(u0_server):
    server, seen = u0_server
    env, _ = fetch_environ(
        server, seen, b"GET /caf%C3%A9/%E2%82%AC?q=%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert env["PATH_INFO"] == "/caf\u00e9/\u20ac"
    assert env["QUERY_STRING"] == "q=%C3%A9"
    assert env["wsgi.url_encoding"] == "utf-8"
    assert env["wsgi.version"] == ("u", 0)


def test_gateway_u0_falls_back_to_latin1(u0_server):
    server, seen = u0_server
    env, _ = fetch_environ(server, seen, b"GET /caf%E9/%FF?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["PATH_INFO"] == "/caf\xe9/\xff"
    assert env["QUERY_STRING"] == "x=1"
    assert env["wsgi.url_encoding"] == "ISO-8859-1"


def test_gateway_10_has_no_url_encoding(env_server):
    server, seen = env_server
    env, _ = fetch_environ(server, seen, b"GET /caf%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert "wsgi.url_encoding" not in env
    assert env["wsgi.version"] == (1, 0)
