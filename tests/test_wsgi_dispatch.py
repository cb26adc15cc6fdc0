"""Who answers a request: PathInfoDispatcher, CherryPyWSGIServer's list of apps, a native
Cheroot-style gateway, and the worker pool (growth, and 503 when its queue is full)."""

import socket
import threading
import time

import pytest

from conftest import ResponseReader, header, http_get, running
from stogie import server as stogie_server
from stogie import wsgi


def named(name):
    def app(environ, start_response):
        body = "%s|%s|%s" % (name, environ["SCRIPT_NAME"], environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body.encode()]

    return app


DISPATCH = [
    ("/", b"root||/"),
    ("/blog", b"blog|/blog|"),
    ("/blog/", b"blog|/blog|/"),
    ("/blog/post/1", b"blog|/blog|/post/1"),
    ("/blogger", b"root||/blogger"),
    ("/blog/admin", b"admin|/blog/admin|"),
    ("/blog/admin/x", b"admin|/blog/admin|/x"),
    ("/blog/administrator", b"blog|/blog|/administrator"),
    ("/other/page", b"root||/other/page"),
]


@pytest.mark.parametrize(("path", "body"), DISPATCH)
def test_path_info_dispatcher_dict(serve, path, body):
    d = wsgi.PathInfoDispatcher(
        {"/": named("root"), "/blog": named("blog"), "/blog/admin/": named("admin")}
    )
    server = serve(d)
    assert http_get(server.bind_addr, path) == (200, body)


@pytest.mark.parametrize(("path", "body"), DISPATCH)
def test_path_info_dispatcher_list(serve, path, body):
    d = wsgi.PathInfoDispatcher(
        [("/blog/admin", named("admin")), ("/", named("root")), ("/blog", named("blog"))]
    )
    server = serve(d)
    assert http_get(server.bind_addr, path) == (200, body)


@pytest.mark.parametrize("path", ["/", "/blogger", "/other", "/bl"])
def test_path_info_dispatcher_404(serve, path):
    server = serve(wsgi.PathInfoDispatcher({"/blog": named("blog"), "/api": named("api")}))
    status, body = http_get(server.bind_addr, path)
    assert status == 404
    assert body == b""


def test_path_info_dispatcher_keeps_the_outer_script_name():
    d = wsgi.WSGIPathInfoDispatcher({"/app": named("app")})
    seen = []
    env = {"SCRIPT_NAME": "/mount", "PATH_INFO": "/app/x"}
    body = d(env, lambda s, h: seen.append(s))
    assert body == [b"app|/mount/app|/x"]
    assert seen == ["200 OK"]
    assert env == {"SCRIPT_NAME": "/mount", "PATH_INFO": "/app/x"}, "the caller's environ changed"


def test_cherrypy_wsgi_server_with_a_list_of_apps():
    srv = wsgi.CherryPyWSGIServer(
        ("127.0.0.1", 0), [("/", named("root")), ("/blog", named("blog"))], numthreads=2
    )
    with running(srv):
        assert http_get(srv.bind_addr, "/blog/x") == (200, b"blog|/blog|/x")
        assert http_get(srv.bind_addr, "/blogger") == (200, b"root||/blogger")
        assert http_get(srv.bind_addr, "/") == (200, b"root||/")


def test_cherrypy_wsgi_server_with_one_app():
    srv = wsgi.CherryPyWSGIServer(("127.0.0.1", 0), named("only"))
    with running(srv):
        assert http_get(srv.bind_addr, "/x") == (200, b"only||/x")


# A Cheroot-style native gateway ----------------------------------------------------------


class EchoGateway(stogie_server.Gateway):
    """Answers with what the request looked like, through Cheroot's HTTPRequest API."""

    def respond(self):
        req = self.req
        body = req.rfile.read()
        text = b"\n".join(
            [
                req.method,
                req.uri,
                req.path,
                req.qs,
                req.request_protocol,
                req.inheaders.get(b"X-Test", b"-"),
                req.inheaders.get(b"Cookie", b"-"),
                body,
            ]
        )
        req.status = b"200 OK"
        req.outheaders.append((b"Content-Type", b"text/plain"))
        req.outheaders.append((b"Content-Length", str(len(text)).encode()))
        req.outheaders.append((b"X-Gateway", b"native"))
        req.send_headers()
        assert req.sent_headers
        req.write(text)


