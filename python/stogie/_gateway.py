"""The native Gateway API (Cheroot's ``server.Gateway``): what a ``Gateway`` subclass is
given for each request, ``HTTPRequest`` and its ``conn``, over the engine's own request.
"""

from __future__ import annotations

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._native import InputStream, NativeRequest
    from .server import HTTPServer

try:
    import grp
    import pwd
except ImportError:  # pragma: no cover - not a UNIX-like system
    grp = pwd = None  # type: ignore[assignment]

IS_UID_GID_RESOLVABLE = pwd is not None
"""Indicates whether UID/GID resolution's available under current platform."""


class Gateway:
    """Base class to interface HTTPServer with other systems, such as WSGI."""

    def __init__(self, req: HTTPRequest) -> None:
        """Initialize Gateway instance with request.

        Args:
            req (HTTPRequest): current HTTP request
        """
        self.req = req

    def respond(self) -> None:
        """Process the current request. Must be overridden in a subclass."""
        raise NotImplementedError  # pragma: no cover


class _Connection:
    """What a gateway sees of the client connection (``req.conn``), as Cheroot's
    ``HTTPConnection`` shows it: the client's address, and on UNIX sockets its
    credentials (``SO_PEERCRED``) when the server's ``peercreds_enabled`` is on.
    """

    def __init__(self, server: HTTPServer, native: NativeRequest) -> None:
        self.server = server
        self.remote_addr = native.remote_addr
        self.remote_port = native.remote_port
        self.ssl_env = native.ssl_env
        self._peer_cred = native.peer_cred
        self._unix = native.remote_addr is None

    @property
    def peercreds_enabled(self) -> bool:
        """Whether peer credentials may be looked up (the server's setting)."""
        return self.server.peercreds_enabled

    @property
    def peercreds_resolve_enabled(self) -> bool:
        """Whether peer credentials may be resolved to names (the server's setting)."""
        return self.server.peercreds_enabled and self.server.peercreds_resolve_enabled

    def get_peer_creds(self) -> tuple[int | None, int, int]:
        """Return the PID/UID/GID tuple of the peer socket for UNIX sockets.

        Raises:
            NotImplementedError: in case of unsupported socket type
            RuntimeError: in case of SO_PEERCRED lookup unsupported or disabled
        """
        if not self._unix:
            raise NotImplementedError("SO_PEERCRED is only supported in Linux kernel and WSL")
        if not self.peercreds_enabled:
            raise RuntimeError("Peer creds lookup is disabled within this server")
        if self._peer_cred is None:
            raise RuntimeError("the kernel gave no credentials for this peer")
        pid, uid, gid = self._peer_cred
        return pid, uid, gid

    @property
    def peer_pid(self) -> int | None:
        """Return the id of the connected peer process."""
        pid, _, _ = self.get_peer_creds()
        return pid

    @property
    def peer_uid(self) -> int:
        """Return the user id of the connected peer process."""
        _, uid, _ = self.get_peer_creds()
        return uid

    @property
    def peer_gid(self) -> int:
        """Return the group id of the connected peer process."""
        _, _, gid = self.get_peer_creds()
        return gid

    def resolve_peer_creds(self) -> tuple[str, str]:
        """Look up the username and group tuple of the ``PEERCREDS``.

        :returns: the username and group tuple of the ``PEERCREDS``

        :raises NotImplementedError: if the OS is unsupported
        :raises RuntimeError: if UID/GID lookup is unsupported or disabled
        """
        if not IS_UID_GID_RESOLVABLE:
            raise NotImplementedError(
                "UID/GID lookup is unavailable under current platform. "
                "It can only be done under UNIX-like OS "
                "but not under the Google App Engine",
            )
        if not self.peercreds_resolve_enabled:
            raise RuntimeError("UID/GID lookup is disabled within this server")
        user = pwd.getpwuid(self.peer_uid).pw_name
        group = grp.getgrgid(self.peer_gid).gr_name
        return user, group

    @property
    def peer_user(self) -> str:
        """Return the username of the connected peer process."""
        user, _ = self.resolve_peer_creds()
        return user

    @property
    def peer_group(self) -> str:
        """Return the group of the connected peer process."""
        _, group = self.resolve_peer_creds()
        return group


