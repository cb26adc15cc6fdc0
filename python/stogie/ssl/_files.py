"""The server's certificate and key files, checked before OpenSSL reads them.

OpenSSL's own errors do not say which file is at fault: a certificate file without a key,
a key file without a key, a wrong password all read "[SSL] PEM lib (_ssl.c:3926)", and a
missing key file is reported with no name at all. So the files are looked at first, and
what OpenSSL still refuses is said again as a sentence. The exception types stay those of
the library the adapter mimics (``FileNotFoundError``, ``ssl.SSLError``), so code written
for Cheroot catches what it caught.
"""

from __future__ import annotations

import errno
import os
import ssl

from . import _CERT_BLOCK, _ENCRYPTED, _KEY_BLOCK

_CERT_HEADER = '"-----BEGIN CERTIFICATE-----"'
_KEY_HEADER = '"-----BEGIN PRIVATE KEY-----" (or RSA, EC, ENCRYPTED)'

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._typing import StrPath


def _readable(path: str, what: str) -> bytes:
    """The file's bytes; an ``OSError`` that names it (``what``) otherwise."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        missing = FileNotFoundError(f"{what} {path}: no such file")
        missing.errno = errno.ENOENT
        raise missing from None
    except IsADirectoryError:
        directory = IsADirectoryError(f"{what} {path}: a directory, not a file")
        directory.errno = errno.EISDIR
        raise directory from None
    except OSError as exc:
        new = type(exc)(f"{what} {path}: cannot be read: {exc.strerror or exc}")
        new.errno = exc.errno
        raise new from None


def check_pair(
    certificate: StrPath,
    private_key: StrPath | None,
    *,
    cert_what: str = "certificate file",
    key_what: str = "private key file",
    error: type[Exception] = ssl.SSLError,
) -> bool:
    """Checks that ``certificate`` holds a certificate and that ``private_key`` (or the
    certificate file, without one) holds a private key. ``cert_what`` and ``key_what`` name
    them in messages (a command line names its options); ``error`` is the exception for a
    file that holds the wrong thing.

    Returns:
        True when the private key is encrypted.
    """
    cert = _readable(os.fspath(certificate), cert_what)
    if not _CERT_BLOCK.search(cert):
        what = "a private key, not a certificate" if _KEY_BLOCK.search(cert) else "no certificate"
        raise _error(error, f"{cert_what} {certificate}: {what} (a PEM {_CERT_HEADER} block)")
    if private_key:
        key = _readable(os.fspath(private_key), key_what)
        if not _KEY_BLOCK.search(key):
            what = (
                "a certificate, not a private key" if _CERT_BLOCK.search(key) else "no private key"
            )
            raise _error(error, f"{key_what} {private_key}: {what} (a PEM {_KEY_HEADER} block)")
    else:
        key = cert
        if not _KEY_BLOCK.search(cert):
            raise _error(
                error, f"{cert_what} {certificate}: no private key in it, and no {key_what} given"
            )
    return _ENCRYPTED.search(key) is not None


def _error(error: type[Exception], msg: str) -> Exception:
    # ssl.SSLError (an OSError) prints its strerror: it must be given one.
    return error(None, msg) if issubclass(error, OSError) else error(msg)


def explain(
    exc: ssl.SSLError,
    certificate: StrPath,
    private_key: StrPath | None,
    *,
    encrypted: bool,
    cert_what: str,
    key_what: str,
) -> ssl.SSLError:
    """``exc``, OpenSSL's refusal of a pair that :func:`check_pair` passed, as an
    ``ssl.SSLError`` whose message names the file and the problem (OpenSSL's ``errno``,
    ``library`` and ``reason`` kept)."""
    key_name = f"{key_what} {private_key or certificate}"
    if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
        msg = (
            f"{key_name}: the private key does not match the certificate in "
            f"{cert_what} {certificate}"
        )
    elif encrypted:
        # OpenSSL's words first: code written for Cheroot (its own tests) looks for them.
        msg = f"{exc}: {key_name}: the private key cannot be decrypted with the password given"
    else:
        msg = (
            f"{cert_what} {certificate} or {key_name}: OpenSSL cannot read them "
            f"(a malformed PEM block?): {exc}"
        )
    new = ssl.SSLError(exc.errno, msg)
    new.library, new.reason = getattr(exc, "library", None), getattr(exc, "reason", None)  # type: ignore[assignment]
    return new
