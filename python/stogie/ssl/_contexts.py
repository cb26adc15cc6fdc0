"""Contexts that remember what is set on them, so that the engine can serve it.

Cheroot's documented way to configure TLS is to take the adapter's context and call the TLS
library on it: ``load_cert_chain()`` on the builtin adapter's :class:`ssl.SSLContext`;
``set_verify()``, ``get_cert_store().add_cert()``, ``use_certificate()``... on the
pyOpenSSL adapter's ``SSL.Context`` (trustme's ``configure_trust()``/``configure_cert()``
do exactly that). The engine does not use OpenSSL, so it must be told what was set, and
neither library can say it afterwards: the certificate and key loaded into a context, or
the CAs in a pyOpenSSL store, cannot be read back. So the contexts stogie hands out are
subclasses that note what is loaded into them as it is loaded. What no subclass can make
the engine do (a verify callback that decides differently from the verification, a CA
directory, CRLs) is noted too and refused by name when the server starts.
"""

from __future__ import annotations

import os
import ssl
import warnings

from . import _CERT_BLOCK, _ENCRYPTED, TLSError, _decrypt

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    # pyOpenSSL's types, for type checkers (Any where it is not installed).
    from OpenSSL import SSL, crypto

    from . import Adapter
else:
    try:
        from OpenSSL import SSL, crypto
    except ImportError:  # the pyOpenSSL adapter works without pyOpenSSL
        SSL = crypto = None


class Loaded:
    """A certificate chain or a private key loaded into a context: its PEM as it was when
    loaded, the file it came from (read again by a reload; None for an object), the name
    messages give it, and for a key the password that opened it (bytes or None)."""

    def __init__(
        self, pem: bytes, path: str | None, name: str, password: bytes | None = None
    ) -> None:
        self.pem, self.path, self.name, self.password = pem, path, name, password

    def text(self, reread: bool = False) -> bytes:
        """The PEM; with ``reread``, read from its file again (a reload)."""
        if reread and self.path is not None:
            try:
                with open(self.path, "rb") as f:
                    self.pem = f.read()
            except OSError as exc:
                raise TLSError(f"{self.name}: cannot be read: {exc.strerror or exc}") from None
        return self.pem

    def key_text(self, reread: bool = False) -> bytes:
        """The key as unencrypted PEM (decrypted with the password it was loaded with)."""
        pem = self.text(reread)
        if not _ENCRYPTED.search(pem):
            return pem
        if self.password is None:
            raise TLSError(
                f"{self.name}: the private key is encrypted, and its password did not come "
                "through the context (give it to load_cert_chain(), or set_passwd_cb())"
            )
        return _decrypt(pem, self.password, self.name)


def _file(path):
    with open(path, "rb") as f:
        return f.read()


def _password_bytes(password):
    if isinstance(password, str):
        return password.encode("utf-8")
    if isinstance(password, (bytes, bytearray)):
        return bytes(password)
    return None


def loaded_identity(context: object) -> tuple[Loaded | None, Sequence[bytes], Loaded | None]:
    """What the user loaded into ``context`` (one of stogie's; the adapter's own loads are
    not noted): ``(certificate, extra chain certificates, key)``, each None (or empty) when
    nothing was, in which case the adapter's own files are served."""
    return (
        getattr(context, "_stogie_cert", None),
        getattr(context, "_stogie_extra", ()),
        getattr(context, "_stogie_key", None),
    )


class SSLContext(ssl.SSLContext):
    """An :class:`ssl.SSLContext` that remembers the certificate chain and key loaded into
    it (``load_cert_chain()``), so that the engine serves them."""

    _stogie_cert = None
    _stogie_key = None

    def load_cert_chain(self, certfile, keyfile=None, password=None):
        """As :meth:`ssl.SSLContext.load_cert_chain`; the files are read as they are now
        (trustme passes a temporary file) and a reload reads them again."""
        given = []  # the password OpenSSL was given, to decrypt the key for the engine
        if callable(password):
            ask = password

            def asked():
                given.append(ask())
                return given[-1]

            super().load_cert_chain(certfile, keyfile, asked)
        else:
            given.append(password)
            super().load_cert_chain(certfile, keyfile, password)
        certfile, keyfile = os.fspath(certfile), os.fspath(keyfile or certfile)
        self._stogie_cert = Loaded(_file(certfile), certfile, f"certificate file {certfile}")
        self._stogie_key = Loaded(
            _file(keyfile),
            keyfile,
            f"private key file {keyfile}",
            _password_bytes(given[-1]) if given else None,
        )


