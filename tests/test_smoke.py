"""The basics: a WSGI app answers over a real socket, keep-alive works, stop() is clean."""

import http.client

from conftest import hello_app, raw_request


def test_hello(serve):
    server = serve(hello_app)
    conn = http.client.HTTPConnection(*server.bind_addr, timeout=5)
    for _ in range(3):
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == b"Hello, World!"
        assert resp.getheader("Server") == server.server_name
        assert resp.getheader("Date")
    conn.close()


def test_raw_http10_closes(serve):
    server = serve(hello_app)
    out = raw_request(server.bind_addr, b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.0 200 OK\r\n")
    assert out.endswith(b"\r\n\r\nHello, World!")


def test_bad_request_line_is_400_text(serve):
    server = serve(hello_app)
    out = raw_request(server.bind_addr, b"GET / HTTP/1.1\nHost: x\n\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Content-Type: text/plain" in head
    assert body == b"HTTP requires CRLF terminators"
