"""The ``stogie`` command's TLS options (gunicorn's names accepted too), and SIGHUP."""

from __future__ import annotations

import ssl
import sys

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from ..server import HTTPServer
    from .builtin import BuiltinSSLAdapter

VERIFY_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
VERSIONS = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The TLS options, in a group of their own."""
    group = parser.add_argument_group(
        "HTTPS", "Serve HTTPS (TLS 1.2 and 1.3). SIGHUP reloads the certificate and key."
    )
    group.add_argument(
        "--ssl-certificate",
        "--certfile",
        metavar="FILE",
        dest="ssl_certificate",
        help="the server's certificate (PEM), followed by its intermediates",
    )
    group.add_argument(
        "--ssl-private-key",
        "--keyfile",
        metavar="FILE",
        dest="ssl_private_key",
        help="its private key (PEM; default: in the certificate file)",
    )
    group.add_argument(
        "--ssl-certificate-chain",
        metavar="FILE",
        dest="ssl_certificate_chain",
        help="intermediate CA certificates sent with the certificate (PEM)",
    )
    group.add_argument(
        "--ssl-private-key-password-file",
        metavar="FILE",
        dest="ssl_private_key_password_file",
        help="a file holding the password of an encrypted private key (first line)",
    )
    group.add_argument(
        "--ssl-client-ca",
        "--ca-certs",
        metavar="FILE",
        dest="ssl_client_ca",
        help="CA certificates that client certificates are verified with (PEM)",
    )
    group.add_argument(
        "--ssl-client-verify",
        metavar="MODE",
        dest="ssl_client_verify",
        choices=tuple(VERIFY_MODES),
        help="client certificates: none, optional or required"
        " (default: required with --ssl-client-ca, else none)",
    )
    group.add_argument(
        "--ssl-ciphers",
        metavar="CIPHERS",
        dest="ssl_ciphers",
        help="OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are always on)",
    )
    group.add_argument(
        "--ssl-minimum-version",
        metavar="VERSION",
        dest="ssl_minimum_version",
        choices=tuple(VERSIONS),
        help="TLSv1.2 (default) or TLSv1.3",
    )


def make_adapter(opts: argparse.Namespace) -> BuiltinSSLAdapter | None:
    """The ssl adapter the options ask for, or None without --ssl-certificate.

    Raises:
        ValueError: options that do not go together, or a file that cannot be used.
    """
    tls_only = [
        name
        for name in (
            "ssl_private_key",
            "ssl_certificate_chain",
            "ssl_private_key_password_file",
            "ssl_client_ca",
            "ssl_client_verify",
            "ssl_ciphers",
            "ssl_minimum_version",
        )
        if getattr(opts, name, None) is not None
    ]
    if not opts.ssl_certificate:
        if tls_only:
            flag = "--" + tls_only[0].replace("_", "-")
            raise ValueError(f"{flag} needs --ssl-certificate")
        return None
    verify = opts.ssl_client_verify or ("required" if opts.ssl_client_ca else "none")
    if verify != "none" and not opts.ssl_client_ca:
        raise ValueError(f"--ssl-client-verify {verify} needs --ssl-client-ca")

    password = None
    if opts.ssl_private_key_password_file:
        try:
            with open(opts.ssl_private_key_password_file, "rb") as f:
                lines = f.read().splitlines()
            password = lines[0] if lines else b""
        except OSError as exc:
            raise ValueError(
                f"--ssl-private-key-password-file {opts.ssl_private_key_password_file}: "
                f"{exc.strerror or exc}"
            ) from None

    from ._files import check_pair
    from .builtin import BuiltinSSLAdapter

    try:
        # First with the options' names in the messages.
        encrypted = check_pair(
            opts.ssl_certificate,
            opts.ssl_private_key,
            cert_what="--ssl-certificate",
            key_what="--ssl-private-key",
        )
        if encrypted and password is None and not (sys.stdin is not None and sys.stdin.isatty()):
            raise ValueError(
                f"{'--ssl-private-key' if opts.ssl_private_key else '--ssl-certificate'} "
                f"{opts.ssl_private_key or opts.ssl_certificate}: the private key is "
                "encrypted: give its password with --ssl-private-key-password-file"
            )
        adapter = BuiltinSSLAdapter(
            opts.ssl_certificate,
            opts.ssl_private_key,
            ciphers=opts.ssl_ciphers,
            private_key_password=password,
        )
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(str(exc)) from None
    # Sent with the certificate, not trusted for client certificates (Cheroot's
    # constructor would load it as the context's CA file).
    adapter.certificate_chain = opts.ssl_certificate_chain
    context = adapter.context
    if opts.ssl_client_ca:
        try:
            context.load_verify_locations(cafile=opts.ssl_client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"--ssl-client-ca {opts.ssl_client_ca}: {exc}") from None
    context.verify_mode = VERIFY_MODES[verify]
    if opts.ssl_minimum_version:
        context.minimum_version = VERSIONS[opts.ssl_minimum_version]
    return adapter


def sighup_handler(server: HTTPServer) -> Callable[[], None] | None:
    """What SIGHUP does to a single-process server: reload its TLS certificate (None
    without TLS: SIGHUP is then logged and ignored; with workers it is a reload)."""
    if getattr(server, "ssl_adapter", None) is None:
        return None
    from . import reload_logged

    return lambda: reload_logged(server)