def server_context(cafile: str | os.PathLike[str] | None = None) -> SSLContext:
    """What ``ssl.create_default_context(Purpose.CLIENT_AUTH, cafile=cafile)`` makes, as a
    :class:`SSLContext`. (Its SSLKEYLOGFILE set-up is left out: the engine cannot write
    key logs, and refuses a context that asks for one.)"""
    context = SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if cafile:
        context.load_verify_locations(cafile=cafile)
    return context


# --- pyOpenSSL --------------------------------------------------------------------------


def _der(cert):
    """DER of a pyOpenSSL ``X509`` or a cryptography certificate."""
    from cryptography.hazmat.primitives.serialization import Encoding

    if hasattr(cert, "to_cryptography"):
        cert = cert.to_cryptography()
    return cert.public_bytes(Encoding.DER)


def _pem(cert):
    return ssl.DER_cert_to_PEM_cert(_der(cert)).encode("ascii")


def _key_pem(key):
    """Unencrypted PKCS#8 PEM of a pyOpenSSL ``PKey`` or a cryptography private key."""
    from cryptography.hazmat.primitives import serialization

    if hasattr(key, "to_cryptography_key"):
        key = key.to_cryptography_key()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cas_in(pem):
    """The DER of every certificate in PEM text."""
    return [ssl.PEM_cert_to_DER_cert(m.group(0).decode("ascii")) for m in _CERT_BLOCK.finditer(pem)]


# The verification pyOpenSSL's set_verify() callbacks are asked about, to tell one that
# passes OpenSSL's verdict through (Cheroot's tests: `lambda conn, cert, errno, depth, ok:
# ok`) from one that decides otherwise. X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY.
_UNKNOWN_ISSUER = 20


def passes_verdict_through(callback):
    """Whether a ``set_verify()`` callback returns OpenSSL's verdict (``preverify_ok``)
    unchanged. The engine verifies client certificates itself and cannot call it, so only
    such a callback can be honoured. It is called twice, without a connection or a
    certificate: a callback that looks at them (to be stricter) raises, and is refused."""
    try:
        return bool(callback(None, None, 0, 0, 1)) and not callback(
            None, None, _UNKNOWN_ISSUER, 0, 0
        )
    except Exception:  # noqa: BLE001 - any failure means it needs what it cannot have
        return False


