"""What a server listens on and how its sockets behave: IPv4, IPv6 and dual stack,
SO_REUSEPORT, the listen backlog, TCP_NODELAY, UNIX and abstract sockets, peer credentials,
and the connection timeouts, end to end over real sockets."""

import grp
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest

from conftest import hello_app, http_get, raw_request, running, wait_closed
from stogie import server, wsgi

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sockets")

ENVIRON_KEYS = (
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "SERVER_NAME",
    "SERVER_PORT",
    "X_REMOTE_PID",
    "X_REMOTE_UID",
    "X_REMOTE_GID",
    "X_REMOTE_USER",
    "X_REMOTE_GROUP",
    "REMOTE_USER",
)


def environ_app(environ, start_response):
    """Answers with the environ keys the socket tests look at, as JSON (absent: null)."""
    body = json.dumps({k: environ.get(k) for k in ENVIRON_KEYS}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]


def split_response(raw):
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    return head.decode("latin-1"), body


def unix_request(path, data, timeout=5.0):
    """Send raw bytes over a UNIX socket (``'\\0name'``: abstract); read until close."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def unix_environ(path):
    raw = unix_request(path, b"GET /env HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    head, body = split_response(raw)
    assert head.startswith("HTTP/1.1 200 OK\r\n"), head
    return json.loads(body)


def has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="this machine has no IPv6 loopback")


# --- TCP -----------------------------------------------------------------------------------


def test_ipv4(serve):
    srv = serve(environ_app)
    host, port = srv.bind_addr
    status, body = http_get((host, port))
    env = json.loads(body)
    assert status == 200
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert int(env["REMOTE_PORT"]) > 0
    assert env["SERVER_PORT"] == str(port)
    assert env["X_REMOTE_PID"] is None


@needs_ipv6
def test_ipv6_loopback(serve):
    srv = serve(environ_app, bind_addr=("::1", 0))
    host, port = srv.bind_addr
    assert host == "::1" and port > 0
    status, body = http_get(("::1", port))
    assert status == 200
    assert json.loads(body)["REMOTE_ADDR"] == "::1"
    # '::1' is IPv6 only: nobody listens on the IPv4 loopback at that port.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@needs_ipv6
def test_ipv6_any_is_dual_stack(serve):
    srv = serve(environ_app, bind_addr=("::", 0))
    host, port = srv.bind_addr
    assert host == "::" and port > 0
    status, body = http_get(("127.0.0.1", port))
    assert status == 200
    # An IPv4 client on a dual-stack socket; Cheroot shows the mapped form too.
    assert json.loads(body)["REMOTE_ADDR"] in ("127.0.0.1", "::ffff:127.0.0.1")
    status, body = http_get(("::1", port))
    assert status == 200
    assert json.loads(body)["REMOTE_ADDR"] == "::1"


def test_reuse_port_lets_two_servers_share_a_port():
    first = wsgi.Server(("127.0.0.1", 0), hello_app, reuse_port=True)
    with running(first):
        port = first.bind_addr[1]
        second = wsgi.Server(("127.0.0.1", port), environ_app, reuse_port=True)
        with running(second):
            assert second.bind_addr == ("127.0.0.1", port)
            bodies = set()
            # The kernel spreads new connections over both listeners by a hash of the
            # client's address; within a few dozen connections both are seen.
            for _ in range(60):
                bodies.add(http_get(("127.0.0.1", port))[1][:1])
                if len(bodies) == 2:
                    break
            assert bodies == {b"H", b"{"}
        # without SO_REUSEPORT on the newcomer the port is taken
        third = wsgi.Server(("127.0.0.1", port), hello_app)
        with pytest.raises(OSError):
            third.prepare()
        assert third.ready is False


def test_port_in_use_raises_oserror():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = wsgi.Server(("127.0.0.1", port), hello_app)
        with pytest.raises(OSError) as info:
            srv.prepare()
        assert str(port) in str(info.value)
        assert srv.ready is False


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss(8) to read the backlog")
@pytest.mark.parametrize("backlog", [1, 37, 2048])
def test_request_queue_size_is_the_listen_backlog(serve, backlog):
    """request_queue_size is the backlog, but never below 1024.

    Cheroot's default of 5 drops connection attempts from any burst of clients, each costing
    the client a one-second SYN retransmit.
    """
    srv = serve(hello_app, request_queue_size=backlog)
    port = srv.bind_addr[1]
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    # LISTEN Recv-Q Send-Q Local:Port ...; for a listening socket Send-Q is the backlog.
    fields = out.split()
    assert fields[0] == "LISTEN", out
    assert int(fields[2]) == max(backlog, 1024)
    assert http_get(("127.0.0.1", port))[0] == 200


def _server_side_socket(client):
    """The server's end of ``client``'s TCP connection, found among this process's fds."""
    want = (client.getpeername(), client.getsockname())
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.type == socket.SOCK_STREAM and sock.family == socket.AF_INET:
                if (sock.getsockname(), sock.getpeername()) == want:
                    return sock
        except OSError:
            pass
        sock.close()
    return None


