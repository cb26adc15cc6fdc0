"""``stogie.testing``: its pytest fixtures (loaded the way a user's suite loads them) and
its helpers, used as a user of the package would."""

import http.client
import socket
import threading
import time
import uuid

import pytest

import stogie.server
import stogie.wsgi

# Loaded as a plugin, the way a user's suite loads cheroot.testing. (Importing the module
# here first would keep pytest from rewriting its asserts: the helpers come from a fixture.)
pytest_plugins = ["stogie.testing"]


@pytest.fixture
def testing():
    """The ``stogie.testing`` module, for its helpers."""
    import stogie.testing

    return stogie.testing


def test_wsgi_server_fixture(wsgi_server, testing):
    assert isinstance(wsgi_server, stogie.wsgi.Server)
    assert wsgi_server.ready
    host, port = wsgi_server.bind_addr
    assert host == "127.0.0.1" and port > 0
    client = testing.get_server_client(wsgi_server)
    status, headers, body = client.get("/")
    assert status == "200 OK"
    assert body == b"Hello world!"
    assert dict(headers)["Content-Length"] == "12"


def test_wsgi_server_fixture_app_can_be_swapped(wsgi_server, testing):
    def app(environ, start_response):
        body = environ["REQUEST_METHOD"].encode() + b" " + environ["wsgi.input"].read()
        start_response("201 Created", [("Content-Length", str(len(body)))])
        return [body]

    wsgi_server.wsgi_app = app
    with testing.get_server_client(wsgi_server) as client:
        assert client.post("/", b"payload")[::2] == ("201 Created", b"POST payload")
        assert client.put("/x", body=b"p")[::2] == ("201 Created", b"PUT p")
        assert client.request("/x", "DELETE")[::2] == ("201 Created", b"DELETE ")
        assert client.request("/x", method="PATCH", body="p")[::2] == ("201 Created", b"PATCH p")


def test_native_server_fixture(native_server, testing):
    assert isinstance(native_server, stogie.server.HTTPServer)
    assert not isinstance(native_server, stogie.wsgi.Server)
    status, _, body = testing.get_server_client(native_server).get("/anything")
    assert (status, body) == ("200 OK", b"Hello world!")


def test_thread_and_server_fixtures(thread_and_wsgi_server, thread_and_native_server):
    for thread, srv in (thread_and_wsgi_server, thread_and_native_server):
        assert isinstance(thread, threading.Thread) and thread.is_alive()
        assert srv.ready


def test_client_http10_request(wsgi_server, testing):
    client = testing.get_server_client(wsgi_server)
    status, headers, body = client.get("/", protocol="HTTP/1.0")
    assert (status, body) == ("200 OK", b"Hello world!")


def test_stogie_server_helper_stops_the_server(testing):
    with testing.stogie_server(stogie.wsgi.Server) as (thread, srv):
        addr = srv.bind_addr
        assert testing.get_server_client(srv).get("/")[0] == "200 OK"
    assert not thread.is_alive()
    assert srv.ready is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(addr, timeout=2).close()
    assert testing.cheroot_server is testing.stogie_server


def test_run_server_reraises_what_serve_raised(testing):
    srv = stogie.wsgi.Server(("127.0.0.1", 0), testing.hello_app)
    boom = RuntimeError("serve() failed")
    with pytest.raises(RuntimeError) as info:
        with testing.run_server(srv):
            srv.interrupt = boom
            deadline = time.monotonic() + 5
            while srv.ready and time.monotonic() < deadline:
                time.sleep(0.01)
    assert info.value is boom


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_app_interrupt_stops_the_server_but_not_the_tests(testing, interrupt):
    # An app raising KeyboardInterrupt or SystemExit stops the server, as in Cheroot; the
    # fixture's teardown must not re-raise it (it would end the whole pytest session).
    def app(environ, start_response):
        raise interrupt("stop now")

    with testing.cheroot_server(stogie.wsgi.Server, wsgi_app=app) as (thread, srv):
        with pytest.raises(http.client.RemoteDisconnected):
            testing.get_server_client(srv).get("/")
        thread.join(5)
        assert not thread.is_alive(), "serve() returned"
        assert isinstance(srv.interrupt, interrupt) and str(srv.interrupt) == "stop now"
        assert srv.ready is False


def test_client_takes_cheroots_arguments(wsgi_server, testing):
    # Cheroot's request(uri, method, headers, http_conn, protocol), on a connection of the
    # test's own.
    def app(environ, start_response):
        body = " ".join(
            (environ["REQUEST_METHOD"], environ["SERVER_PROTOCOL"], environ.get("HTTP_X_A", ""))
        ).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    wsgi_server.wsgi_app = app
    client = testing.get_server_client(wsgi_server)
    conn = client.get_connection()
    try:
        status, _, body = client.request(
            "/", "GET", [("X-A", "b")], http_conn=conn, protocol="HTTP/1.0"
        )
    finally:
        conn.close()
    assert (status, body) == ("200 OK", b"GET HTTP/1.0 b")
    assert client.get("/", headers={"X-A": "c"})[2] == b"GET HTTP/1.1 c"
    for name in ("SUCCESSFUL_SUBPROCESS_EXIT", "NO_INTERFACE", "config", "_get_conn_data"):
        assert hasattr(testing, name), name
    assert testing._get_conn_data(("0.0.0.0", 80)) == ("127.0.0.1", "0.0.0.0", 80)


def test_client_over_a_unix_socket(testing):
    path = f"/tmp/stogie-testing-{uuid.uuid4().hex[:12]}.sock"
    with testing.stogie_server(stogie.wsgi.Server, bind_addr=path) as (_, srv):
        client = testing.get_server_client(srv)
        assert client.get("/")[::2] == ("200 OK", b"Hello world!")
        assert client.get("/again")[::2] == ("200 OK", b"Hello world!")
        client.close()
