"""Fixtures that run stogie servers on loopback for end-to-end tests over real sockets."""

import contextlib
import socket
import threading
import time

import pytest

from stogie import wsgi


@contextlib.contextmanager
def running(server):
    """Prepare ``server``, serve it in a thread, and stop it on exit."""
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(10)
        assert not thread.is_alive(), "serve() did not return after stop()"


@pytest.fixture
def serve():
    """``serve(app, **server_kwargs)`` starts a WSGI server on 127.0.0.1:0.

    Extra attributes can be set with ``attrs={...}`` before prepare().
    """
    stack = contextlib.ExitStack()

    def start(app, bind_addr=("127.0.0.1", 0), attrs=None, **kwargs):
        server = wsgi.Server(bind_addr, app, **kwargs)
        for name, value in (attrs or {}).items():
            setattr(server, name, value)
        return stack.enter_context(running(server))

    with stack:
        yield start


def raw_request(addr, data, timeout=5.0, shut_write=False):
    """Send raw bytes, return everything the server sends until it closes."""
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def hello_app(environ, start_response):
    """13 bytes with Content-Length."""
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