def test_accepted_connections_have_tcp_nodelay(serve):
    srv = serve(hello_app)
    with socket.create_connection(srv.bind_addr, timeout=5) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 200 OK")
        server_end = _server_side_socket(client)
        assert server_end is not None, "the server's socket was not found"
        with server_end:
            assert server_end.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# --- UNIX sockets --------------------------------------------------------------------------


@pytest.fixture
def sock_path(tmp_path):
    path = tmp_path / "s.sock"
    if len(os.fsencode(path)) > 100:  # sun_path is 108 bytes
        path = f"/tmp/stogie-test-{uuid.uuid4().hex[:12]}.sock"
    return str(path)


def test_unix_socket_by_path(sock_path):
    srv = wsgi.Server(sock_path, environ_app)
    with running(srv):
        assert srv.bind_addr == sock_path
        assert os.path.exists(sock_path)
        assert __import__("stat").S_ISSOCK(os.stat(sock_path).st_mode)
        env = unix_environ(sock_path)
        assert env["SERVER_PORT"] == ""
        assert env["REMOTE_PORT"] == ""
        assert env["X_REMOTE_PID"] is None  # peercreds are off by default
        # keep-alive works over UNIX sockets too
        pipelined = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
        pipelined += b"GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        raw = unix_request(sock_path, pipelined)
        assert raw.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert not os.path.exists(sock_path), "the socket file is removed on stop"


def test_unix_socket_stale_file_is_replaced(sock_path):
    # A socket file left behind by a server that died.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()
    assert os.path.exists(sock_path)
    srv = wsgi.Server(sock_path, environ_app)
    with running(srv):
        assert unix_environ(sock_path)["SERVER_PORT"] == ""


def test_unix_socket_of_a_running_server_is_not_taken(sock_path):
    # A socket someone accepts on is not stale: binding over it would steal the address.
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(sock_path)
    live.listen(1)
    try:
        srv = wsgi.Server(sock_path, hello_app)
        with pytest.raises(OSError) as info:
            srv.prepare()
        assert "in use by a running server" in str(info.value)
        assert os.path.exists(sock_path)
    finally:
        live.close()


def test_unix_socket_replaces_an_empty_file(sock_path):
    # What tempfile.mkstemp() leaves to reserve a name (Cheroot's own tests bind there):
    # nothing is lost by replacing it.
    open(sock_path, "w").close()
    srv = wsgi.Server(sock_path, environ_app)
    with running(srv):
        assert unix_environ(sock_path)["SERVER_PORT"] == ""


def test_unix_socket_never_deletes_a_regular_file(sock_path):
    with open(sock_path, "w") as f:
        f.write("precious data")
    srv = wsgi.Server(sock_path, hello_app)
    with pytest.raises(OSError) as info:
        srv.prepare()
    message = str(info.value)
    assert sock_path in message
    assert re.search(r"not a socket", message), message
    assert srv.ready is False
    srv.stop()
    with open(sock_path) as f:
        assert f.read() == "precious data"


