"""A program that uses stogie's public API the way its README and Cheroot's documentation do.

Type-checked, never run: ``tests/typing/check.py`` runs ``mypy --strict`` (and pyright) on it
against the installed package, and it must pass. Each part is what a user writes after
changing ``cheroot`` to ``stogie`` in the imports, or what stogie adds.
"""

from __future__ import annotations

import argparse
import logging
import ssl
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL

from stogie import __version__, errors, server, testing, wsgi
from stogie.cli import Application, GatewayYo, main, parse_wsgi_bind_addr
from stogie.server import Gateway, HTTPRequest, HTTPServer, get_ssl_adapter_class
from stogie.ssl import Adapter, TLSError
from stogie.ssl.builtin import BuiltinSSLAdapter
from stogie.ssl.pyopenssl import pyOpenSSLAdapter
from stogie.systemd import Notifier, listen_fds
from stogie.testing import get_server_client

if TYPE_CHECKING:
    # What typeshed names the WSGI types (wsgiref.types from Python 3.11 on).
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


# --- serving a WSGI application (the README) -----------------------------------------------


def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello world!"]


def blog(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path: str = environ["PATH_INFO"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield path.encode()


def serve_readme() -> None:
    server = wsgi.Server(("0.0.0.0", 8070), app)  # Cheroot's signature and defaults
    server.start()


def serve_in_steps() -> str:
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=4, max=8, timeout=2.5)
    server.prepare()
    addr = server.bind_addr
    if isinstance(addr, tuple):
        host, port = addr
        url = f"http://{host}:{port + 0}/"
    else:
        url = repr(addr)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    server.stop()
    return url


def settings() -> wsgi.Server:
    server = wsgi.WSGIServer(
        "/run/app.sock",
        app,
        server_name="example",
        request_queue_size=128,
        shutdown_timeout=1,
        workers=2,
        extra_bind_addrs=[("127.0.0.1", 8081), "@abstract"],
        max_requests=1000,
        max_worker_memory=512.5,
    )
    server.numthreads = 20
    server.requests.max = 40
    server.timeout = 0.5
    server.max_request_body_size = 10 * 2**20
    server.protocol = "HTTP/1.0"
    server.peercreds_enabled = True
    server.access_log = "-"
    server.forwarded_allow_ips = ["10.0.0.0/8", "127.0.0.1"]
    server.metrics_bind = ("127.0.0.1", 9100)
    server.wsgi_app = blog  # may change while serving
    server.gateway = wsgi.Gateway_u0
    for fd, _name in listen_fds():  # socket activation
        server.extra_bind_addrs = [*server.extra_bind_addrs, fd]
    return server


def statistics(server: wsgi.Server) -> float:
    server.stats["Enabled"] = True
    requests: int = server.stats["Requests"](server.stats)
    threads = server.requests.threads + server.requests.idle + server.requests.qsize
    logging.info("%s requests, %s threads, %s", requests, threads, server.bound_addrs)
    server.clear_stats()
    return server.runtime()


def interrupted(server: HTTPServer) -> BaseException | None:
    try:
        server.safe_start()
    except KeyboardInterrupt:
        pass
    if server.interrupt is not None:
        server.error_log(f"stopped by {server.interrupt!r}", level=logging.WARNING)
    return server.interrupt


# --- several applications: PathInfoDispatcher ----------------------------------------------


def dispatch() -> wsgi.Server:
    path_map = {"/": app, "/blog": blog}
    d = wsgi.PathInfoDispatcher(path_map)
    pairs = wsgi.WSGIPathInfoDispatcher([("/", app), ("/blog", blog)])
    return wsgi.Server(("0.0.0.0", 8070), d if pairs.apps else pairs)


def cherrypy_style() -> wsgi.CherryPyWSGIServer:
    server = wsgi.CherryPyWSGIServer(("0.0.0.0", 8070), [("/", app), ("/blog", blog)])
    server.ssl_certificate = "cert.pem"
    server.ssl_private_key = "key.pem"
    return server


# --- a native gateway, as Cheroot's docs show ------------------------------------------------


class HelloGateway(Gateway):
    def respond(self) -> None:
        req: HTTPRequest = self.req
        body = b"Hello from " + req.path + b" to " + req.inheaders.get(b"Host", b"?")
        req.status = b"200 OK"
        req.outheaders.append((b"Content-Type", b"text/plain"))
        req.outheaders.append(("Content-Length", str(len(body))))
        if req.conn.remote_addr is not None and req.method == b"GET":
            req.ensure_headers_sent()
        req.write(body)


class EchoGateway(wsgi.Gateway_10):
    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        env["X_ECHO"] = self.req.qs.decode("ascii")
        return env


def native() -> HTTPServer:
    srv = server.HTTPServer(bind_addr=("127.0.0.1", 0), gateway=HelloGateway, minthreads=2)
    srv.gateway = EchoGateway
    versions = wsgi.Gateway.gateway_map()
    assert versions[(1, 0)] is wsgi.Gateway_10
    return srv


# --- HTTPS: the adapters -----------------------------------------------------------------------


def builtin_tls(server: HTTPServer) -> None:
    adapter = BuiltinSSLAdapter("cert.pem", "key.pem", "chain.pem")
    adapter.context.load_verify_locations(cafile="ca.pem")
    adapter.context.verify_mode = ssl.CERT_REQUIRED
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_3
    server.ssl_adapter = adapter
    encrypted = BuiltinSSLAdapter("cert.pem", "key.pem", private_key_password=lambda: "secret")
    server.ssl_adapter = encrypted
    try:
        server.reload_tls()
    except TLSError as exc:
        server.error_log(str(exc))


def pyopenssl_tls(server: HTTPServer) -> None:
    adapter = pyOpenSSLAdapter("cert.pem", "key.pem", "chain.pem")
    adapter.context = adapter.get_context()
    adapter.context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    adapter.context.load_verify_locations("ca.pem")
    server.ssl_adapter = adapter


def adapter_by_name(server: HTTPServer, name: str = "builtin") -> Adapter:
    adapter_class = get_ssl_adapter_class(name)
    adapter = adapter_class("cert.pem", "key.pem", ciphers="ECDHE+AESGCM")
    server.ssl_adapter = adapter
    return adapter


# --- errors ---------------------------------------------------------------------------------


def ignorable(exc: OSError) -> bool:
    codes = errors.plat_specific_errors("EPIPE", "ECONNRESET")
    return (
        exc.errno in codes
        or exc.errno in errors.socket_errors_to_ignore
        or isinstance(exc, errors.acceptable_sock_shutdown_exceptions)
    )


def too_big(exc: Exception) -> bool:
    return isinstance(exc, (errors.MaxSizeExceeded, errors.NoSSLError, errors.FatalSSLAlert))


# --- testing's helpers ----------------------------------------------------------------------


pytest_plugins = ["stogie.testing"]


def test_hello(wsgi_server: wsgi.Server) -> None:
    wsgi_server.wsgi_app = app
    client = get_server_client(wsgi_server)
    status, headers, body = client.get("/", headers={"Accept": "text/plain"})
    assert status == "200 OK" and body == b"Hello world!"
    assert dict(headers)["Content-Type"] == "text/plain"
    status, _, _ = client.post("/form", body="a=1")
    status, _, _ = client.put("/thing", body=b"{}")  # any method, as in Cheroot
    with client:
        client.request("/", method="HEAD", protocol="HTTP/1.0")


def test_native(native_server: HTTPServer) -> None:
    assert get_server_client(native_server).get("/")[0] == "200 OK"


def helpers() -> None:
    with testing.cheroot_server(wsgi.Server) as (thread, srv):
        srv.numthreads = 2  # a wsgi.Server: the class given
        assert thread.is_alive()
    with testing.stogie_server(server.HTTPServer, gateway=HelloGateway) as (_, native_srv):
        native_srv.gateway = testing.HelloGateway
    plain = wsgi.Server((testing.LOCALHOST, testing.EPHEMERAL_PORT), testing.hello_app)
    with testing.run_server(plain) as serving:
        serving.join(0)


def fixture_style() -> Iterator[wsgi.Server]:
    with testing.cheroot_server(wsgi.Server) as (_, srv):
        yield srv


# --- systemd, the command line ----------------------------------------------------------------


def systemd_ready() -> None:
    notifier = Notifier()
    if notifier.enabled:
        notifier.ready("serving")
        notifier.tick(healthy=True)


def command_line(args: argparse.Namespace) -> HTTPServer:
    bind_addr = parse_wsgi_bind_addr("127.0.0.1:8080")
    args.bind_addr = bind_addr
    found = Application.resolve("myapp:application")
    if isinstance(found, GatewayYo):
        return found.server(args)
    return found.server(args)


def run_command() -> int:
    logging.info("stogie %s", __version__)
    return main(["--bind", "127.0.0.1:8080", "myapp:app"])
