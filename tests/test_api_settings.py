"""Settings changed on a running server, the TLS placeholder, and Cheroot's ``stats``."""

import http.client
import socket
import time

import pytest

from conftest import hello_app, plain_signature, raw_request, running
from stogie import server, wsgi
from stogie.ssl.builtin import BuiltinSSLAdapter


def request(addr, method="GET", path="/", body=None, headers=None, conn=None):
    """One request: (status, headers, body, status line protocol)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(*addr, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        version = {10: "HTTP/1.0", 11: "HTTP/1.1"}[resp.version]
        return resp.status, resp, resp.read(), version
    finally:
        if own:
            conn.close()


def text_app(text):
    data = text.encode()

    def app(environ, start_response):
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))]
        )
        return [data]

    return app


def echo_app(environ, start_response):
    """Echoes the request body and a few environ values."""
    body = environ["wsgi.input"].read()
    extra = "|".join(
        [
            environ["SERVER_NAME"],
            environ.get("ACTUAL_SERVER_PROTOCOL", ""),
            environ["SERVER_SOFTWARE"],
        ]
    )
    out = body + b"|" + extra.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


# --- live settings -------------------------------------------------------------------------


def test_wsgi_app_swapped_while_running(serve):
    srv = serve(text_app("first"))
    conn = http.client.HTTPConnection(*srv.bind_addr, timeout=5)
    try:
        assert request(None, conn=conn)[2] == b"first"
        srv.wsgi_app = text_app("second")
        # the next request, even on the same kept-alive connection, sees the new app
        assert request(None, conn=conn)[2] == b"second"
    finally:
        conn.close()
    assert request(srv.bind_addr)[2] == b"second"


def test_timeout_changed_while_running(serve):
    srv = serve(hello_app, timeout=10)
    srv.timeout = 1
    with socket.create_connection(srv.bind_addr, timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server, well before 5 s
        elapsed = time.monotonic() - started
    assert 0.8 <= elapsed < 3


def test_max_request_body_size_changed_while_running(serve):
    srv = serve(echo_app)
    assert request(srv.bind_addr, "POST", body=b"x" * 100)[0] == 200
    srv.max_request_body_size = 10
    status, _, body, _ = request(srv.bind_addr, "POST", body=b"x" * 100)
    assert status == 413
    assert request(srv.bind_addr, "POST", body=b"y" * 10)[2].startswith(b"yyyyyyyyyy|")
    srv.max_request_body_size = 0  # back to no limit
    assert request(srv.bind_addr, "POST", body=b"x" * 1000)[0] == 200


def test_max_request_body_size_applies_to_chunked_bodies(serve):
    srv = serve(echo_app)
    srv.max_request_body_size = 10
    chunked = b"14\r\n" + b"z" * 20 + b"\r\n0\r\n\r\n"
    out = raw_request(
        srv.bind_addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
    )
    assert out.startswith(b"HTTP/1.1 413 "), out


def test_max_request_header_size_changed_while_running(serve):
    srv = serve(hello_app)
    big = {"X-Big": "a" * 2000}
    assert request(srv.bind_addr, headers=big)[0] == 200
    srv.max_request_header_size = 500
    assert request(srv.bind_addr, headers=big)[0] in (413, 431)
    assert request(srv.bind_addr)[0] == 200  # a small head still passes
    srv.max_request_header_size = 0
    assert request(srv.bind_addr, headers=big)[0] == 200


def test_server_name_changed_while_running(serve):
    srv = serve(echo_app, server_name="first.example")
    status, resp, body, _ = request(srv.bind_addr)
    assert resp.getheader("Server") == "first.example"
    assert body.split(b"|")[1] == b"first.example"
    srv.server_name = "second.example"
    status, resp, body, _ = request(srv.bind_addr)
    assert resp.getheader("Server") == "second.example"
    assert body.split(b"|")[1] == b"second.example"


def test_protocol_changed_while_running(serve):
    srv = serve(echo_app)
    status, _, body, version = request(srv.bind_addr)
    assert (status, version) == (200, "HTTP/1.1")
    assert body.split(b"|")[2] == b"HTTP/1.1"
    srv.protocol = "HTTP/1.0"
    out = raw_request(srv.bind_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.0 200 OK\r\n"), out
    assert out.split(b"\r\n\r\n", 1)[1].split(b"|")[2] == b"HTTP/1.0"


def test_software_changed_while_running(serve):
    srv = serve(echo_app)
    assert request(srv.bind_addr)[2].split(b"|")[3] == b"%s Server" % srv.version.encode()
    srv.software = "Custom/9"
    assert request(srv.bind_addr)[2].split(b"|")[3] == b"Custom/9"


def test_numthreads_is_live():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app, numthreads=2)
    with running(srv):
        assert srv.requests.threads >= 2
        srv.numthreads = 5
        assert srv.requests.min == 5
        deadline = time.monotonic() + 3
        while srv.requests.threads < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.requests.threads >= 5
        assert request(srv.bind_addr)[0] == 200


# --- TLS -----------------------------------------------------------------------------------


def test_builtin_ssl_adapter_signature():
    sig = str(plain_signature(BuiltinSSLAdapter))
    assert sig == (
        "(certificate, private_key, certificate_chain=None, ciphers=None, *,"
        " private_key_password=None)"
    )
    assert server.get_ssl_adapter_class("builtin") is BuiltinSSLAdapter


# --- stats ---------------------------------------------------------------------------------


# What numbers() gives right after the stats are enabled (or enabled again after
# clear_stats()): nothing counted yet.
ZERO_STATS = {
    "Accepts": 0,
    "Requests": 0,
    "Bytes Read": 0,
    "Bytes Written": 0,
    "Work Time": 0,
}


def numbers(stats):
    return {
        "Accepts": stats["Accepts"],
        "Requests": stats["Requests"](stats),
        "Bytes Read": stats["Bytes Read"](stats),
        "Bytes Written": stats["Bytes Written"](stats),
        "Work Time": stats["Work Time"](stats),
    }


def slow_hello(environ, start_response):
    time.sleep(0.02)
    return hello_app(environ, start_response)


def test_stats_keys_are_cheroots(serve):
    srv = serve(hello_app)
    keys = {
        "Enabled",
        "Bind Address",
        "Run time",
        "Accepts",
        "Accepts/sec",
        "Queue",
        "Threads",
        "Threads Idle",
        "Socket Errors",
        "Requests",
        "Bytes Read",
        "Bytes Written",
        "Work Time",
        "Read Throughput",
        "Write Throughput",
        "Worker Threads",
    }
    assert set(srv.stats) == keys
    for key in keys - {"Enabled", "Accepts", "Socket Errors", "Worker Threads"}:
        assert callable(srv.stats[key]), key
    assert srv.stats["Enabled"] is False
    assert srv.stats["Bind Address"](srv.stats) == repr(srv.bind_addr)
    # Cheroot's lambdas say -1 while stats are off
    assert srv.stats["Requests"](srv.stats) == -1
    assert srv.stats["Run time"](srv.stats) == -1


def test_stats_count_requests(serve):
    srv = serve(slow_hello)
    srv.stats["Enabled"] = True
    assert numbers(srv.stats) == ZERO_STATS
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_request(srv.bind_addr, req + last)  # two requests on one connection
    assert out.count(b"200 OK") == 2
    out2 = raw_request(srv.bind_addr, last)
    n = numbers(srv.stats)
    assert n["Accepts"] == 2
    assert n["Requests"] == 3
    assert n["Bytes Read"] == len(req) + 2 * len(last)
    assert n["Bytes Written"] == len(out) + len(out2)
    assert 0.05 <= n["Work Time"] < 5
    assert srv.stats["Run time"](srv.stats) > 0
    assert srv.stats["Accepts/sec"](srv.stats) > 0
    assert srv.stats["Read Throughput"](srv.stats) > 0
    assert srv.stats["Write Throughput"](srv.stats) > 0
    assert srv.stats["Threads"](srv.stats) >= 1


def test_stats_do_not_move_while_disabled(serve):
    srv = serve(slow_hello)
    for _ in range(3):
        assert request(srv.bind_addr)[0] == 200
    assert srv.stats["Requests"](srv.stats) == -1
    srv.stats["Enabled"] = True
    assert numbers(srv.stats) == ZERO_STATS
    assert request(srv.bind_addr)[0] == 200
    assert numbers(srv.stats)["Requests"] == 1
    srv.stats["Enabled"] = False
    assert request(srv.bind_addr)[0] == 200
    srv.stats["Enabled"] = True
    n = numbers(srv.stats)
    assert (n["Accepts"], n["Requests"]) == (1, 1)


def test_clear_stats(serve):
    srv = serve(slow_hello)
    srv.stats["Enabled"] = True
    assert request(srv.bind_addr)[0] == 200
    assert numbers(srv.stats)["Requests"] == 1
    srv.clear_stats()
    # Cheroot's clear_stats() starts over, disabled
    assert srv.stats["Enabled"] is False
    assert srv.stats["Requests"](srv.stats) == -1
    assert request(srv.bind_addr)[0] == 200  # not counted: disabled
    srv.stats["Enabled"] = True
    assert numbers(srv.stats) == ZERO_STATS
    assert request(srv.bind_addr)[0] == 200
    assert numbers(srv.stats)["Requests"] == 1


def test_stats_survive_stop(serve):
    srv = serve(hello_app)
    srv.stats["Enabled"] = True
    assert request(srv.bind_addr)[0] == 200
    srv.stop()
    assert numbers(srv.stats)["Requests"] == 1


def test_runtime_increases_while_serving():
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    assert srv.runtime() == 0
    with running(srv):
        first = srv.runtime()
        time.sleep(0.2)
        second = srv.runtime()
        assert second - first >= 0.15
    stopped = srv.runtime()
    assert stopped >= second
    time.sleep(0.1)
    assert srv.runtime() == stopped  # the clock stops with the server


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("server_name", "evil\r\nSet-Cookie: x=1"),
        ("server_name", "nul\x00"),
        ("protocol", "HTTP/2"),
    ],
)
def test_bad_header_settings_are_refused(serve, name, value):
    server = serve(hello_app)
    before = getattr(server, name)
    with pytest.raises(ValueError):
        setattr(server, name, value)
    assert getattr(server, name) == before
    out = raw_request(server.bind_addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Set-Cookie" not in out
