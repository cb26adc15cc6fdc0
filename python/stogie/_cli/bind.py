"""``--bind`` addresses: read from the command line, and written as people read them."""

from __future__ import annotations

import ipaddress
import re

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .._typing import BindAddr

DEFAULT_BIND = "127.0.0.1:8080"

# A host name or an IPv4 literal. Anything else in front of the port (spaces,
# "user@", a bare IPv6 address) is a mistake better caught here than by
# getaddrinfo() with a vaguer message.
_HOST_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
_PORT_RE = re.compile(r"[0-9]+\Z")
# A URL's scheme (copied from a browser's address bar) or gunicorn's "unix:" in front of the
# address: without this check the whole text would name a UNIX socket file.
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|unix:")


def parse_bind(s: str) -> tuple[str, int] | str | int:
    """Turn a ``--bind`` string into a ``bind_addr`` for ``stogie.wsgi.Server``.

    - ``HOST:PORT`` -> ``(host, port)``; an empty HOST (``:8080``) means all
      IPv4 interfaces, ``0.0.0.0``.
    - ``[IPV6]:PORT`` -> ``(ipv6, port)``, e.g. ``[::1]:8080`` -> ``('::1', 8080)``.
    - ``@NAME`` -> ``'\\0NAME'``, a Linux abstract UNIX socket.
    - ``fd://N`` -> ``N``, an inherited listening socket (socket activation).
    - anything containing ``/``, or without a colon -> that UNIX socket path (so
      ``localhost`` is a socket file, as in Cheroot: :func:`describe_served` says so).
    - ``http://...`` and ``unix:...`` are refused with what to type instead.

    PORT is 0 to 65535; 0 asks the system for a free port.

    Raises:
        ValueError: the string is none of the above, with a message that says
            what is wrong with it.
    """
    if not isinstance(s, str):
        raise ValueError(f"bind address must be a string, not {type(s).__name__}")
    if not s:
        raise ValueError("bind address is empty")
    if "\0" in s:
        raise ValueError(f"{s!r}: bind address contains a NUL character")

    if s.startswith("fd://"):
        number = s[5:]
        if not _PORT_RE.match(number):
            raise ValueError(f"{s!r}: expected fd:// and a descriptor number, e.g. fd://3")
        return int(number)

    scheme = _SCHEME_RE.match(s)
    if scheme:
        rest = s[scheme.end() :]
        if scheme.group(0) != "unix:":
            rest = rest.rstrip("/")
        raise ValueError(f"{s!r}: drop the scheme {scheme.group(0)!r}, as in --bind {rest}")

    # Checked first: "@name" must not be read as "user@host".
    if s.startswith("@"):
        if len(s) == 1:
            raise ValueError("'@': abstract socket name is missing after '@'")
        return "\0" + s[1:]

    if s.startswith("["):
        host, bracket, rest = s[1:].partition("]")
        if not bracket:
            raise ValueError(f"{s!r}: missing ']' after the IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{s!r}: {host!r} is not an IPv6 address") from None
        if not rest:
            raise ValueError(f"{s!r}: missing ':PORT' after ']'")
        if not rest.startswith(":"):
            raise ValueError(f"{s!r}: expected ':PORT' after ']', got {rest!r}")
        return host, _parse_port(rest[1:], s)

    if "/" in s or ":" not in s:
        if _PORT_RE.match(s):
            # A socket file called "8080" is never what was meant.
            raise ValueError(
                f"{s!r} looks like a port: use HOST:PORT, e.g. 127.0.0.1:{s}"
                f" (or ./{s} for a UNIX socket of that name)"
            )
        return s

    host, _, port = s.rpartition(":")
    if ":" in host:
        raise ValueError(f"{s!r}: an IPv6 address must be in brackets, as in [::1]:8080")
    if not host:
        host = "0.0.0.0"
    elif not _HOST_RE.match(host):
        raise ValueError(f"{s!r}: {host!r} is not a host name or IP address")
    return host, _parse_port(port, s)


def _parse_port(port: str, whole: str) -> int:
    if not port:
        raise ValueError(f"{whole!r}: the port is missing after ':'")
    if not _PORT_RE.match(port):
        raise ValueError(f"{whole!r}: port {port!r} is not a number")
    number = int(port)
    if number > 65535:
        raise ValueError(f"{whole!r}: port {number} is out of range (0-65535)")
    return number


def format_bind(bind_addr: tuple[str, int] | list[Any] | str | bytes) -> str:
    """Return a bind address as people read it.

    ``http://127.0.0.1:8080``, ``http://[::1]:8080``, ``unix:/path`` or
    ``unix:@name`` for an abstract socket.
    """
    if isinstance(bind_addr, (tuple, list)):
        host, port = bind_addr[0], bind_addr[1]
        host = host or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"
    if isinstance(bind_addr, bytes):
        bind_addr = bind_addr.decode("utf-8", "replace")
    if bind_addr.startswith("\0"):
        return f"unix:@{bind_addr[1:]}"
    return f"unix:{bind_addr}"


def describe_served(bind_addr: tuple[str, int] | str | bytes) -> str:
    """:func:`format_bind`, saying it of a UNIX socket named as a host could be (``--bind
    localhost`` serves a socket file, by Cheroot's rule for an address without a port)."""
    text = format_bind(bind_addr)
    if isinstance(bind_addr, str) and _HOST_RE.match(bind_addr):
        text += " (a UNIX socket; give HOST:PORT for TCP)"
    return text


def _describe_bind(bind_addr: BindAddr) -> str:
    if isinstance(bind_addr, int):
        return f"fd://{bind_addr}"
    return format_bind(bind_addr)
