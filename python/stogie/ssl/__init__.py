"""TLS adapters with Cheroot's names (``cheroot.ssl``), served by stogie's engine (rustls).

An adapter gathers what the engine needs and hands it over when the server starts: the
certificate and key files (an encrypted key decrypted with ``private_key_password``), an
intermediate bundle (``certificate_chain``), and the settings of its ``context``:
``verify_mode`` with the CA certificates loaded into it (client certificates),
``minimum_version``/``maximum_version`` and the ciphers. A setting the engine cannot honour
is refused with a :class:`TLSError` that names it. No socket is wrapped in Python:
handshakes happen in the engine, off the GIL.
"""

from __future__ import annotations

import getpass
import re
import ssl as _ssl
import sys
import threading

from .. import __version__
from .._native import TLS_LIBRARY, TLSError

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn, TypeVar

    from .._native import NativeServer
    from .._typing import Password, StrPath
    from ..server import HTTPServer

    _SocketT = TypeVar("_SocketT")

__all__ = ("Adapter", "TLSError")

# Encrypted keys: PKCS#8 "ENCRYPTED PRIVATE KEY", or OpenSSL's traditional PEM encryption.
_ENCRYPTED = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,\s*ENCRYPTED")
_KEY_BLOCK = re.compile(
    rb"-----BEGIN ((?:ENCRYPTED |RSA |EC |DSA )?PRIVATE KEY)-----.*?-----END \1-----", re.S
)
_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)

_VERSIONS = {
    _ssl.TLSVersion.TLSv1_2: "TLSv1.2",
    _ssl.TLSVersion.TLSv1_3: "TLSv1.3",
}


