"""Cheroot's pyOpenSSL adapter (``cheroot.ssl.pyopenssl``), served by stogie's engine.

The same signature as Cheroot's; the engine (rustls) serves it, so pyOpenSSL is not needed.
When it is installed, :meth:`pyOpenSSLAdapter.get_context` returns an ``OpenSSL.SSL.Context``
as Cheroot's does (its ``set_verify()`` mode is honoured, with ``certificate_chain`` as the
CA file), and the server checks the key with it at start, raising pyOpenSSL's own errors.
Without pyOpenSSL, ``get_context()`` returns an :class:`ssl.SSLContext` instead.
"""

import ssl
import warnings
from warnings import warn as _warn

from . import Adapter

try:
    from OpenSSL import SSL
except ImportError:
    SSL = None


class pyOpenSSLAdapter(Adapter):
    """A wrapper for integrating :doc:`pyOpenSSL <pyopenssl:index>`."""

    certificate = None
    """The file name of the server's TLS certificate."""

    private_key = None
    """The file name of the server's private key file."""

    certificate_chain = None
    """Optional. The file name of CA's intermediate certificate bundle."""

    context = None
    """An ``OpenSSL.SSL.Context`` (or an :class:`ssl.SSLContext` without pyOpenSSL)."""

    ciphers = None
    """The ciphers list of TLS."""

    private_key_password = None
    """Optional passphrase for password protected private key."""

    def bind(self, sock):
        """Wrap and return the given socket."""
        if self.context is None:
            self.context = self.get_context()
        return sock

    def _password_callback(self, password_max_length, _verify_twice, password, /):
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

    def get_context(self):
        """Return an ``SSL.Context`` from self attributes (an ``ssl.SSLContext`` without
        pyOpenSSL)."""
        if SSL is None:
            c = ssl.create_default_context(
                purpose=ssl.Purpose.CLIENT_AUTH, cafile=self.certificate_chain
            )
            c.load_cert_chain(
                self.certificate, self.private_key, password=self.private_key_password
            )
            if self.ciphers:
                c.set_ciphers(self.ciphers)
            return c
        c = SSL.Context(SSL.SSLv23_METHOD)
        with warnings.catch_warnings():
            # pyOpenSSL 25 deprecates it; Cheroot's adapter uses it, so this one does.
            warnings.simplefilter("ignore", DeprecationWarning)
            c.set_passwd_cb(self._password_callback, self.private_key_password)
        c.use_privatekey_file(self.private_key)
        if self.certificate_chain:
            c.load_verify_locations(self.certificate_chain)
        c.use_certificate_file(self.certificate)
        return c

    def _prepare(self):
        # As Cheroot's bind() at start: a wrong password or key fails here, with
        # pyOpenSSL's own error.
        self.bind(None)