class CherryPyNativeGateway(stogie_server.Gateway):
    """What cherrypy._cpnative_server does: it says the headers are sent, then sends them."""

    def respond(self):
        req = self.req
        req.status = b"200 OK"
        req.outheaders.append((b"Content-Length", b"5"))
        if req.ready and not req.sent_headers:
            req.sent_headers = True
            req.send_headers()
        req.write(b"hello")


class StreamingGateway(stogie_server.Gateway):
    """No Content-Length: the engine frames the body; status and headers as str."""

    def respond(self):
        req = self.req
        req.status = "201 Made Here"
        req.outheaders = [("Content-Type", "text/plain")]
        req.write(b"one ")
        req.write(b"two")


class HeadersOnlyGateway(stogie_server.Gateway):
    def respond(self):
        self.req.status = b"204 No Content"
        self.req.ensure_headers_sent()
        self.req.ensure_headers_sent()


class FailingGateway(stogie_server.Gateway):
    def respond(self):
        raise RuntimeError("gateway failed")


def native_server(gateway):
    return stogie_server.HTTPServer(("127.0.0.1", 0), gateway=gateway, minthreads=2)


def test_native_gateway_request_and_response():
    srv = native_server(EchoGateway)
    with running(srv):
        with socket.create_connection(srv.bind_addr, timeout=5) as sock:
            reader = ResponseReader(sock)
            sock.sendall(
                b"POST /a%20b/c%2Fd?x=%20y HTTP/1.1\r\nHost: h\r\nx-test: 1\r\nX-Test: 2\r\n"
                b"Cookie: a=1\r\nCookie: b=2\r\nContent-Length: 4\r\n\r\nbody"
            )
            status, headers, body, complete = reader.read_response()
            assert status == b"HTTP/1.1 200 OK"
            assert header(headers, "X-Gateway") == ["native"]
            assert header(headers, "Server") == [srv.server_name]
            assert complete
            assert body.split(b"\n") == [
                b"POST",
                b"/a%20b/c%2Fd?x=%20y",
                b"/a b/c%2Fd",
                b"x=%20y",
                b"HTTP/1.1",
                b"1, 2",
                b"a=1; b=2",
                b"body",
            ]
            # Keep-alive works with a native gateway too.
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert reader.read_response()[2].split(b"\n")[:2] == [b"GET", b"/"]


def test_native_gateway_may_set_sent_headers_as_cherrypys_does():
    srv = native_server(CherryPyNativeGateway)
    with running(srv):
        with socket.create_connection(srv.bind_addr, timeout=5) as sock:
            reader = ResponseReader(sock)
            for _ in range(2):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                status, headers, body, complete = reader.read_response()
                assert status == b"HTTP/1.1 200 OK"
                assert header(headers, "Content-Length") == ["5"]
                assert body == b"hello" and complete


