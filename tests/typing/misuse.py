"""Misuses of stogie's API that type checkers must reject: proof that the types are real.

Type-checked, never run: ``tests/typing/check.py`` runs ``mypy --strict`` on it and requires
exactly the errors written after ``# expect:`` (the mypy error code, then words of the
message), on those lines and no others; pyright must report an error on each of those lines
and no others. Were the API typed ``Any`` anywhere these go through, mypy would miss them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stogie import errors, server, testing, wsgi
from stogie.ssl.builtin import BuiltinSSLAdapter
from stogie.systemd import listen_fds

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [])
    return [b""]


def text_app(environ: WSGIEnvironment, start_response: StartResponse) -> str:
    return "not an iterable of bytes"


class BadGateway(server.Gateway):
    def respond(self) -> None:
        self.req.write("text, not bytes")  # expect: arg-type "str" "bytes"


def constructors() -> None:
    wsgi.Server(("0.0.0.0", "8080"), app)  # expect: arg-type "tuple[str, str]"
    wsgi.Server(("0.0.0.0", 8080), "myapp:app")  # expect: arg-type "str"
    wsgi.Server(("0.0.0.0", 8080), text_app)  # expect: arg-type "StartResponse], str]"
    wsgi.Server(("0.0.0.0", 8080), app, numthreads="10")  # expect: arg-type "numthreads"
    wsgi.Server(("0.0.0.0", 8080), app, worker=4)  # expect: call-arg "worker"
    server.HTTPServer(("0.0.0.0", 8080), app)  # expect: arg-type "type[Gateway]"
    wsgi.PathInfoDispatcher({"/": "app"})  # expect: dict-item "str"
    BuiltinSSLAdapter("cert.pem")  # expect: call-arg "private_key"


def attributes(srv: wsgi.Server) -> None:
    print(srv.bind_addr[1])  # expect: index "not indexable"
    srv.numthreads = "ten"  # expect: assignment "str" "int"
    srv.numthread = 10  # expect: attr-defined "numthread"
    srv.timeout = "10s"  # expect: assignment "str" "float"
    srv.requests.min = None  # expect: assignment "None" "int"
    srv.ssl_adapter = "builtin"  # expect: assignment "str" "Adapter | None"
    srv.wsgi_app = text_app  # expect: assignment "StartResponse], str]"
    srv.gateway = app  # expect: assignment "type[Gateway]"
    srv.bind_addr = ("::", "80")  # expect: assignment "tuple[str, str]"
    srv.error_log(level="ERROR")  # expect: arg-type "level"
    srv.stats["Requests"] = srv.runtime().upper()  # expect: attr-defined "upper"


def helpers() -> None:
    testing.get_server_client(app)  # expect: arg-type "get_server_client"
    with testing.cheroot_server(wsgi.Server) as (_, srv):
        srv.numthreads = 2.5  # expect: assignment "float" "int"
    client = testing.get_server_client(srv)
    status, headers = client.get("/")  # expect: misc "unpack"
    errors.plat_specific_errors(32)  # expect: arg-type "int"
    listen_fds()[0] + 1  # expect: operator "__add__" "tuple"
