"""The benchmark's WSGI applications, one callable per workload.

Every server under test imports this module and serves one of these callables, so that all of
them run exactly the same Python code. ``flask_app`` is built only when Flask is installed.
"""

import time

HELLO = b"Hello, World!"
BIG = b"x" * (64 * 1024)
CHUNK = b"y" * 1024
CHUNKS = 100


def hello(environ, start_response):
    """13 bytes with Content-Length."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def big(environ, start_response):
    """A 64 KiB body with Content-Length."""
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG)))],
    )
    return [BIG]


def echo(environ, start_response):
    """Sends back the request body, read with ``wsgi.input.read(n)``."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _chunks():
    for _ in range(CHUNKS):
        yield CHUNK


def stream(environ, start_response):
    """A generator of 100 chunks of 1 KiB, without Content-Length."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return _chunks()


def sleep(environ, start_response):
    """Blocking I/O: 10 ms of ``time.sleep``, then a small body."""
    time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def _make_flask_app():
    try:
        from flask import Flask, jsonify
    except ImportError:
        return None
    app = Flask(__name__)

    @app.route("/json")
    def json_route():
        return jsonify(message="Hello, World!")

    return app


flask_app = _make_flask_app()