if SSL is not None:

    class _Store(crypto.X509Store):
        """The store of a :class:`Context` (what ``get_cert_store()`` returns): the CAs
        added to it are noted on the context."""

        def add_cert(self, cert):
            super().add_cert(cert)
            self._stogie_context._stogie_cas.append(_der(cert))

        def load_locations(self, cafile, capath=None):
            super().load_locations(cafile, capath)
            self._stogie_context._note_locations("get_cert_store().load_locations", cafile, capath)

        def add_crl(self, crl):
            super().add_crl(crl)
            self._stogie_context._refuse(
                "get_cert_store().add_crl()", "certificate revocation lists are not supported"
            )

        def set_flags(self, flags):
            super().set_flags(flags)
            if flags & (crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL):
                self._stogie_context._refuse(
                    "get_cert_store().set_flags(CRL_CHECK)",
                    "certificate revocation lists are not supported",
                )

        def set_time(self, vfy_time):
            super().set_time(vfy_time)
            self._stogie_context._refuse(
                "get_cert_store().set_time()", "client certificates are verified at the time"
            )

    class Context(SSL.Context):
        """An ``OpenSSL.SSL.Context`` that remembers what is set on it, so that the engine
        serves it: the certificate, extra chain certificates and key (``use_*``), the CAs
        that client certificates are verified with (``load_verify_locations()``,
        ``get_cert_store().add_cert()``), ``set_verify()``, the protocol versions. Options
        and ciphers are read from OpenSSL itself. What the engine cannot do is refused by
        name when the server starts (a :class:`stogie.ssl.TLSError`)."""

        def __init__(self, method: int = SSL.TLS_METHOD) -> None:
            super().__init__(method)
            # trustme's configure_trust()/configure_cert() recognise a pyOpenSSL context
            # by its __module__; the class keeps its own.
            self.__module__ = "OpenSSL.SSL"
            self._stogie_cert: Loaded | None = None
            self._stogie_extra: list[bytes] = []
            self._stogie_key: Loaded | None = None
            self._stogie_cas: list[bytes] = []
            self._stogie_callback: Any = None
            self._stogie_versions = [0, 0]
            # call -> why, for calls only verification needs
            self._stogie_refused: dict[str, str] = {}
            # call -> why, whatever the verification
            self._stogie_unservable: dict[str, str] = {}
            self._stogie_password: bytes | None = None
            # (set_cipher_list or set_tls13_ciphersuites, value)
            self._stogie_ciphers: list[tuple[str, Any]] = []

        def __repr__(self):
            return f"<stogie.ssl.pyopenssl.Context (an OpenSSL.SSL.Context) at {id(self):#x}>"

        def _refuse(self, call, why, *, always=False):
            (self._stogie_unservable if always else self._stogie_refused)[call] = why

        def _note_locations(self, call, cafile, capath):
            if cafile is not None:
                self._stogie_cas.extend(_cas_in(_file(cafile)))
            if capath is not None:
                self._refuse(
                    f"{call}(capath=...)",
                    "a CA directory is read by OpenSSL as it needs it and cannot be read "
                    "by stogie: give the CAs in a cafile",
                )

        # -- the server's certificate and key -----------------------------------------

        def set_passwd_cb(self, callback: Any, userdata: Any = None) -> None:
            """As pyOpenSSL's; the password it gives is remembered for the engine."""

            def remembering(maxlen, verify, data):
                password = callback(maxlen, verify, data)
                self._stogie_password = _password_bytes(password)
                return password

            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                super().set_passwd_cb(remembering, userdata)
            for w in said:  # pyOpenSSL's deprecation, said of the caller's line
                warnings.warn(w.message, w.category, stacklevel=2)

        def use_certificate_file(self, certfile, filetype=SSL.FILETYPE_PEM):
            super().use_certificate_file(certfile, filetype)
            certfile = os.fspath(certfile)
            data = _file(certfile)
            pem = _pem(crypto.load_certificate(filetype, data))
            self._stogie_cert = Loaded(pem, certfile, f"certificate file {certfile}")
            if filetype != SSL.FILETYPE_PEM:
                self._stogie_cert.path = None  # served as loaded; a reload cannot convert

        def use_certificate_chain_file(self, certfile):
            super().use_certificate_chain_file(certfile)
            certfile = os.fspath(certfile)
            self._stogie_cert = Loaded(_file(certfile), certfile, f"certificate file {certfile}")
            self._stogie_extra = []

        def use_certificate(self, cert):
            super().use_certificate(cert)
            self._stogie_cert = Loaded(
                _pem(cert), None, "the certificate given to context.use_certificate()"
            )

        def add_extra_chain_cert(self, certobj):
            super().add_extra_chain_cert(certobj)
            self._stogie_extra.append(_pem(certobj))

        def use_privatekey_file(self, keyfile, filetype=SSL.FILETYPE_PEM):
            self._stogie_password = None
            super().use_privatekey_file(keyfile, filetype)
            keyfile = os.fspath(keyfile)
            name = f"private key file {keyfile}"
            data = _file(keyfile)
            if filetype == SSL.FILETYPE_PEM:
                self._stogie_key = Loaded(data, keyfile, name, self._stogie_password)
            else:
                key = crypto.load_privatekey(filetype, data, self._stogie_password or b"")
                self._stogie_key = Loaded(_key_pem(key), None, name)

        def use_privatekey(self, pkey):
            super().use_privatekey(pkey)
            self._stogie_key = Loaded(
                _key_pem(pkey), None, "the private key given to context.use_privatekey()"
            )

        # -- client certificates -------------------------------------------------------

        def load_verify_locations(self, cafile: Any, capath: Any = None) -> None:
            super().load_verify_locations(cafile, capath)
            self._note_locations("context.load_verify_locations", cafile, capath)

        def set_default_verify_paths(self):
            super().set_default_verify_paths()
            self._refuse(
                "context.set_default_verify_paths()",
                "the system's CA store is not used for client certificates: give the CAs "
                "with load_verify_locations(cafile)",
            )

        def get_cert_store(self):
            store = super().get_cert_store()
            if store is not None:
                store.__class__ = _Store
                store._stogie_context = self
            return store

        def set_verify(self, mode, callback=None):
            super().set_verify(mode, callback)
            self._stogie_callback = callback

        def set_verify_depth(self, depth):
            super().set_verify_depth(depth)
            self._refuse(
                "context.set_verify_depth()",
                "stogie cannot limit the length of client certificate chains",
            )

        # -- protocol --------------------------------------------------------------------

        def set_cipher_list(self, cipher_list):
            super().set_cipher_list(cipher_list)
            self._stogie_ciphers.append(("set_cipher_list", cipher_list))

        def set_tls13_ciphersuites(self, ciphersuites):
            super().set_tls13_ciphersuites(ciphersuites)
            self._stogie_ciphers.append(("set_tls13_ciphersuites", ciphersuites))

        def set_min_proto_version(self, version):
            super().set_min_proto_version(version)
            self._stogie_versions[0] = version

        def set_max_proto_version(self, version):
            super().set_max_proto_version(version)
            self._stogie_versions[1] = version

        def set_tlsext_servername_callback(self, callback):
            super().set_tlsext_servername_callback(callback)
            self._refuse(
                "context.set_tlsext_servername_callback()",
                "stogie does not call it (the engine picks the certificate; SSL_TLS_SNI "
                "carries the name asked for)",
                always=True,
            )

        def set_alpn_select_callback(self, callback):
            super().set_alpn_select_callback(callback)
            self._refuse(
                "context.set_alpn_select_callback()",
                "the engine chooses the protocol (http/1.1) itself",
                always=True,
            )

        def set_keylog_callback(self, callback):
            super().set_keylog_callback(callback)
            self._refuse("context.set_keylog_callback()", "not supported by stogie", always=True)

        def set_ocsp_server_callback(self, callback, data=None):
            super().set_ocsp_server_callback(callback, data)
            self._refuse(
                "context.set_ocsp_server_callback()",
                "OCSP stapling is not supported by stogie",
                always=True,
            )

