"""Collection of exceptions raised and/or processed by stogie (Cheroot's names)."""

from __future__ import annotations

import errno
import sys

from ._native import MaxSizeExceeded, RequestBodyError


class NoSSLError(Exception):
    """Exception raised when a client speaks HTTP to an HTTPS socket."""


class FatalSSLAlert(Exception):
    """Exception raised when the SSL implementation signals a fatal alert."""


def plat_specific_errors(*errnames: str) -> list[int]:
    """Return error numbers for all errors in ``errnames`` on this platform.

    The :py:mod:`errno` module contains different global constants
    depending on the specific platform (OS). This function will return
    the list of numeric values for a given list of potential names.
    """
    missing_attr = {None}
    unique_nums: set[int | None] = {getattr(errno, k, None) for k in errnames}
    return list(unique_nums - missing_attr)  # type: ignore[arg-type]  # None is gone


socket_error_eintr: list[int] = plat_specific_errors("EINTR", "WSAEINTR")

socket_errors_to_ignore: list[int | str] = plat_specific_errors(  # type: ignore[assignment]
    "EPIPE",
    "EBADF",
    "WSAEBADF",
    "ENOTSOCK",
    "WSAENOTSOCK",
    "ETIMEDOUT",
    "WSAETIMEDOUT",
    "ECONNREFUSED",
    "WSAECONNREFUSED",
    "ECONNRESET",
    "WSAECONNRESET",
    "ENOTCONN",
    "WSAENOTCONN",
    "EHOSTDOWN",
    "EHOSTUNREACH",
)
socket_errors_to_ignore.append("timed out")
socket_errors_to_ignore.append("The read operation timed out")
socket_errors_nonblocking: list[int] = plat_specific_errors(
    "EAGAIN", "EWOULDBLOCK", "WSAEWOULDBLOCK"
)

if sys.platform == "darwin":  # pragma: no cover
    socket_errors_to_ignore.extend(plat_specific_errors("EPROTOTYPE"))
    socket_errors_nonblocking.extend(plat_specific_errors("EPROTOTYPE"))

acceptable_sock_shutdown_error_codes: set[int] = {
    errno.ENOTCONN,
    errno.EPIPE,
    errno.ESHUTDOWN,
    errno.ECONNRESET,
}
"""Errors that may happen during the connection close sequence."""

acceptable_sock_shutdown_exceptions: tuple[type[Exception], ...] = (
    BrokenPipeError,
    ConnectionResetError,
)
"""Exceptions that may happen during the connection close sequence."""

__all__ = [
    "FatalSSLAlert",
    "MaxSizeExceeded",
    "NoSSLError",
    "RequestBodyError",
    "acceptable_sock_shutdown_error_codes",
    "acceptable_sock_shutdown_exceptions",
    "plat_specific_errors",
    "socket_error_eintr",
    "socket_errors_nonblocking",
    "socket_errors_to_ignore",
]