class HTTPRequest:
    """An HTTP Request (and response), as a native gateway sees it.

    A single HTTP connection may consist of multiple request/response pairs.
    """

    def __init__(self, server: HTTPServer, native: NativeRequest) -> None:
        """Wrap the engine's request for a native gateway."""
        self.server = server
        self._native = native
        self.conn = _Connection(server, native)
        self.scheme = native.scheme.encode("ascii")
        self.method = native.method
        self.uri = native.uri
        self.path = native.path
        self.qs = native.qs
        self.request_protocol = native.request_protocol
        rp = int(self.request_protocol[5:6]), int(self.request_protocol[7:8])
        sp = int(server.protocol[5]), int(server.protocol[7])
        self.response_protocol = "HTTP/%s.%s" % min(rp, sp)
        inheaders: dict[bytes, bytes] = {}
        for name, value in native.headers:
            key = name.title()
            if key in inheaders:
                sep = b"; " if key == b"Cookie" else b", "
                inheaders[key] = inheaders[key] + sep + value
            else:
                inheaders[key] = value
        self.inheaders = inheaders
        self.rfile: InputStream = native.rfile
        self.ready = True
        self.close_connection = False
        self.chunked_write = False
        self.chunked_read = inheaders.get(b"Transfer-Encoding", b"").lower() == b"chunked"
        self.status: str | bytes = ""
        self.outheaders: list[tuple[str | bytes, str | bytes]] = []

    _sent_claimed = False

    @property
    def sent_headers(self) -> bool:
        """Whether the status and headers went out (or the gateway said so: CherryPy's
        native gateway sets it to True, then calls send_headers())."""
        return self._sent_claimed or self._native.sent_headers

    @sent_headers.setter
    def sent_headers(self, value: bool) -> None:
        # A plain attribute in Cheroot. What goes out still follows what was really sent:
        # write() sends the head first whatever this says.
        self._sent_claimed = bool(value)

    def _set_head(self) -> None:
        status = self.status
        if isinstance(status, bytes):
            status = status.decode("ISO-8859-1")
        headers = [
            (
                k.decode("ISO-8859-1") if isinstance(k, bytes) else k,
                v.decode("ISO-8859-1") if isinstance(v, bytes) else v,
            )
            for k, v in self.outheaders
        ]
        self._native.set_head(status or "200 OK", headers)

    def send_headers(self) -> None:
        """Assert, process, and send the HTTP response message-headers."""
        self._set_head()
        self._native.send_headers()

    def ensure_headers_sent(self) -> None:
        """Ensure headers are sent to the client if not already sent."""
        if not self.sent_headers:
            self.send_headers()

    def write(self, chunk: bytes) -> None:
        """Write unbuffered data to the client."""
        if not self._native.sent_headers:
            self._set_head()
        self._native.write(chunk)

    def simple_response(self, status: str | bytes, msg: str | bytes = "") -> None:
        """Write a simple response back to the client."""
        status = status.decode("ISO-8859-1") if isinstance(status, bytes) else str(status)
        body = msg.encode("ISO-8859-1") if isinstance(msg, str) else msg
        self.status = status
        self.outheaders = [
            ("Content-Length", str(len(body))),
            ("Content-Type", "text/plain"),
        ]
        self.write(body)


class HTTPConnection:
    """Cheroot's connection class, kept for code that configures it: the engine owns the
    connections (CherryPy sets ``RequestHandlerClass`` on it; requests are ``HTTPRequest``).
    """

    RequestHandlerClass: type[HTTPRequest] = HTTPRequest