else:
    Context = None  # type: ignore[misc,unreachable]


# What the engine takes of a pyOpenSSL context ---------------------------------------------

_VERSIONS = {0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
_VERSION_NAMES = {0x0300: "SSL3_VERSION", 0x0301: "TLS1_VERSION", 0x0302: "TLS1_1_VERSION"}


def _store_size(context):
    """How many objects a pyOpenSSL context's store holds, or None when that cannot be
    known (it is read through pyOpenSSL's private bindings)."""
    try:
        from OpenSSL._util import lib

        return lib.sk_X509_OBJECT_num(lib.X509_STORE_get0_objects(context.get_cert_store()._store))
    except Exception:  # noqa: BLE001 - another pyOpenSSL: unknown
        return None


def _verify_settings(context, adapter_cas, verifying):
    """client_verify and client_cas of a pyOpenSSL context that verifies clients."""
    if isinstance(context, Context):
        for call, why in context._stogie_refused.items():
            raise TLSError(f"{call}: {why}")
        callback = context._stogie_callback
        if callback is not None and not passes_verdict_through(callback):
            raise TLSError(
                "context.set_verify(): stogie verifies client certificates itself (rustls) "
                "and cannot call the callback, which does not return OpenSSL's verdict "
                "(preverify_ok) unchanged: pass callback=None, or one that returns "
                "preverify_ok"
            )
        cas = context._stogie_cas
        if not cas:
            raise TLSError(
                f"context.set_verify({verifying}): there are no CA certificates to verify "
                "client certificates with: add them with context.load_verify_locations(cafile) "
                "or context.get_cert_store().add_cert()"
            )
        return cas
    # An OpenSSL.SSL.Context made elsewhere (CherryPy's ssl_context, Cheroot's own adapter):
    # its store cannot be read back, so the CAs are those of certificate_chain (what
    # Cheroot's get_context() loads into it), if that is all its store holds.
    made_elsewhere = (
        "an OpenSSL.SSL.Context that stogie did not make cannot have its CAs read back: "
        "make it with adapter.get_context() or stogie.ssl.pyopenssl.Context()"
    )
    if getattr(context, "_verify_helper", None) is not None:
        raise TLSError(
            "context.set_verify(): the callback of " + made_elsewhere + " (where a callback "
            "that returns preverify_ok is honoured)"
        )
    size = _store_size(context)
    if not adapter_cas or (size is not None and size != len(adapter_cas)):
        raise TLSError(
            f"context.set_verify({verifying}): the CAs to verify client certificates with are "
            f"those of certificate_chain, and {made_elsewhere}"
        )
    return adapter_cas


def _cipher_names(context):
    """The names of the ciphers a pyOpenSSL context offers, read through a connection made
    of it: of a copy of its cipher calls for one of stogie's, or, for a context made
    elsewhere, of the context itself (pyOpenSSL then takes it as used and refuses further
    changes to it, as it does once Cheroot serves it)."""
    if isinstance(context, Context):
        if not context._stogie_ciphers:
            return None  # all of rustls's
        probe = SSL.Context(SSL.TLS_METHOD)
        for call, value in context._stogie_ciphers:
            getattr(probe, call)(value)
        context = probe
    return SSL.Connection(context, None).get_cipher_list()


def pyopenssl_settings(context: Any, adapter: Adapter) -> dict[str, Any]:
    """What a pyOpenSSL ``SSL.Context`` says about client certificates, versions, options
    and ciphers; a setting the engine cannot honour is refused, naming the call."""
    ours = isinstance(context, Context)
    if ours:
        for call, why in context._stogie_unservable.items():
            raise TLSError(f"{call}: {why}")
    # First: set_options() is refused on a context pyOpenSSL takes as used.
    options = context.set_options(0)  # adds nothing: returns the options in effect
    settings = {}
    if adapter.certificate:
        served_elsewhere(context, _file(adapter.certificate))
    if adapter.ciphers:
        settings.update(adapter._cipher_settings(None))
    else:
        names = _cipher_names(context)
        if names is not None:
            settings["ciphers"] = names
    low, high = "TLSv1.2", "TLSv1.3"
    if ours:
        for i, call in enumerate(("set_min_proto_version", "set_max_proto_version")):
            version = context._stogie_versions[i]
            if version == 0:
                continue
            if version not in _VERSIONS:
                name = _VERSION_NAMES.get(version, hex(version))
                raise TLSError(
                    f"context.{call}({name}): stogie (rustls) speaks TLS 1.2 and 1.3 only"
                )
            if i == 0:
                low = _VERSIONS[version]
            else:
                high = _VERSIONS[version]
    if options & ssl.OP_NO_TLSv1_2 and low == "TLSv1.2":
        low = "TLSv1.3"
    if options & ssl.OP_NO_TLSv1_3 and high == "TLSv1.3":
        high = "TLSv1.2"
    if low > high:
        raise TLSError(
            f"context: the lowest TLS version allowed ({low}) is above the highest ({high})"
        )
    settings["min_version"], settings["max_version"] = low, high
    settings["session_tickets"] = not options & ssl.OP_NO_TICKET
    settings["prefer_server_ciphers"] = bool(options & ssl.OP_CIPHER_SERVER_PREFERENCE)

    mode = context.get_verify_mode()
    if not mode & SSL.VERIFY_PEER:
        settings["client_verify"] = "none"
        return settings
    required = bool(mode & SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    verifying = "VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT" if required else "VERIFY_PEER"
    adapter_cas = _cas_in(_file(adapter.certificate_chain)) if adapter.certificate_chain else []
    settings["client_cas"] = _verify_settings(context, adapter_cas, verifying)
    settings["client_verify"] = "required" if required else "optional"
    return settings


def served_elsewhere(context, certificate_pem):
    """For an ``OpenSSL.SSL.Context`` stogie did not make: refuses one whose certificate is
    not the adapter's (its key cannot be read back, so it could not be served)."""
    if isinstance(context, Context):
        return
    cert = SSL.Connection(context, None).get_certificate()
    if cert is None:
        return
    blocks = _CERT_BLOCK.findall(certificate_pem)
    if blocks and _der(cert) == ssl.PEM_cert_to_DER_cert(blocks[0].decode("ascii")):
        return
    raise TLSError(
        "context.use_certificate(): the certificate on an OpenSSL.SSL.Context that stogie "
        "did not make is not the adapter's, and its key cannot be read back to serve it: "
        "make the context with adapter.get_context() or stogie.ssl.pyopenssl.Context()"
    )