def test_abstract_socket():
    name = f"\0stogie-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    srv = wsgi.Server(name, environ_app)
    with running(srv):
        assert srv.bind_addr == name
        env = unix_environ(name)
        assert env["SERVER_PORT"] == ""
    with pytest.raises(ConnectionRefusedError):
        unix_request(name, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_peercreds(sock_path):
    srv = wsgi.Server(sock_path, environ_app, peercreds_enabled=True)
    with running(srv):
        env = unix_environ(sock_path)
    assert env["X_REMOTE_PID"] == str(os.getpid())
    assert env["X_REMOTE_UID"] == str(os.getuid())
    assert env["X_REMOTE_GID"] == str(os.getgid())
    assert env["X_REMOTE_USER"] is None  # not resolved unless asked
    assert env["REMOTE_USER"] is None


def test_peercreds_resolved(sock_path):
    srv = wsgi.Server(
        sock_path, environ_app, peercreds_enabled=True, peercreds_resolve_enabled=True
    )
    with running(srv):
        env = unix_environ(sock_path)
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    assert env["X_REMOTE_PID"] == str(os.getpid())
    assert env["X_REMOTE_USER"] == user
    assert env["REMOTE_USER"] == user
    assert env["X_REMOTE_GROUP"] == group


def test_peercreds_resolve_needs_peercreds(sock_path):
    # Cheroot resolves names only when peercreds are enabled too.
    srv = wsgi.Server(sock_path, environ_app, peercreds_resolve_enabled=True)
    with running(srv):
        env = unix_environ(sock_path)
    assert env["X_REMOTE_PID"] is None
    assert env["X_REMOTE_USER"] is None


def test_peercreds_setting_is_live(sock_path):
    # Cheroot reads peercreds_enabled per request: turning it on for a running server works
    # (its own tests do so).
    srv = wsgi.Server(sock_path, environ_app)
    with running(srv):
        assert unix_environ(sock_path)["X_REMOTE_UID"] is None
        srv.peercreds_enabled = True
        assert unix_environ(sock_path)["X_REMOTE_UID"] == str(os.getuid())
        srv.peercreds_resolve_enabled = True
        assert unix_environ(sock_path)["X_REMOTE_USER"] == pwd.getpwuid(os.getuid()).pw_name
        srv.peercreds_enabled = False
        assert unix_environ(sock_path)["X_REMOTE_UID"] is None


class PeerCredsGateway(server.Gateway):
    """A native gateway answering with what ``req.conn`` says of the peer, or the error."""

    def respond(self):
        conn = self.req.conn
        try:
            ids = "|".join(map(str, (conn.peer_pid, conn.peer_uid, conn.peer_gid)))
        except (RuntimeError, NotImplementedError) as exc:
            ids = f"{type(exc).__name__}: {exc}"
        try:
            names = f"{conn.peer_user}!{conn.peer_group}"
        except (RuntimeError, NotImplementedError) as exc:
            names = f"{type(exc).__name__}: {exc}"
        self.req.simple_response("200 OK", f"{ids}\n{names}")


@pytest.mark.parametrize("resolve", [False, True])
def test_native_gateway_sees_peer_creds(sock_path, resolve):
    assert server.IS_UID_GID_RESOLVABLE is True
    srv = server.HTTPServer(
        sock_path, PeerCredsGateway, peercreds_enabled=True, peercreds_resolve_enabled=resolve
    )
    with running(srv):
        raw = unix_request(sock_path, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    ids, names = raw.partition(b"\r\n\r\n")[2].decode().split("\n")
    assert ids == f"{os.getpid()}|{os.getuid()}|{os.getgid()}"
    if resolve:
        user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        assert names == f"{user}!{group}"
    else:
        assert names == "RuntimeError: UID/GID lookup is disabled within this server"


def test_native_gateway_peer_creds_errors(sock_path):
    # Off: Cheroot's RuntimeError; over TCP: its NotImplementedError.
    srv = server.HTTPServer(sock_path, PeerCredsGateway)
    with running(srv):
        raw = unix_request(sock_path, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"RuntimeError: Peer creds lookup is disabled within this server" in raw
    srv = server.HTTPServer(("127.0.0.1", 0), PeerCredsGateway, peercreds_enabled=True)
    with running(srv):
        raw = raw_request(srv.bind_addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"NotImplementedError: SO_PEERCRED is only supported" in raw


# --- timeouts ------------------------------------------------------------------------------


# The idle-timeout closes (a fresh connection, and one kept alive after a response) are in
# test_slow_clients.py: test_idle_connection_closes_quietly_after_timeout.


def test_partial_head_gets_408_after_timeout(serve):
    srv = serve(hello_app, timeout=1)
    with socket.create_connection(srv.bind_addr, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        elapsed, data = wait_closed(sock, 5)
    assert 0.8 <= elapsed < 3
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data


def test_connection_within_timeout_is_served(serve):
    srv = serve(hello_app, timeout=2)
    with socket.create_connection(srv.bind_addr, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.5)
        sock.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
        _, data = wait_closed(sock, 5)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"Hello, World!")


def test_raw_request_helper_over_tcp(serve):
    srv = serve(hello_app)
    out = raw_request(srv.bind_addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, body = split_response(out)
    assert head.startswith("HTTP/1.1 200 OK") and body == b"Hello, World!"