def test_native_gateway_streams_without_content_length():
    srv = native_server(StreamingGateway)
    with running(srv):
        with socket.create_connection(srv.bind_addr, timeout=5) as sock:
            reader = ResponseReader(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            status, headers, body, complete = reader.read_response()
            assert status == b"HTTP/1.1 201 Made Here"
            assert header(headers, "Transfer-Encoding") == ["chunked"]
            assert body == b"one two" and complete


def test_native_gateway_headers_only():
    srv = native_server(HeadersOnlyGateway)
    with running(srv):
        with socket.create_connection(srv.bind_addr, timeout=5) as sock:
            reader = ResponseReader(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
            for _ in range(2):
                status, _, body, _ = reader.read_response()
                assert status == b"HTTP/1.1 204 No Content"


def test_native_gateway_failure_is_500(caplog):
    srv = native_server(FailingGateway)
    with running(srv):
        with caplog.at_level("ERROR", logger="stogie.error"):
            status, _ = http_get(srv.bind_addr, "/")
    assert status == 500
    assert any(r.exc_info and "gateway failed" in str(r.exc_info[1]) for r in caplog.records)


def test_native_gateway_sees_connection_details():
    seen = []

    class Inspect(stogie_server.Gateway):
        def respond(self):
            req = self.req
            seen.append((req.conn.remote_addr, req.conn.remote_port, req.scheme, req.server))
            req.status = b"200 OK"
            req.outheaders = [(b"Content-Length", b"0")]
            req.ensure_headers_sent()

    srv = native_server(Inspect)
    with running(srv):
        with socket.create_connection(srv.bind_addr, timeout=5) as sock:
            port = sock.getsockname()[1]
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert ResponseReader(sock).read_response()[0] == b"HTTP/1.1 200 OK"
    assert seen == [("127.0.0.1", port, b"http", srv)]


# The worker pool -----------------------------------------------------------------------


def test_pool_grows_up_to_max(serve):
    def app(environ, start_response):
        time.sleep(0.5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [threading.current_thread().name.encode()]

    server = serve(app, numthreads=2, max=8)
    results = []

    def client():
        results.append(http_get(server.bind_addr, "/"))

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - started
    assert [s for s, _ in results] == [200] * 8
    # Two threads would take 4 rounds of 0.5 s; a grown pool answers all at once.
    assert elapsed < 1.5, elapsed
    assert server.requests.threads <= 8


def test_pool_respects_max(serve):
    running_now = []
    peak = []
    lock = threading.Lock()

    def app(environ, start_response):
        with lock:
            running_now.append(1)
            peak.append(len(running_now))
        time.sleep(0.2)
        with lock:
            running_now.pop()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = serve(app, numthreads=1, max=3)
    threads = [threading.Thread(target=http_get, args=(server.bind_addr, "/")) for _ in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(peak) == 9
    assert max(peak) == 3


def test_pool_shrinks_back_to_numthreads_when_idle(serve):
    def app(environ, start_response):
        time.sleep(0.3)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = serve(app, numthreads=2, max=6)
    server.requests.idle_timeout = 0.3
    assert server.requests.threads == 2
    threads = [threading.Thread(target=http_get, args=(server.bind_addr, "/")) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    grown = server.requests.threads
    assert grown > 2, grown
    deadline = time.monotonic() + 5
    while server.requests.threads > 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.requests.threads == 2, f"grew to {grown}, still {server.requests.threads}"
    # The pool still serves, and grows again when needed.
    assert http_get(server.bind_addr, "/") == (200, b"ok")


def test_quick_responses_are_not_held_behind_a_slow_request(serve):
    """A worker with requests queued holds the I/O thread's wakes for quick responses and
    sends them together; a slow request after quick ones must not hold theirs until it
    ends (the pool's monitor lets them go)."""
    blocking = threading.Event()

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/block":
            blocking.set()
            time.sleep(0.2)
        elif path == "/slow":
            time.sleep(1.0)
        else:
            # About 100 us of work: the kind of request whose wakes are held.
            end = time.perf_counter() + 0.0001
            while time.perf_counter() < end:
                pass
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    def send(sock, path):
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())

    server = serve(app, numthreads=1, max=1)
    # One worker: it is kept busy while the queue fills in this order, quick ones first,
    # then the slow one, then more behind it (a pause between the groups keeps the order).
    groups = [["/quick"] * 6, ["/slow"], ["/quick"] * 2]
    blocker = socket.create_connection(server.bind_addr, timeout=5)
    socks = [[socket.create_connection(server.bind_addr, timeout=5) for _ in g] for g in groups]
    try:
        send(blocker, "/block")
        assert blocking.wait(5)
        for group, conns in zip(groups, socks, strict=True):
            for sock, path in zip(conns, group, strict=True):
                send(sock, path)
            time.sleep(0.03)
        started = time.monotonic()
        assert ResponseReader(blocker).read_response()[2] == b"ok"
        for sock in socks[0]:
            status, _, body, _ = ResponseReader(sock).read_response()
            assert (status, body) == (b"HTTP/1.1 200 OK", b"ok")
        # Answered right after the blocker, long before the slow request ends.
        assert time.monotonic() - started < 0.5
        for sock in socks[1] + socks[2]:
            status, _, body, _ = ResponseReader(sock).read_response()
            assert (status, body) == (b"HTTP/1.1 200 OK", b"ok")
    finally:
        blocker.close()
        for sock in (s for conns in socks for s in conns):
            sock.close()


def test_full_queue_gets_503(serve):
    entered = threading.Event()
    release = threading.Event()

    def app(environ, start_response):
        entered.set()
        assert release.wait(8)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served"]

    server = serve(app, numthreads=1, max=1, accepted_queue_size=1, accepted_queue_timeout=0.2)
    results = {}

    def client(name):
        results[name] = http_get(server.bind_addr, "/")

    first = threading.Thread(target=client, args=("first",))
    first.start()
    assert entered.wait(5)
    queued = threading.Thread(target=client, args=("queued",))
    queued.start()
    time.sleep(0.1)  # the second request waits in the queue
    started = time.monotonic()
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body, complete = ResponseReader(sock).read_response()
    waited = time.monotonic() - started
    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert header(headers, "Content-Type")[0].startswith("text/plain")
    assert complete and body
    assert 0.15 < waited < 2
    assert not release.is_set()
    release.set()
    first.join(5)
    queued.join(5)
    assert results == {"first": (200, b"served"), "queued": (200, b"served")}


def test_native_gateway_simple_response():
    class NotFound(stogie_server.Gateway):
        def respond(self):
            self.req.simple_response("404 Not Found", "nothing at %s" % self.req.path.decode())

    srv = native_server(NotFound)
    with running(srv):
        with socket.create_connection(srv.bind_addr, timeout=5) as sock:
            reader = ResponseReader(sock)
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
            status, headers, body, complete = reader.read_response()
    assert status == b"HTTP/1.1 404 Not Found"
    assert header(headers, "Content-Type") == ["text/plain"]
    assert body == b"nothing at /x" and complete


def test_wsgi_gateway_subclass_runs_in_python(serve):
    """Cheroot apps subclass Gateway_10 to add environ keys; the Python gateway runs them."""

    class Extra(wsgi.Gateway_10):
        def get_environ(self):
            env = super().get_environ()
            env["extra.key"] = "added"
            return env

    def app(environ, start_response):
        data = environ["wsgi.input"].read()
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"w;")
        return [
            ";".join(
                [
                    environ["extra.key"],
                    environ["PATH_INFO"],
                    environ["QUERY_STRING"],
                    environ.get("HTTP_COOKIE", "-"),
                    environ.get("CONTENT_LENGTH", "-"),
                    environ["SERVER_PORT"],
                ]
            ).encode()
            + b";"
            + data
        ]

    server = serve(app, attrs={"gateway": Extra})
    with socket.create_connection(server.bind_addr, timeout=5) as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            b"POST /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: b=2\r\n"
            b"Content-Length: 3\r\n\r\nabc"
        )
        status, headers, body, complete = reader.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert complete
        port = server.bind_addr[1]
        assert body == b"w;added;/a b;x=1;a=1; b=2;3;%d;abc" % port
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert reader.read_response()[2].startswith(b"w;added;/;")


def _environ_dump_gateway(base):
    """The gateway Cheroot's users write to show a request: its environ as JSON (without the
    two file objects), with the keys' value types."""
    import json

    class Dump(base):
        def respond(self):
            env = self.get_environ()
            env.pop("wsgi.errors")
            env.pop("wsgi.input")
            body = json.dumps(
                {"environ": env, "types": {k: type(v).__name__ for k, v in env.items()}}
            ).encode()
            self.start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            self.write(body)

    return Dump


def test_native_gateway_environ_has_cheroots_keys_and_types():
    """Gateway_10.get_environ() holds exactly what Cheroot's does, so that a custom gateway that
    dumps it as JSON works (wsgi.file_wrapper, a class, is the app's alone); the same gateway
    is served by Cheroot itself to compare."""
    import json

    cheroot_server = pytest.importorskip("cheroot.server")
    cheroot_wsgi = pytest.importorskip("cheroot.wsgi")

    def fetch(server_class, base):
        srv = server_class(("127.0.0.1", 0), gateway=_environ_dump_gateway(base), minthreads=2)
        with running(srv):
            with socket.create_connection(srv.bind_addr, timeout=5) as sock:
                reader = ResponseReader(sock)
                sock.sendall(
                    b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: 2\r\n\r\nab"
                )
                status, _, body, complete = reader.read_response()
        assert status == b"HTTP/1.1 200 OK" and complete
        return json.loads(body)

    ours = fetch(stogie_server.HTTPServer, wsgi.Gateway_10)
    theirs = fetch(cheroot_server.HTTPServer, cheroot_wsgi.Gateway_10)
    assert "wsgi.file_wrapper" not in ours["environ"]
    assert ours["types"] == theirs["types"]
    for key in ("PATH_INFO", "QUERY_STRING", "REQUEST_METHOD", "CONTENT_TYPE", "HTTP_X_A"):
        assert ours["environ"][key] == theirs["environ"][key]


def test_wsgi_gateway_subclass_still_gives_the_app_the_file_wrapper(serve):
    """A Gateway_10 subclass runs the app in Python: the app still gets wsgi.file_wrapper,
    and a file it wraps is sent."""

    class Extra(wsgi.Gateway_10):
        def get_environ(self):
            env = super().get_environ()
            assert "wsgi.file_wrapper" not in env
            return env

    def app(environ, start_response):
        import io

        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"wrapped file"), 4)

    server = serve(app, attrs={"gateway": Extra})
    assert http_get(server.bind_addr, "/") == (200, b"wrapped file")