def _read(path: StrPath, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TLSError(f"{what} file {path}: cannot be read: {exc.strerror or exc}") from None


def _password_bytes(password: Password | bytearray, key_name: str) -> bytes:
    """``private_key_password`` (str, bytes or a callable returning one) as bytes."""
    if callable(password):
        password = password()
    if isinstance(password, str):
        return password.encode("utf-8")
    if isinstance(password, (bytes, bytearray)):
        return bytes(password)
    raise TLSError(
        f"{key_name}: private_key_password must be str, bytes or a callable returning one, "
        f"not {type(password).__name__}"
    )


def _decrypt(key_pem: bytes, password: bytes | None, key_name: str) -> bytes:
    """The first private key of ``key_pem``, decrypted, as unencrypted PKCS#8 PEM."""
    block = _KEY_BLOCK.search(key_pem)
    if block is None:
        raise TLSError(f"{key_name}: no private key found")
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise TLSError(
            f"{key_name}: the private key is encrypted, and decrypting it needs the "
            "'cryptography' package (pip install cryptography)"
        ) from None
    try:
        key = serialization.load_pem_private_key(block.group(0), password=password)
    except (ValueError, TypeError) as exc:
        raise TLSError(
            f"{key_name}: the private key cannot be decrypted (wrong password?): {exc}"
        ) from None
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Adapter:
    """Base class for SSL driver library adapters.

    Required methods:

        * ``wrap(sock) -> (wrapped socket, ssl environ dict)``
        * ``makefile(sock, mode='r', bufsize=DEFAULT_BUFFER_SIZE) ->
          socket file object``

    In stogie the engine does the handshakes: ``wrap`` and ``makefile`` are not called.
    """

    certificate: StrPath
    """The file name of the server's certificate (which may hold the private key too)."""

    private_key: StrPath | None
    """The file name of the server's private key, or None when the certificate file holds
    it."""

    certificate_chain: StrPath | None
    """The file name of the intermediate certificates to send with the certificate."""

    ciphers: str | None
    """The ciphers to offer, as an OpenSSL cipher string."""

    private_key_password: Password | None
    """The password of an encrypted private key, or a callable that returns it."""

    context: Any
    """The TLS library's context, whose settings are served (the subclasses say which)."""

    def __init__(
        self,
        certificate: StrPath,
        private_key: StrPath | None,
        certificate_chain: StrPath | None = None,
        ciphers: str | None = None,
        *,
        private_key_password: Password | None = None,
    ) -> None:
        """Set up certificates, private key ciphers and reset context."""
        self.certificate = certificate
        self.private_key = private_key
        self.certificate_chain = certificate_chain
        self.ciphers = ciphers
        self.private_key_password = private_key_password
        self.context = None

    def bind(self, sock: _SocketT) -> _SocketT:
        """Wrap and return the given socket."""
        return sock

    def wrap(self, sock: object) -> NoReturn:
        """Wrap and return the given socket, plus WSGI environ entries."""
        raise NotImplementedError("stogie's engine does the TLS handshakes; nothing is wrapped")

    def get_environ(self, sock: object = None) -> dict[str, str]:
        """Return the WSGI environ entries every HTTPS request has.

        The per-connection ones (``SSL_PROTOCOL``, ``SSL_CLIENT_*``, ...) are made by the
        engine when the handshake ends.
        """
        return {
            "wsgi.url_scheme": "https",
            "HTTPS": "on",
            "SSL_VERSION_INTERFACE": f"Stogie/{__version__} Python/{sys.version}",
            "SSL_VERSION_LIBRARY": TLS_LIBRARY,
        }

    def makefile(self, sock: object, mode: str = "r", bufsize: int = -1) -> NoReturn:
        """Return socket file object."""
        raise NotImplementedError("stogie's engine does the TLS handshakes; nothing is wrapped")

    # --- what the engine is given (stogie) -------------------------------------------------

    _password: bytes | None = None  # the password resolved once, kept for reloads

    def _key_password(self, key_pem: bytes | None, key_name: str) -> bytes:
        """The key's password as bytes, asked for once (a callable is called once; on a
        terminal with no password given, it is prompted for, as OpenSSL does)."""
        if self._password is not None:
            return self._password
        password = self.private_key_password
        if password is None:
            if not (sys.stdin is not None and sys.stdin.isatty()):
                raise TLSError(
                    f"{key_name}: the private key is encrypted and no password was given "
                    "(private_key_password)"
                )
            password = getpass.getpass(f"Enter PEM pass phrase for {self.private_key}: ")
        self._password = _password_bytes(password, key_name)
        return self._password

    def _key_pem(self, key_pem: bytes, key_name: str) -> bytes:
        if _ENCRYPTED.search(key_pem):
            return _decrypt(key_pem, self._key_password(key_pem, key_name), key_name)
        return key_pem

    def _tls_identity(self, reread: bool = False) -> dict[str, Any]:
        """The certificate chain and key (decrypted): those loaded into the context after
        the adapter made it (``load_cert_chain()``, ``use_certificate()``...), else the
        adapter's files, read now. ``reread``: a reload, which reads files again."""
        from ._contexts import loaded_identity

        loaded_cert, extra, loaded_key = loaded_identity(self.context)
        if loaded_cert is not None:
            cert_name, cert = loaded_cert.name, loaded_cert.text(reread) + b"".join(extra)
        elif not self.certificate:
            raise TLSError("the SSL adapter has no certificate file")
        else:
            cert_name = f"certificate file {self.certificate}"
            cert = _read(self.certificate, "certificate") + b"".join(extra)
        if loaded_key is not None:
            key_name, key = loaded_key.name, loaded_key.key_text(reread)
        else:
            # The adapter's key file, or its certificate file holding the key too.
            what = "private key" if self.private_key else "certificate"
            key_file = self.private_key or self.certificate
            if not key_file:
                raise TLSError("the SSL adapter has no private key file")
            key_name = f"{what} file {key_file}"
            key = self._key_pem(_read(key_file, what), key_name)
        settings: dict[str, Any] = {
            "cert": cert,
            "cert_name": cert_name,
            "key": key,
            "key_name": key_name,
        }
        if self.certificate_chain:
            settings["chain"] = _read(self.certificate_chain, "certificate chain")
            settings["chain_name"] = f"certificate chain file {self.certificate_chain}"
        return settings

    def _prepare(self) -> None:
        """Called when a server starts with this adapter, before anything is read."""

    # A refused client certificate is logged once per reason per client address in this
    # many seconds (the ones in between are counted in the next line); tests shorten it.
    _refusal_log_interval: float = 60.0

    def _tls_settings(self) -> dict[str, Any]:
        """Everything ``NativeServer.set_tls`` takes, but the interface name."""
        self._prepare()
        settings = self._tls_identity()
        settings.update(self._context_settings())
        settings["refusal_log_interval"] = self._refusal_log_interval
        return settings

    def _context_settings(self) -> dict[str, Any]:
        context = self.context
        if context is None:
            return self._cipher_settings(None)
        if isinstance(context, _ssl.SSLContext):
            return _ssl_context_settings(context)
        if hasattr(context, "get_verify_mode"):
            from ._contexts import pyopenssl_settings

            return pyopenssl_settings(context, self)
        raise TLSError(f"context: a {type(context).__name__} cannot be read; use an ssl.SSLContext")

    def _cipher_settings(self, ciphers: str | None) -> dict[str, Any]:
        """The cipher names an OpenSSL cipher string selects (OpenSSL itself reads it)."""
        ciphers = self.ciphers if ciphers is None else ciphers
        if not ciphers:
            return {}
        probe = _ssl.SSLContext(_ssl.PROTOCOL_TLS_SERVER)
        try:
            probe.set_ciphers(ciphers)
        except _ssl.SSLError:
            raise TLSError(f"ciphers {ciphers!r}: OpenSSL selects no cipher from it") from None
        return {"ciphers": [c["name"] for c in probe.get_ciphers()]}


def _ssl_context_settings(context: _ssl.SSLContext) -> dict[str, Any]:
    """What an ``ssl.SSLContext`` says about client certificates, versions and ciphers; a
    setting rustls cannot honour is refused, naming it."""
    settings: dict[str, Any] = {}
    verify = {
        _ssl.CERT_NONE: "none",
        _ssl.CERT_OPTIONAL: "optional",
        _ssl.CERT_REQUIRED: "required",
    }[context.verify_mode]
    settings["client_verify"] = verify
    if verify != "none":
        cas = context.get_ca_certs(binary_form=True)
        if not cas:
            raise TLSError(
                f"context.verify_mode is {context.verify_mode.name}, but the context has no "
                "CA certificates to verify client certificates with: load them with "
                "load_verify_locations(cafile=...) (a capath directory or the system store "
                "cannot be read back)"
            )
        settings["client_cas"] = cas
    if context.verify_flags & (_ssl.VERIFY_CRL_CHECK_LEAF | _ssl.VERIFY_CRL_CHECK_CHAIN):
        raise TLSError("context.verify_flags: CRL checks are not supported by stogie")
    callback = context.sni_callback
    if callback is not None and not (
        # Cheroot's own (a Cheroot adapter puts it on its context): it only notes the name.
        getattr(callback, "__module__", "") == "cheroot.ssl.builtin"
        and getattr(callback, "__name__", "") == "_sni_callback"
    ):
        raise TLSError(
            "context.sni_callback: stogie does not call it (the engine picks the "
            "certificate); leave it unset (SSL_TLS_SNI carries the name asked for)"
        )
    if getattr(context, "keylog_filename", None):
        raise TLSError("context.keylog_filename: not supported by stogie")

    low, high = context.minimum_version, context.maximum_version
    if low == _ssl.TLSVersion.MINIMUM_SUPPORTED:
        low = _ssl.TLSVersion.TLSv1_2
    if high == _ssl.TLSVersion.MAXIMUM_SUPPORTED:
        high = _ssl.TLSVersion.TLSv1_3
    options = context.options
    if options & _ssl.OP_NO_TLSv1_2 and low <= _ssl.TLSVersion.TLSv1_2:
        low = _ssl.TLSVersion.TLSv1_3
    if options & _ssl.OP_NO_TLSv1_3 and high >= _ssl.TLSVersion.TLSv1_3:
        high = _ssl.TLSVersion.TLSv1_2
    for name, version in (("minimum_version", low), ("maximum_version", high)):
        if version not in _VERSIONS:
            raise TLSError(
                f"context.{name} is {version.name}: stogie (rustls) speaks TLSv1_2 and TLSv1_3 only"
            )
    if low > high:
        raise TLSError(
            f"context.minimum_version {low.name} is above context.maximum_version {high.name}"
        )
    settings["min_version"] = _VERSIONS[low]
    settings["max_version"] = _VERSIONS[high]
    settings["session_tickets"] = not options & _ssl.OP_NO_TICKET
    settings["prefer_server_ciphers"] = bool(options & _ssl.OP_CIPHER_SERVER_PREFERENCE)
    settings["ciphers"] = [c["name"] for c in context.get_ciphers()]
    return settings


def _engine_adapter(adapter: Any) -> Adapter:
    """``adapter``, or one of stogie's with its files and context when it is another
    library's (a ``cheroot.ssl`` adapter left in an import that was not changed)."""
    if isinstance(adapter, Adapter):
        return adapter
    try:
        files = (adapter.certificate, adapter.private_key, adapter.certificate_chain)
    except AttributeError:
        raise TypeError(
            f"ssl_adapter must be a stogie.ssl adapter (BuiltinSSLAdapter), not {adapter!r}"
        ) from None
    ours = Adapter(
        *files,
        getattr(adapter, "ciphers", None),
        private_key_password=getattr(adapter, "private_key_password", None),
    )
    ours.context = getattr(adapter, "context", None)
    return ours


def configure(server: HTTPServer, native: NativeServer) -> None:
    """Hand the server's ``ssl_adapter`` to the engine (from ``HTTPServer.prepare()``)."""
    adapter = _engine_adapter(server.ssl_adapter)
    try:
        settings = adapter._tls_settings()
        settings["interface"] = f"{server.version} Python/{sys.version}"
        native.set_tls(**settings)
    except Exception as exc:
        if threading.current_thread() is not threading.main_thread():
            # safe_start() in a thread: the exception ends that thread, where nobody may
            # see it, while its starter waits for `ready`. Said where errors are logged.
            server.error_log(f"HTTPS cannot be served, the server does not start: {exc}", 40)
        raise


def reload(server: HTTPServer) -> None:
    """``HTTPServer.reload_tls()``: read the certificate and key files again."""
    adapter = server.ssl_adapter
    if adapter is None:
        raise RuntimeError("the server has no ssl_adapter: there is no certificate to reload")
    if server._supervisor is not None:
        # Worker processes: a reload (new workers, which read the files, then the old ones
        # drain), as SIGHUP does.
        server.reload()
        return
    native = server._native
    if native is None:
        return  # not serving: prepare() reads the files
    native.reload_tls(**_engine_adapter(adapter)._tls_identity(reread=True))
    server.error_log(f"TLS certificate reloaded from {adapter.certificate}", level=20)


def reload_logged(server: HTTPServer) -> None:
    """A reload on SIGHUP: a failure is logged, and the old certificate stays."""
    try:
        reload(server)
    except Exception as exc:  # noqa: BLE001 - logged; the server goes on with the old pair
        server.error_log(f"TLS reload failed, the old certificate stays: {exc}", level=40)
