"""stogie behind a proxy, with the real ones: nginx passing X-Forwarded-* and Forwarded
headers, HAProxy speaking the PROXY protocol (v1 and v2). The client connects from another
loopback address (127.0.0.2) than the proxy's, so that who is who can be told apart.

nginx and HAProxy come from Debian (scripts/test installs them when missing)."""

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import time

import pytest
from test_ops_observe import sample, scrape

from conftest import free_port, running, stop, wait_for
from stogie import wsgi

CLIENT = "127.0.0.2"
STRANGER = "127.0.0.3"


def tool(name):
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/test installs it (apt-get install {name})")
    return path


def whoami(environ, start_response):
    seen = {
        key: environ.get(key)
        for key in (
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "wsgi.url_scheme",
            "HTTP_HOST",
            "SERVER_PORT",
            "HTTP_X_FORWARDED_FOR",
            "HTTP_FORWARDED",
        )
    }
    body = json.dumps(seen).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def ask(port, source=CLIENT, headers=None, host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/", headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        local_port = conn.sock.getsockname()[1] if conn.sock else None
        return resp.status, json.loads(body) if resp.status == 200 else body, local_port
    finally:
        conn.close()


def closed_without_answer(sock):
    """Whether the other end closed (or reset) the connection without a byte of answer."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def background(args, log_path):
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc, 5)


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host shop.example;
            proxy_set_header X-Forwarded-Port 8443;
        }}
        location /rfc7239 {{
            proxy_pass http://{upstream};
            proxy_set_header Forwarded "for=$remote_addr;proto=https;host=rfc.example";
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(tmp_path, upstream):
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp_path, port=port, upstream=upstream))
    with background(
        [tool("nginx"), "-c", str(conf), "-p", str(tmp_path)], tmp_path / "nginx.out"
    ) as p:
        assert wait_for(lambda: listening(port) or p.poll() is not None, 10)
        if p.poll() is not None:
            pytest.fail("nginx did not start: " + (tmp_path / "nginx.out").read_text())
        yield port


def test_behind_nginx_the_app_sees_the_client(tmp_path):
    srv = wsgi.Server(("127.0.0.1", 0), whoami)
    srv.access_log = str(tmp_path / "access.log")
    with running(srv), nginx(tmp_path, "127.0.0.1:%d" % srv.bind_addr[1]) as port:
        status, seen, _ = ask(port)
        assert status == 200
        assert seen["REMOTE_ADDR"] == CLIENT
        assert seen["wsgi.url_scheme"] == "https"
        assert seen["HTTP_HOST"] == "shop.example"
        assert seen["SERVER_PORT"] == "8443"
        # The proxy's header reaches the app as sent.
        assert seen["HTTP_X_FORWARDED_FOR"] == CLIENT
        # A client's own X-Forwarded-For is kept left of what nginx appends, and not believed.
        status, seen, _ = ask(port, headers={"X-Forwarded-For": "6.6.6.6"})
        assert seen["REMOTE_ADDR"] == CLIENT
        assert seen["HTTP_X_FORWARDED_FOR"] == f"6.6.6.6, {CLIENT}"
        # RFC 7239's Forwarded.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT, 0))
        conn.request("GET", "/rfc7239")
        seen = json.loads(conn.getresponse().read())
        conn.close()
        assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"], seen["HTTP_HOST"]) == (
            CLIENT,
            "https",
            "rfc.example",
        )
        # The access log names the client the app saw.
        assert wait_for(lambda: (tmp_path / "access.log").read_text().count("\n") >= 3)
        assert all(
            line.startswith(CLIENT + " ")
            for line in (tmp_path / "access.log").read_text().splitlines()
        )


def test_headers_from_an_untrusted_peer_are_passed_untouched(tmp_path):
    srv = wsgi.Server(("127.0.0.1", 0), whoami)
    with running(srv):
        forged = {
            "X-Forwarded-For": "1.2.3.4",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil",
        }
        status, seen, _ = ask(srv.bind_addr[1], source=STRANGER, headers=forged)
    assert status == 200
    assert seen["REMOTE_ADDR"] == STRANGER
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["HTTP_HOST"].startswith("127.0.0.1")
    assert seen["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"


@pytest.mark.parametrize(
    ("allow", "believed"),
    [("", False), ("127.0.0.0/8", True), ("*", True), (["10.0.0.1", "127.0.0.1"], True)],
)
def test_forwarded_allow_ips(tmp_path, allow, believed):
    srv = wsgi.Server(("127.0.0.1", 0), whoami)
    srv.forwarded_allow_ips = allow
    with running(srv), nginx(tmp_path, "127.0.0.1:%d" % srv.bind_addr[1]) as port:
        _, seen, _ = ask(port)
    assert seen["REMOTE_ADDR"] == (CLIENT if believed else "127.0.0.1")
    assert seen["wsgi.url_scheme"] == ("https" if believed else "http")


@pytest.mark.parametrize(
    ("headers", "scheme"),
    [
        ({"X-Forwarded-Ssl": "on"}, "https"),
        ({"X-Forwarded-Protocol": "ssl"}, "https"),
        ({"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "on"}, "https"),
        ({"X-Forwarded-Proto": "http", "X-Forwarded-Ssl": "off"}, "http"),
    ],
)
def test_the_scheme_by_its_other_names(headers, scheme):
    srv = wsgi.Server(("127.0.0.1", 0), whoami)
    with running(srv):
        status, seen, _ = ask(srv.bind_addr[1], source="127.0.0.1", headers=headers)
    assert status == 200
    assert seen["wsgi.url_scheme"] == scheme


def test_contradictory_scheme_headers_are_refused(tmp_path):
    # gunicorn's answer too (its corpus, invalid/019): which one the proxy meant is unknown.
    srv = wsgi.Server(("127.0.0.1", 0), whoami)
    srv.access_log = str(tmp_path / "access.log")
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "off"}
    with running(srv):
        status, body, _ = ask(srv.bind_addr[1], source="127.0.0.1", headers=headers)
        assert status == 400
        assert body == b"Contradictory scheme headers."
        assert wait_for(lambda: '"GET / HTTP/1.1" 400' in (tmp_path / "access.log").read_text())
        # From a peer not trusted, the headers are not read, so nothing contradicts.
        status, seen, _ = ask(srv.bind_addr[1], source=STRANGER, headers=headers)
        assert status == 200
        assert seen["wsgi.url_scheme"] == "http"


def test_forwarded_allow_ips_is_checked():
    srv = wsgi.Server(("127.0.0.1", 0), whoami)
    with running(srv):
        with pytest.raises(ValueError, match="forwarded_allow_ips"):
            srv.forwarded_allow_ips = "localhost"
        with pytest.raises(ValueError, match="prefix"):
            srv.forwarded_allow_ips = "10.0.0.0/40"
        assert srv.forwarded_allow_ips == "127.0.0.1,::1"


HAPROXY_CONF = """
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend in
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server stogie {upstream} {send}
"""


@contextlib.contextmanager
def haproxy(tmp_path, upstream, send):
    port = free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(HAPROXY_CONF.format(port=port, upstream=upstream, send=send))
    with background([tool("haproxy"), "-f", str(conf), "-db"], tmp_path / "haproxy.out") as p:
        assert wait_for(lambda: listening(port) or p.poll() is not None, 10)
        if p.poll() is not None:
            pytest.fail("haproxy did not start: " + (tmp_path / "haproxy.out").read_text())
        yield port


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_behind_haproxy_with_the_proxy_protocol(tmp_path, send):
    srv = wsgi.Server(("127.0.0.1", 0), whoami)
    srv.proxy_protocol = True
    srv.access_log = str(tmp_path / "access.log")
    with running(srv), haproxy(tmp_path, "127.0.0.1:%d" % srv.bind_addr[1], send) as port:
        for _ in range(3):
            status, seen, client_port = ask(port)
            assert status == 200
            assert seen["REMOTE_ADDR"] == CLIENT
            assert seen["REMOTE_PORT"] == str(client_port)
        assert wait_for(lambda: (tmp_path / "access.log").read_text().count("\n") >= 3)
        assert (tmp_path / "access.log").read_text().startswith(CLIENT + " ")


def test_a_proxy_protocol_listener_refuses_plain_clients(tmp_path):
    srv = wsgi.Server(("127.0.0.1", 0), whoami)
    srv.proxy_protocol = True
    srv.metrics_bind = "127.0.0.1:0"
    with running(srv):
        started = time.monotonic()
        with socket.create_connection(srv.bind_addr, timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"PROXY protocol" in answer
        assert time.monotonic() - started < 2
        # A malformed header: a 400 that says what is wrong with it, then the close.
        with socket.create_connection(srv.bind_addr, timeout=5) as sock:
            sock.sendall(b"PROXY TCP4 1.2.3.4 nonsense 1 2\r\nGET / HTTP/1.1\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert answer.endswith(
            b"Malformed PROXY protocol header: v1 address does not match its protocol."
        )
        # The server goes on serving proper clients.
        with socket.create_connection(srv.bind_addr, timeout=5) as sock:
            sock.sendall(
                b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n"
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["REMOTE_ADDR"] == "198.51.100.7"
        # The two refusals are counted as malformed input.
        counts = scrape(srv.metrics_bind_addr)
        assert sample(counts, "stogie_refused_total", reason="parse_error") == 2


def test_proxy_protocol_only_from_allowed_peers(tmp_path):
    srv = wsgi.Server(("127.0.0.1", 0), whoami)
    srv.proxy_protocol = True
    srv.proxy_allow_from = "10.0.0.0/8"
    with running(srv), haproxy(tmp_path, "127.0.0.1:%d" % srv.bind_addr[1], "send-proxy") as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert closed_without_answer(sock), "a peer not allowed is refused"


def test_proxy_protocol_from_the_command_line(tmp_path):
    port = free_port()
    (tmp_path / "whoapp.py").write_text(
        "import json\n"
        "def application(environ, start_response):\n"
        "    body = environ['REMOTE_ADDR'].encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    args = [
        os.environ.get("STOGIE_PYTHON", __import__("sys").executable),
        "-m",
        "stogie",
        "--bind",
        f"127.0.0.1:{port}",
        "--proxy-protocol",
        "--proxy-allow-from",
        "127.0.0.1",
        "whoapp",
    ]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: listening(port), 15)
        with haproxy(tmp_path, f"127.0.0.1:{port}", "send-proxy-v2") as hport:
            conn = http.client.HTTPConnection(
                "127.0.0.1", hport, timeout=10, source_address=(CLIENT, 0)
            )
            conn.request("GET", "/")
            assert conn.getresponse().read() == CLIENT.encode()
            conn.close()
    finally:
        stop(proc)
