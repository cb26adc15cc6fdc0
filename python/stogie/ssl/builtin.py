"""Cheroot's builtin TLS adapter (``cheroot.ssl.builtin``), served by stogie's engine.

As in Cheroot, the constructor makes ``context``, an :class:`ssl.SSLContext` for
``Purpose.CLIENT_AUTH`` with ``certificate_chain`` as its CA file, and loads the certificate
and key into it, so a wrong password, a missing file or a key that does not match fails
there with the same exception types (their messages name the file at fault and say what is
wrong). What is set on ``context`` afterwards (``verify_mode``, CAs,
``minimum_version``/``maximum_version``, ciphers, a certificate and key loaded with
``load_cert_chain()``: the context remembers them) is honoured when the server starts; a
context assigned whole (CherryPy's ``server.ssl_context``) too, but for a certificate
loaded into it, which cannot be read back: the adapter's files are served.
"""

from __future__ import annotations

import ssl

from . import Adapter
from ._contexts import server_context
from ._files import check_pair, explain

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._typing import Password, StrPath


class BuiltinSSLAdapter(Adapter):
    """Wrapper for integrating Python's builtin :py:mod:`ssl` with stogie."""

    certificate: StrPath = None  # type: ignore[assignment]  # the constructor's
    """The file name of the server SSL certificate."""

    private_key: StrPath | None = None
    """The file name of the server's private key file."""

    certificate_chain: StrPath | None = None
    """The file name of the certificate chain file."""

    ciphers: str | None = None
    """The ciphers list of SSL."""

    private_key_password: Password | None = None
    """Optional passphrase for password protected private key."""

    context: ssl.SSLContext
    """The :class:`ssl.SSLContext` served, whose settings are honoured when the server
    starts."""

    def __init__(
        self,
        certificate: StrPath,
        private_key: StrPath | None,
        certificate_chain: StrPath | None = None,
        ciphers: str | None = None,
        *,
        private_key_password: Password | None = None,
    ) -> None:
        """Set up context in addition to base class properties if available."""
        super().__init__(
            certificate,
            private_key,
            certificate_chain,
            ciphers,
            private_key_password=private_key_password,
        )
        # ssl.create_default_context(Purpose.CLIENT_AUTH, cafile=...), as one that
        # remembers a certificate loaded into it later, to serve that one.
        self.context = server_context(cafile=certificate_chain)
        password = private_key_password
        key_file = private_key or certificate
        # The files are looked at first: OpenSSL's errors do not say which one is wrong.
        encrypted = check_pair(certificate, private_key)
        if encrypted and (password is None or callable(password)):
            # Asked for once (a callable called, or a prompt on a terminal) and kept for
            # the engine and for reloads.
            password = self._key_password(None, f"private key file {key_file}")
        try:
            # Not noted as loaded into the context: the adapter's attributes say it.
            ssl.SSLContext.load_cert_chain(self.context, certificate, private_key, password)
        except ssl.SSLError as exc:
            raise explain(
                exc,
                certificate,
                private_key,
                encrypted=encrypted,
                cert_what="certificate file",
                key_what="private key file",
            ) from None
        if self.ciphers is not None:
            self.context.set_ciphers(self.ciphers)
