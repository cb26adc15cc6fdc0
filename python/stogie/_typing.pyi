"""Types that stogie's annotations share. A stub with no module behind it: the modules import
it under ``TYPE_CHECKING`` only, so nothing here costs import time."""

import os
import sys
from collections.abc import Callable
from typing import Any, TypeAlias

if sys.version_info >= (3, 11):
    from wsgiref.types import StartResponse as StartResponse
    from wsgiref.types import WSGIApplication as WSGIApplication
    from wsgiref.types import WSGIEnvironment as WSGIEnvironment
else:
    from _typeshed.wsgi import StartResponse as StartResponse
    from _typeshed.wsgi import WSGIApplication as WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment as WSGIEnvironment

TCPAddress: TypeAlias = tuple[str, int]
"""``(host, port)``."""

BindAddr: TypeAlias = tuple[str, int] | str | bytes | int
"""What ``bind_addr`` takes, as Cheroot's: a ``(host, port)`` tuple, or a UNIX socket path
(str or bytes; a leading NUL byte makes it a Linux abstract socket name); stogie also takes
the descriptor (int) of a listening socket the process inherited."""

StrPath: TypeAlias = str | os.PathLike[str]
"""A file name."""

AddressList: TypeAlias = str | list[Any] | tuple[Any, ...] | set[Any] | frozenset[Any]
"""Addresses and networks: a comma-separated string, or a collection of them (each
written with ``str()``)."""

Password: TypeAlias = str | bytes | Callable[[], str | bytes]
"""A private key's password, or a callable that returns it."""

WSGIVersion: TypeAlias = tuple[int, int] | tuple[str, int]
"""``wsgi.version``: ``(1, 0)``, or ``('u', 0)`` for WSGI u.0."""
