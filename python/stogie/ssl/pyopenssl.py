"""Cheroot's pyOpenSSL adapter (``cheroot.ssl.pyopenssl``), served by stogie's engine.

The same signature as Cheroot's; the engine (rustls) serves it, so pyOpenSSL is not needed.
When it is installed, :meth:`pyOpenSSLAdapter.get_context` returns an ``OpenSSL.SSL.Context``
as Cheroot's does, with ``certificate_chain`` as its CA file, and the server checks the key
with it at start, raising pyOpenSSL's own errors. It is a :class:`Context`, which remembers
what is set on it, so Cheroot's documented set-up is served as written::

    adapter.context = adapter.get_context()
    adapter.context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    adapter.context.get_cert_store().add_cert(ca)  # or load_verify_locations(cafile)

(the certificate and key set with ``use_certificate*()``/``use_privatekey*()``, the CAs, the
verify mode, protocol versions, ``set_options()`` and ``set_cipher_list()``). What the engine
cannot do is refused by name when the server starts (:class:`stogie.ssl.TLSError`). Without
pyOpenSSL, ``get_context()`` returns an :class:`ssl.SSLContext` instead.
"""

from __future__ import annotations

import ssl
import warnings
from warnings import warn as _warn

from . import Adapter
from ._contexts import Context, server_context

__all__ = ("Context", "pyOpenSSLAdapter")
from ._files import check_pair, explain

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    # pyOpenSSL's types, for type checkers (Any where it is not installed).
    from OpenSSL import SSL

    from .._typing import Password, StrPath

    _SocketT = TypeVar("_SocketT")
else:
    try:
        from OpenSSL import SSL
    except ImportError:
        SSL = None
_PYOPENSSL = SSL is not None


class pyOpenSSLAdapter(Adapter):
    """A wrapper for integrating :doc:`pyOpenSSL <pyopenssl:index>`."""

    certificate: StrPath = None  # type: ignore[assignment]  # the constructor's
    """The file name of the server's TLS certificate."""

    private_key: StrPath | None = None
    """The file name of the server's private key file."""

    certificate_chain: StrPath | None = None
    """Optional. The file name of CA's intermediate certificate bundle."""

    context: SSL.Context | ssl.SSLContext | None = None
    """An ``OpenSSL.SSL.Context`` (or an :class:`ssl.SSLContext` without pyOpenSSL)."""

    ciphers: str | None = None
    """The ciphers list of TLS."""

    private_key_password: Password | None = None
    """Optional passphrase for password protected private key."""

    def bind(self, sock: _SocketT) -> _SocketT:
        """Wrap and return the given socket."""
        if self.context is None:
            self.context = self.get_context()
        return sock

    def _password_callback(
        self,
        password_max_length: int,
        _verify_twice: bool,
        password: Password | None,
        /,
    ) -> bytes:
        """Pass a passphrase to password protected private key."""
        b_password = b""  # returning a falsy value communicates an error
        if callable(password):
            # Called once, and kept for the engine and for reloads.
            password = self._key_password(None, f"private key file {self.private_key}")
        if isinstance(password, str):
            b_password = password.encode("utf-8")
        elif isinstance(password, bytes):
            b_password = password

        password_length = len(b_password)
        if password_length > password_max_length:
            _warn(
                f"User-provided password is {password_length} bytes long and will "
                f"be truncated since it exceeds the maximum of {password_max_length}.",
                UserWarning,
                stacklevel=1,
            )

        return b_password

    def get_context(self) -> SSL.Context:
        """Return an ``SSL.Context`` from self attributes (an ``ssl.SSLContext`` without
        pyOpenSSL)."""
        # The files are looked at first: OpenSSL's errors do not say which one is wrong.
        encrypted = check_pair(
            self.certificate, self.private_key, error=ssl.SSLError if SSL is None else SSL.Error
        )
        if not _PYOPENSSL:
            context = server_context(cafile=self.certificate_chain)
            try:
                # Not noted as loaded into the context: the adapter's attributes say it.
                ssl.SSLContext.load_cert_chain(
                    context, self.certificate, self.private_key, self.private_key_password
                )
            except ssl.SSLError as exc:
                raise explain(
                    exc,
                    self.certificate,
                    self.private_key,
                    encrypted=encrypted,
                    cert_what="certificate file",
                    key_what="private key file",
                ) from None
            if self.ciphers:
                context.set_ciphers(self.ciphers)
            return context  # type: ignore[return-value]  # without pyOpenSSL
        # An SSL.Context that remembers what is set on it (see Context), so that the engine
        # serves what the user sets: Cheroot's documented set-up calls pyOpenSSL on it.
        c = Context(SSL.SSLv23_METHOD)
        with warnings.catch_warnings():
            # pyOpenSSL 25 deprecates it; Cheroot's adapter uses it, so this one does.
            warnings.simplefilter("ignore", DeprecationWarning)
            c.set_passwd_cb(self._password_callback, self.private_key_password)
        # The adapter's own files are not noted as loaded into the context: its attributes
        # say them (and a reload reads them again).
        try:
            SSL.Context.use_privatekey_file(c, self.private_key or self.certificate)
        except SSL.Error as exc:
            # OpenSSL's words kept: code written for Cheroot (its own tests) looks for them.
            if not encrypted:
                raise
            raise SSL.Error(
                f"private key file {self.private_key or self.certificate}: the private key "
                f"cannot be decrypted with the password given: {exc}"
            ) from None
        if self.certificate_chain:
            c.load_verify_locations(self.certificate_chain)
        SSL.Context.use_certificate_file(c, self.certificate)
        return c

    def _prepare(self) -> None:
        # As Cheroot's bind() at start: a wrong password or key fails here, with
        # pyOpenSSL's own error.
        self.bind(None)
