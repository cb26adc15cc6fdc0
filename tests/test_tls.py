"""HTTPS through Cheroot's adapter API: real certificates (trustme, cryptography), real
clients (ssl, http.client, requests), the environ, client certificates, keys and their
passwords, reload, and the wrong protocol on the port."""

import contextlib
import datetime
import http.client
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import warnings

import pytest
import requests
import trustme
from tlskit import (
    OPENSSL,
    PASSWORD,
    Pki,
    cert_version,
    environ_app,
    https_get,
    key_bytes,
    load_key,
    openssl_cert,
    self_signed,
    tls_connect,
)

from conftest import hello_app, plain_signature, running
from stogie import server, wsgi
from stogie._native import MAKE_V3_CERTIFICATE
from stogie.ssl import TLSError
from stogie.ssl.builtin import BuiltinSSLAdapter
from stogie.ssl.pyopenssl import pyOpenSSLAdapter


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


@pytest.fixture
def tls_serve(pki):
    """``tls_serve(app, adapter=None, **server_kwargs)``: a running HTTPS server (the
    builtin adapter on the pki's files by default)."""
    stack = contextlib.ExitStack()

    def start(app=environ_app, adapter=None, bind_addr=("127.0.0.1", 0), attrs=None, **kw):
        srv = wsgi.Server(bind_addr, app, **kw)
        srv.ssl_adapter = adapter or BuiltinSSLAdapter(pki.cert_file, pki.key_file)
        for name, value in (attrs or {}).items():
            setattr(srv, name, value)
        return stack.enter_context(running(srv))

    with stack:
        yield start


def env_over(srv, context, path="/"):
    status, body, facts = https_get(srv.bind_addr, context, path)
    assert status == 200
    return json.loads(body), facts


# --- serving and the environ -----------------------------------------------------------


def test_requests_and_http_client_over_https(pki, tls_serve):
    srv = tls_serve(hello_app)
    with requests.Session() as s:
        for _ in range(3):  # one kept-alive connection
            r = s.get(f"https://127.0.0.1:{srv.bind_addr[1]}/", verify=pki.ca_file)
            assert (r.status_code, r.text) == (200, "Hello, World!")
    # http.client speaks HTTP/1.1 only, and offers it alone (a client offering h2 gets it:
    # test_http2.py).
    ctx = pki.client_context()
    ctx.set_alpn_protocols(["http/1.1"])
    status, body, facts = https_get(srv.bind_addr, ctx)
    assert (status, body) == (200, b"Hello, World!")
    assert facts["alpn"] == "http/1.1"
    assert facts["version"] == "TLSv1.3"
    # A client that offers HTTP/2 too gets it (it is preferred): test_http2*.py speak it.
    ctx = pki.client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(srv.bind_addr, timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"


def test_environ_has_cheroots_ssl_variables(pki, tls_serve):
    srv = tls_serve()
    env, facts = env_over(srv, pki.client_context())
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"] == facts["version"] == "TLSv1.3"
    assert env["SSL_CIPHER"] == facts["cipher"][0]
    assert env["SSL_CIPHER_USEKEYSIZE"] == str(facts["cipher"][2])
    assert env["SSL_CIPHER_ALGKEYSIZE"] in ("128", "256")
    assert env["SSL_CIPHER_EXPORT"] == ""
    assert env["SSL_VERSION_INTERFACE"].startswith(f"{server.HTTPServer.version} Python/")
    assert env["SSL_VERSION_LIBRARY"].startswith("rustls/")
    assert len(env["SSL_SESSION_ID"]) == 64
    assert env["SSL_TLS_SNI"] == "localhost"
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert not any(k.startswith("SSL_CLIENT_S_DN") for k in env)
    # The server certificate, in Cheroot's (OpenSSL's) formats.
    leaf = ssl._ssl._test_decode_cert(pki.cert_file)
    assert env["SSL_SERVER_M_VERSION"] == "3"
    assert env["SSL_SERVER_M_SERIAL"] == leaf["serialNumber"]
    assert env["SSL_SERVER_V_START"] == leaf["notBefore"]
    assert env["SSL_SERVER_V_END"] == leaf["notAfter"]
    assert env["SSL_SERVER_S_DN_O"] == "trustme v1.2.1" or env["SSL_SERVER_S_DN_O"].startswith(
        "trustme"
    )
    subject = ",".join(f"{k}={v}" for rdn in leaf["subject"] for k, v in rdn)
    assert env["SSL_SERVER_S_DN"] == subject.replace("organizationName", "O").replace(
        "organizationalUnitName", "OU"
    )
    assert env["SSL_SERVER_SAN_DNS_0"] == "localhost"
    assert env["SSL_SERVER_CERT"] == ssl.DER_cert_to_PEM_cert(facts["peer"]).strip()
    # PEP 3333: CGI variables are native strings.
    assert env["_types"] == ["str"]


def test_tls12_environ(pki, tls_serve):
    srv = tls_serve()
    ctx = pki.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    env, facts = env_over(srv, ctx)
    assert env["SSL_PROTOCOL"] == "TLSv1.2"
    assert env["SSL_CIPHER"] == facts["cipher"][0]
    assert "ECDHE" in env["SSL_CIPHER"]


def test_each_request_of_a_kept_alive_connection_gets_a_fresh_environ(pki, tls_serve):
    # A TLS connection's environs start from a template made at its first request, with the
    # SSL_* variables in: what an app does to its environ stays its own, and a setting
    # changed while the connection is open shows in its next request.
    def app(environ, start_response):
        body = environ_app(environ, start_response)
        environ["SSL_CLIENT_VERIFY"] = "tampered"
        environ["HTTPS"] = "off"
        environ["X_LEFT_BEHIND"] = "yes"
        return body

    srv = tls_serve(app, server_name="first.example")
    conn = http.client.HTTPConnection(*srv.bind_addr, timeout=5)
    conn.sock = tls_connect(srv.bind_addr, pki.client_context())
    envs = []
    for i in range(3):
        if i == 2:
            srv.server_name = "second.example"
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200
        envs.append(json.loads(resp.read()))
    conn.close()
    for env in envs:
        assert (env["HTTPS"], env["SSL_CLIENT_VERIFY"]) == ("on", "NONE")
        assert "X_LEFT_BEHIND" not in env
        assert env["SSL_SESSION_ID"] == envs[0]["SSL_SESSION_ID"]
    assert [env["SERVER_NAME"] for env in envs] == ["first.example"] * 2 + ["second.example"]


def test_native_gateway_sees_ssl_env(pki):
    """A Gateway_10 subclass (Cheroot's test_ssl HelloWorldGateway) builds its environ in
    Python, with ``req.conn.ssl_env``."""

    class EnvGateway(wsgi.Gateway_10):
        def respond(self):
            env = self.get_environ()
            self.req.status = b"200 OK"
            self.req.ensure_headers_sent()
            env = {k: v for k, v in env.items() if isinstance(v, str)}
            self.req.write(json.dumps(env).encode())

    srv = server.HTTPServer(("127.0.0.1", 0), EnvGateway)
    srv.ssl_adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    with running(srv):
        env, _ = env_over(srv, pki.client_context())
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    assert env["SSL_CLIENT_VERIFY"] == "NONE"


def test_unix_socket_https(pki, tls_serve, tmp_path):
    path = str(tmp_path / "tls.sock")
    srv = tls_serve(bind_addr=path)
    raw = socket.socket(socket.AF_UNIX)
    raw.settimeout(5)
    raw.connect(path)
    with pki.client_context().wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["SSL_PROTOCOL"] == "TLSv1.3"
    assert srv.bind_addr == path


def test_bodies_chunked_streaming_and_files_over_https(pki, tls_serve, tmp_path):
    blob = os.urandom(3 << 20)
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)

    def app(environ, start_response):
        route = environ["PATH_INFO"]
        if route == "/echo":
            data = environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Length", str(len(data)))])
            return [data]
        if route == "/stream":
            start_response("200 OK", [])
            return (blob[i : i + 100_000] for i in range(0, len(blob), 100_000))
        start_response("200 OK", [("Content-Length", str(len(blob)))])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    srv = tls_serve(app)
    url = f"https://127.0.0.1:{srv.bind_addr[1]}"
    ca = pki.ca_file  # given each time: REQUESTS_CA_BUNDLE would win over Session.verify
    with requests.Session() as s:
        assert s.post(url + "/echo", data=blob, verify=ca).content == blob
        chunks = (blob[i : i + 65536] for i in range(0, len(blob), 65536))
        assert s.post(url + "/echo", data=chunks, verify=ca).content == blob  # chunked upload
        r = s.get(url + "/stream", verify=ca)
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert r.content == blob
        assert s.get(url + "/file", verify=ca).content == blob  # sendfile falls back


def test_pipelined_requests_over_https(pki, tls_serve):
    srv = tls_serve(hello_app)
    with tls_connect(srv.bind_addr, pki.client_context()) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"Hello, World!") < 20 and time.monotonic() < deadline:
            data += s.recv(65536)
    assert data.count(b"HTTP/1.1 200 OK") == 20


# --- the wrong protocol on the port --------------------------------------------------


def test_plain_http_on_the_https_port_gets_cheroots_400(tls_serve):
    srv = tls_serve(hello_app, attrs={"timeout": 30})
    started = time.monotonic()
    r = requests.get(f"http://127.0.0.1:{srv.bind_addr[1]}/", timeout=5)
    assert time.monotonic() - started < 2
    assert r.status_code == 400
    assert r.text == (
        "The client sent a plain HTTP request, but this server only speaks HTTPS on this port."
    )
    assert r.headers["Content-Type"].startswith("text/plain")


def test_https_on_a_plain_port_fails_the_handshake(serve):
    srv = serve(hello_app, attrs={"timeout": 2})
    with pytest.raises(ssl.SSLError):
        tls_connect(srv.bind_addr, ssl.create_default_context(), timeout=10)


def test_garbage_and_stalled_handshakes_leave_the_server_serving(pki, tls_serve):
    srv = tls_serve(hello_app, attrs={"timeout": 2})
    junk = []
    for payload in (b"\x00\x01\x02garbage", b"\x16\x03\x01\x00\x05\xde\xad\xbe\xef\x00", b""):
        s = socket.create_connection(srv.bind_addr)
        s.sendall(payload)
        junk.append(s)
    assert https_get(srv.bind_addr, pki.client_context())[0] == 200
    for s in junk:
        s.settimeout(5)
        started = time.monotonic()
        try:
            while s.recv(1024):
                pass
        except OSError:
            pass
        assert time.monotonic() - started < 4
        s.close()


def test_a_thousand_stalled_handshakes_do_not_delay_a_client(pki, tls_serve):
    srv = tls_serve(hello_app, attrs={"timeout": 30})
    stalled = []
    try:
        for i in range(1000):
            s = socket.create_connection(srv.bind_addr)
            if i % 2:
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a hello
            stalled.append(s)
        times = []
        for _ in range(5):
            started = time.monotonic()
            assert https_get(srv.bind_addr, pki.client_context())[0] == 200
            times.append(time.monotonic() - started)
        assert max(times) < 1.0, times
    finally:
        for s in stalled:
            s.close()


# --- client certificates ------------------------------------------------------------


@pytest.mark.parametrize("mode", [ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED])
def test_client_certificate_verified(pki, tls_serve, mode):
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    adapter.context.verify_mode = mode
    pki.ca.configure_trust(adapter.context)  # trustme, as in Cheroot's tests
    srv = tls_serve(adapter=adapter)
    alice = pki.ca.issue_cert("alice@example.com", "alice.example", common_name="alice")
    env, _ = env_over(srv, pki.client_context(alice))
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN_CN"] == "alice"
    assert env["SSL_CLIENT_S_DN"].endswith(",CN=alice")
    assert env["SSL_CLIENT_I_DN_O"].startswith("trustme")
    assert env["SSL_CLIENT_SAN_Email_0"] == "alice@example.com"
    assert env["SSL_CLIENT_SAN_DNS_0"] == "alice.example"
    assert env["SSL_CLIENT_M_VERSION"] == "3"
    assert env["SSL_CLIENT_V_END"].endswith(" GMT")
    assert int(env["SSL_CLIENT_V_REMAIN"]) > 0
    cert_pem = alice.cert_chain_pems[0].bytes().decode().strip()
    assert env["SSL_CLIENT_CERT"] == cert_pem
    # A certificate from another CA is refused.
    mallory = trustme.CA().issue_cert("mallory.example")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(srv.bind_addr, pki.client_context(mallory, "mallory"))
    # No certificate: refused when required, served (NONE) when optional.
    if mode == ssl.CERT_REQUIRED:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(srv.bind_addr, pki.client_context())
    else:
        env, _ = env_over(srv, pki.client_context())
        assert env["SSL_CLIENT_VERIFY"] == "NONE"
        # Nothing of alice's connection in this one's environ.
        assert not any(k.startswith("SSL_CLIENT_") and k != "SSL_CLIENT_VERIFY" for k in env)
    assert https_get(srv.bind_addr, pki.client_context(alice))[0] == 200


def test_client_verification_without_cas_is_refused(pki):
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    adapter.context.verify_mode = ssl.CERT_REQUIRED
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    srv.ssl_adapter = adapter
    with pytest.raises(TLSError, match="verify_mode is CERT_REQUIRED.*no CA certificates"):
        srv.prepare()
    assert not srv.ready


# --- context settings -----------------------------------------------------------------


def test_versions_and_ciphers_honoured(pki, tls_serve):
    suite = "ECDHE-ECDSA-AES128-GCM-SHA256"
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file, ciphers=suite)
    adapter.context.maximum_version = ssl.TLSVersion.TLSv1_2
    srv = tls_serve(adapter=adapter)
    env, facts = env_over(srv, pki.client_context())
    assert (env["SSL_PROTOCOL"], env["SSL_CIPHER"]) == ("TLSv1.2", suite)

    only13 = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    only13.context.minimum_version = ssl.TLSVersion.TLSv1_3
    srv = tls_serve(adapter=only13)
    ctx = pki.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        https_get(srv.bind_addr, ctx)
    assert env_over(srv, pki.client_context())[0]["SSL_PROTOCOL"] == "TLSv1.3"


@pytest.mark.parametrize(
    "setting, match",
    [
        (lambda c: setattr(c, "minimum_version", ssl.TLSVersion.TLSv1), "minimum_version is TLSv1"),
        (lambda c: setattr(c, "maximum_version", ssl.TLSVersion.TLSv1_1), "maximum_version"),
        (lambda c: setattr(c, "sni_callback", lambda *a: None), "sni_callback"),
        (lambda c: c.set_ciphers("DHE-RSA-AES256-GCM-SHA384"), "ciphers: none of the TLS 1.2"),
        (lambda c: setattr(c, "verify_flags", ssl.VERIFY_CRL_CHECK_LEAF), "CRL"),
    ],
)
def test_settings_rustls_cannot_honour_are_refused_by_name(pki, setting, match):
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 and TLSv1_1
        setting(adapter.context)
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    srv.ssl_adapter = adapter
    with pytest.raises(TLSError, match=match):
        srv.prepare()
    assert not srv.ready


def test_a_context_assigned_whole_is_honoured(pki, tls_serve):
    """CherryPy's ``server.ssl_context``: the adapter's context replaced."""
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    ctx = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.cert_file, pki.key_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    adapter.context = ctx
    srv = tls_serve(adapter=adapter)
    old = pki.client_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        https_get(srv.bind_addr, old)


# --- keys, passwords and certificate errors ------------------------------------------


@pytest.mark.parametrize("fmt", ["pkcs8", "traditional"])
@pytest.mark.parametrize(
    "password",
    [PASSWORD, PASSWORD.encode(), lambda: PASSWORD],
    ids=["str", "bytes", "callable"],
)
def test_encrypted_keys(pki, tls_serve, tmp_path, fmt, password):
    key = load_key(pki.server.private_key_pem.bytes())
    encrypted = tmp_path / f"enc-{fmt}.key"
    encrypted.write_bytes(key_bytes(key, fmt, PASSWORD.encode()))
    marker = b"ENCRYPTED PRIVATE KEY" if fmt == "pkcs8" else b"Proc-Type: 4,ENCRYPTED"
    assert marker in encrypted.read_bytes()
    for cls in (BuiltinSSLAdapter, pyOpenSSLAdapter):
        adapter = cls(pki.cert_file, str(encrypted), private_key_password=password)
        srv = tls_serve(hello_app, adapter=adapter)
        assert https_get(srv.bind_addr, pki.client_context())[:2] == (200, b"Hello, World!")


def test_wrong_or_missing_password(pki, tmp_path):
    key = load_key(pki.server.private_key_pem.bytes())
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(key_bytes(key, "pkcs8", PASSWORD.encode()))
    # As in Cheroot: the builtin adapter fails at construction, with an ssl.SSLError that
    # starts with OpenSSL's words (Cheroot's tests match them), then says what they mean.
    wrong = f"private key file {encrypted}: the private key cannot be decrypted with the password"
    with pytest.raises(ssl.SSLError, match=rf"^\[SSL\] PEM lib .*: {wrong} given$"):
        BuiltinSSLAdapter(pki.cert_file, str(encrypted), private_key_password="wrong")
    # No password and no terminal to ask on.
    with pytest.raises(TLSError, match="encrypted and no password was given"):
        BuiltinSSLAdapter(pki.cert_file, str(encrypted))
    # The pyOpenSSL adapter fails at start.
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    srv.ssl_adapter = pyOpenSSLAdapter(pki.cert_file, str(encrypted), private_key_password="no")
    with pytest.raises(Exception, match=rf"^{wrong} given: .*'bad decrypt'"):
        srv.prepare()
    assert not srv.ready


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
@pytest.mark.parametrize("fmt", ["pkcs8", "traditional"])
def test_key_types_and_formats(tmp_path, tls_serve, kind, fmt):
    if kind == "ed25519" and fmt == "traditional":
        pytest.skip("Ed25519 keys have no traditional OpenSSL form")
    cert, key = self_signed(tmp_path, kind)
    key_file = tmp_path / f"{kind}-{fmt}.key"
    key_file.write_bytes(key_bytes(key, fmt))
    header = {
        ("rsa", "traditional"): b"BEGIN RSA PRIVATE KEY",  # PKCS#1
        ("ec", "traditional"): b"BEGIN EC PRIVATE KEY",  # SEC1
    }.get((kind, fmt), b"BEGIN PRIVATE KEY")
    assert header in key_file.read_bytes()
    srv = tls_serve(hello_app, adapter=BuiltinSSLAdapter(cert, str(key_file)))
    ctx = ssl.create_default_context(cafile=cert)
    assert https_get(srv.bind_addr, ctx)[:2] == (200, b"Hello, World!")


def test_certificate_errors_name_the_file(pki, tmp_path):
    # Cheroot's exception types at construction (a missing file, a key that does not
    # match), with messages that name the file at fault.
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(FileNotFoundError, match=f"^certificate file {missing}: no such file$"):
        BuiltinSSLAdapter(missing, pki.key_file)
    other = pki.ca.issue_cert("other.example")
    _, other_key = pki.write(other, "other")
    mismatch = (
        f"^private key file {other_key}: the private key does not match the certificate in "
        f"certificate file {pki.cert_file}$"
    )
    with pytest.raises(ssl.SSLError, match=mismatch) as raised:
        BuiltinSSLAdapter(pki.cert_file, other_key)
    assert raised.value.reason == "KEY_VALUES_MISMATCH"
    # An expired certificate: refused at start, naming the file.
    cert, key = self_signed(
        tmp_path, "ec", "old", not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    )
    key_file = tmp_path / "old.key"
    key_file.write_bytes(key_bytes(key, "pkcs8"))
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    srv.ssl_adapter = BuiltinSSLAdapter(cert, str(key_file))
    expired = f"certificate file {cert}: the certificate expired on Jan  1"
    with pytest.raises(TLSError, match=expired):
        srv.prepare()
    # A file that went missing between construction and start.
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    adapter.certificate = str(tmp_path / "gone.pem")
    srv.ssl_adapter = adapter
    with pytest.raises(TLSError, match="gone.pem: cannot be read: No such file"):
        srv.prepare()


# --- what a user is told about certificates and keys ----------------------------------


def test_start_up_messages_name_the_file_and_say_what_is_wrong(pki, tmp_path):
    """The API's messages for the usual mistakes, with both adapters (each raising the
    exception type of the library it stands for)."""
    missing = str(tmp_path / "missing.pem")
    messages = [
        # The key file given does not exist: it is the one named, not the certificate.
        ((pki.cert_file, missing), FileNotFoundError, f"private key file {missing}: no such file"),
        # A certificate file without a key, and no key file.
        (
            (pki.cert_file, None),
            ssl.SSLError,
            f"certificate file {pki.cert_file}: no private key in it, and no private key file "
            "given",
        ),
        # The two files swapped.
        (
            (pki.key_file, pki.cert_file),
            ssl.SSLError,
            f"certificate file {pki.key_file}: a private key, not a certificate",
        ),
    ]
    for (cert, key), error, message in messages:
        with pytest.raises(error) as raised:
            BuiltinSSLAdapter(cert, key)
        assert str(raised.value).startswith(message), raised.value
        assert "PEM lib" not in str(raised.value)
        srv = wsgi.Server(("127.0.0.1", 0), hello_app)
        srv.ssl_adapter = pyOpenSSLAdapter(cert, key)
        with pytest.raises(Exception) as raised:  # noqa: PT011 - pyOpenSSL's SSL.Error too
            srv.prepare()
        assert str(raised.value).startswith(message), raised.value
        assert not srv.ready
    # A key that does not match, through pyOpenSSL: the engine's check names both files.
    other = pki.ca.issue_cert("other.example")
    _, other_key = pki.write(other, "other")
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    srv.ssl_adapter = pyOpenSSLAdapter(pki.cert_file, other_key)
    with pytest.raises(TLSError, match="does not match the certificate in certificate file"):
        srv.prepare()


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize("adapter_class", [BuiltinSSLAdapter, pyOpenSSLAdapter])
def test_a_version_1_server_certificate_is_refused_saying_how_to_make_a_v3_one(
    tmp_path, adapter_class
):
    # The tutorial path: `openssl x509 -req` without extensions makes version 1, which
    # OpenSSL (and so Cheroot) serves and rustls does not.
    cert, key = openssl_cert(tmp_path, "localhost")
    assert cert_version(cert) == 1
    srv = wsgi.Server(("127.0.0.1", 0), hello_app)
    srv.ssl_adapter = adapter_class(cert, key)
    with pytest.raises(TLSError) as raised:
        srv.prepare()
    message = str(raised.value)
    assert message.startswith(f"certificate file {cert}: the certificate is X.509 version 1 "), (
        message
    )
    assert "serves version 3 certificates only" in message
    assert "openssl req -x509 -newkey ec" in message
    assert not srv.ready


def test_readmes_openssl_command_makes_a_certificate_stogie_serves(tmp_path, tls_serve):
    if OPENSSL is None:
        pytest.skip("openssl is not installed")
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    (command,) = re.findall(r"^(openssl req -x509 .*)$", readme, re.M)
    assert command == MAKE_V3_CERTIFICATE  # the one the v1 refusal suggests
    # The HTTPS page gives the same command, over two lines.
    page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "https.md")).read()
    (in_docs,) = re.findall(r"^(openssl req -x509 .*?[^\\])$", page.replace("\\\n", " "), re.M)
    assert " ".join(in_docs.split()) == command
    subprocess.run(command.split(), cwd=tmp_path, check=True, capture_output=True, timeout=30)
    cert = str(tmp_path / "cert.pem")
    assert cert_version(cert) == 3
    srv = tls_serve(hello_app, adapter=BuiltinSSLAdapter(cert, str(tmp_path / "key.pem")))
    ctx = ssl.create_default_context(cafile=cert)
    assert https_get(srv.bind_addr, ctx)[:2] == (200, b"Hello, World!")


def refusal_warnings(caplog, count, timeout=5.0):
    """The engine's warnings about refused client certificates, once there are ``count``."""

    def lines():
        return [
            r
            for r in caplog.records
            if r.name == "stogie.error" and r.levelno == logging.WARNING and "refused" in r.msg
        ]

    deadline = time.monotonic() + timeout
    while len(lines()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # nothing more should come
    return [r.getMessage() for r in lines()]


def refused(srv, context):
    """True when the server refuses the handshake (TLS 1.3: on the first read)."""
    try:
        status = https_get(srv.bind_addr, context)[0]
    except (ssl.SSLError, ConnectionError):
        return True
    pytest.fail(f"served ({status})")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_refused_client_certificates_are_warnings_that_say_why(pki, tls_serve, tmp_path, caplog):
    """At the default level (no logging set up beyond WARNING), each reason a person can act
    on, for certificates made with the openssl binary as tutorials make them."""
    assert logging.getLogger("stogie.error").getEffectiveLevel() == logging.WARNING
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    adapter.context.verify_mode = ssl.CERT_REQUIRED
    pki.ca.configure_trust(adapter.context)
    srv = tls_serve(hello_app, adapter=adapter)

    def client(cert, key):
        ctx = pki.client_context()
        ctx.load_cert_chain(cert, key)
        return ctx

    v1 = client(*openssl_cert(tmp_path, "v1-client", pki.ca))
    server_only = client(
        *openssl_cert(tmp_path, "server-only", pki.ca, ["extendedKeyUsage=serverAuth"])
    )
    past = datetime.datetime(2020, 1, 1)
    expired = pki.ca.issue_cert(
        "old.example", not_before=past - datetime.timedelta(days=30), not_after=past
    )
    stranger = trustme.CA().issue_cert("mallory.example")
    cases = [
        (v1, "it is X.509 version 1; stogie accepts version 3 certificates only"),
        (
            pki.client_context(stranger, "stranger"),
            "it is not signed by a CA the server trusts for client certificates (unknown issuer)",
        ),
        (pki.client_context(expired, "expired"), "it expired on Jan  1 00:00:00 2020 GMT"),
        (server_only, "it is not valid for client authentication"),
    ]
    for i, (ctx, why) in enumerate(cases):
        assert refused(srv, ctx)
        lines = refusal_warnings(caplog, i + 1)
        assert len(lines) == i + 1, lines
        assert re.fullmatch(
            rf"client certificate from 127\.0\.0\.1:\d+ refused: {re.escape(why)}.*", lines[i]
        ), lines[i]
    assert refused(srv, pki.client_context())
    lines = refusal_warnings(caplog, len(cases) + 1)
    assert re.fullmatch(
        r"client 127\.0\.0\.1:\d+ refused: it sent no certificate, and one is required",
        lines[-1],
    ), lines[-1]
    # A good one is served, and nothing is logged for it.
    alice = pki.ca.issue_cert("alice@example.com", common_name="alice")
    assert https_get(srv.bind_addr, pki.client_context(alice))[0] == 200
    assert len(refusal_warnings(caplog, len(cases) + 2, timeout=0.3)) == len(cases) + 1


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_refusal_warnings_are_rate_limited_per_reason_and_address(pki, tls_serve, tmp_path, caplog):
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    adapter.context.verify_mode = ssl.CERT_REQUIRED
    pki.ca.configure_trust(adapter.context)
    interval = 3.0
    adapter._refusal_log_interval = interval  # a minute by default
    srv = tls_serve(hello_app, adapter=adapter)
    v1 = pki.client_context()
    v1.load_cert_chain(*openssl_cert(tmp_path, "v1-client", pki.ca))
    started = time.monotonic()
    for _ in range(20):
        assert refused(srv, v1)
    assert time.monotonic() - started < interval, "too slow to see one interval"
    lines = refusal_warnings(caplog, 1)
    assert len(lines) == 1, lines
    assert lines[0].endswith("it is X.509 version 1; stogie accepts version 3 certificates only")
    # Another reason from the same address is a line of its own.
    assert refused(srv, pki.client_context())
    assert len(refusal_warnings(caplog, 2)) == 2
    time.sleep(max(0.0, started + interval + 0.2 - time.monotonic()))
    assert refused(srv, v1)
    lines = refusal_warnings(caplog, 3)
    assert len(lines) == 3, lines
    assert lines[2].endswith(
        "version 3 certificates only (and 19 more like it since the last such line)"
    ), lines[2]


# --- reload ---------------------------------------------------------------------------


def test_reload_tls_new_connections_see_the_new_certificate(pki, tls_serve, tmp_path):
    srv = tls_serve()
    env, facts = env_over(srv, pki.client_context())
    first = facts["peer"]
    assert env["SSL_SERVER_CERT"] == ssl.DER_cert_to_PEM_cert(first).strip()
    keep = http.client.HTTPConnection(*srv.bind_addr, timeout=5)
    keep.sock = tls_connect(srv.bind_addr, pki.client_context())
    keep.request("GET", "/")
    assert keep.getresponse().read()

    renewed = pki.ca.issue_cert("127.0.0.1", "localhost", common_name="renewed")
    pki.write(renewed, "server")  # over the served files
    srv.reload_tls()
    env, facts = env_over(srv, pki.client_context())
    second = facts["peer"]
    assert second != first
    assert second == ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
    # The environ tells the certificate the connection was made with.
    assert env["SSL_SERVER_S_DN_CN"] == "renewed"
    assert env["SSL_SERVER_CERT"] == ssl.DER_cert_to_PEM_cert(second).strip()
    # The connection opened before goes on, with the certificate it was made with.
    keep.request("GET", "/")
    resp = keep.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read())["SSL_SERVER_CERT"] == ssl.DER_cert_to_PEM_cert(first).strip()
    keep.close()

    # A bad pair is refused, and the served one stays.
    with open(pki.key_file, "wb") as f:
        f.write(pki.ca.issue_cert("x.example").private_key_pem.bytes())
    with pytest.raises(TLSError, match="does not match the certificate"):
        srv.reload_tls()
    assert https_get(srv.bind_addr, pki.client_context())[2]["peer"] == second


def test_reload_tls_of_an_encrypted_key_uses_the_password_again(pki, tls_serve, tmp_path):
    calls = []

    def password():
        calls.append(1)
        return PASSWORD

    key_file = tmp_path / "enc.key"
    key_file.write_bytes(
        key_bytes(load_key(pki.server.private_key_pem.bytes()), "pkcs8", PASSWORD.encode())
    )
    adapter = BuiltinSSLAdapter(pki.cert_file, str(key_file), private_key_password=password)
    srv = tls_serve(hello_app, adapter=adapter)
    renewed = pki.ca.issue_cert("127.0.0.1", "localhost")
    cert_file, _ = pki.write(renewed, "server")
    key_file.write_bytes(
        key_bytes(load_key(renewed.private_key_pem.bytes()), "pkcs8", PASSWORD.encode())
    )
    srv.reload_tls()
    peer = https_get(srv.bind_addr, pki.client_context())[2]["peer"]
    assert peer == ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
    assert calls == [1], "the password callable is called once"


# --- Cheroot's API ------------------------------------------------------------------


def test_adapter_classes_and_signatures():

    assert server.get_ssl_adapter_class("builtin") is BuiltinSSLAdapter
    assert server.get_ssl_adapter_class("pyopenssl") is pyOpenSSLAdapter
    assert server.get_ssl_adapter_class("PyOpenSSL") is pyOpenSSLAdapter
    for cls in (BuiltinSSLAdapter, pyOpenSSLAdapter):
        assert str(plain_signature(cls)) == (
            "(certificate, private_key, certificate_chain=None, ciphers=None, *,"
            " private_key_password=None)"
        )


def test_cherrypy_wsgi_server_ssl_attributes(pki):
    srv = wsgi.CherryPyWSGIServer(("127.0.0.1", 0), hello_app)
    srv.ssl_certificate = pki.cert_file
    srv.ssl_private_key = pki.key_file
    with running(srv):
        status, body, _ = https_get(srv.bind_addr, pki.client_context())
    assert (status, body) == (200, b"Hello, World!")


def test_certificate_chain_is_sent(tmp_path, tls_serve):
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("127.0.0.1", "localhost")
    cert = tmp_path / "leaf.pem"
    cert.write_bytes(leaf.cert_chain_pems[0].bytes())  # the leaf alone
    key = tmp_path / "leaf.key"
    leaf.private_key_pem.write_to_path(str(key))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(intermediate.cert_pem.bytes() + root.cert_pem.bytes())
    srv = tls_serve(hello_app, adapter=BuiltinSSLAdapter(str(cert), str(key), str(chain)))
    ctx = ssl.create_default_context()
    root.configure_trust(ctx)  # the root only: the intermediate must come from the server
    assert https_get(srv.bind_addr, ctx)[0] == 200


def test_handshakes_are_not_in_python_threads(pki, tls_serve):
    """A handshake never occupies a worker thread: one thread serves while clients stall."""
    srv = tls_serve(hello_app, numthreads=1, attrs={"timeout": 30})
    stalled = [socket.create_connection(srv.bind_addr) for _ in range(20)]
    try:
        results = []

        def client():
            results.append(https_get(srv.bind_addr, pki.client_context())[0])

        threads = [threading.Thread(target=client) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == [200] * 5
    finally:
        for s in stalled:
            s.close()


def test_failed_handshakes_are_logged_at_debug_with_the_peer(pki, tls_serve, caplog):
    caplog.set_level(logging.DEBUG, logger="stogie.error")
    srv = tls_serve(hello_app, attrs={"timeout": 1})
    with socket.create_connection(srv.bind_addr) as s:
        s.sendall(b"\x00garbage")
        s.settimeout(5)
        port = s.getsockname()[1]
        with contextlib.suppress(ConnectionResetError):  # closed with the garbage unread
            assert s.recv(100) == b""
    silent = socket.create_connection(srv.bind_addr)
    silent_port = silent.getsockname()[1]

    def logged(text):
        return [r for r in caplog.records if text in r.getMessage()]

    deadline = time.monotonic() + 5
    while not logged(f":{silent_port} timed out") and time.monotonic() < deadline:
        time.sleep(0.05)
    silent.close()
    (bad,) = logged(f"TLS handshake with 127.0.0.1:{port} failed: not a TLS handshake")
    assert bad.levelno == logging.DEBUG
    assert logged(f"TLS handshake with 127.0.0.1:{silent_port} timed out")


@pytest.mark.parametrize("tickets", [True, False])
def test_session_resumption_and_op_no_ticket(pki, tls_serve, tickets):
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    if not tickets:
        adapter.context.options |= ssl.OP_NO_TICKET
    srv = tls_serve(adapter=adapter)
    ctx = pki.client_context()
    session = None
    reused = []
    for _ in range(2):
        raw = socket.create_connection(srv.bind_addr, timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            body = b""
            while chunk := s.recv(65536):
                body += chunk
            reused.append(s.session_reused)
            session = s.session
        assert json.loads(body.partition(b"\r\n\r\n")[2])["SSL_SESSION_RESUMED"] == (
            "Resumed" if reused[-1] else "Initial"
        )
    assert reused == [False, tickets]


@pytest.mark.parametrize("server_order", [True, False])
def test_cipher_order_follows_op_cipher_server_preference(pki, tls_serve, server_order):
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    assert adapter.context.options & ssl.OP_CIPHER_SERVER_PREFERENCE  # Python's default
    if not server_order:
        adapter.context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    srv = tls_serve(adapter=adapter)
    ctx = pki.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
    env, _ = env_over(srv, ctx)
    # rustls prefers AES-256; this client prefers AES-128.
    assert env["SSL_CIPHER"] == (
        "ECDHE-ECDSA-AES256-GCM-SHA384" if server_order else "ECDHE-ECDSA-AES128-GCM-SHA256"
    )


def test_encrypted_key_without_a_password_is_asked_for_on_the_terminal(pki, tmp_path):
    """As OpenSSL does for Cheroot: the pass phrase is prompted for, once."""
    import pty
    import subprocess
    import sys
    import textwrap

    key = tmp_path / "enc.key"
    plain = load_key(pki.server.private_key_pem.bytes())
    key.write_bytes(key_bytes(plain, "pkcs8", PASSWORD.encode()))
    script = tmp_path / "prompted.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import fcntl, sys, termios
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty is this session's terminal
            from stogie.ssl.builtin import BuiltinSSLAdapter
            adapter = BuiltinSSLAdapter({pki.cert_file!r}, {str(key)!r})
            settings = adapter._tls_settings()
            print("DECRYPTED", b"BEGIN PRIVATE KEY" in settings["key"], flush=True)
            """
        )
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 10
        while b"pass phrase" not in seen and time.monotonic() < deadline:
            seen += os.read(master, 1024)
        assert f"Enter PEM pass phrase for {key}".encode() in seen
        os.write(master, PASSWORD.encode() + b"\n")
        while not re.search(rb"DECRYPTED \w+\r?\n", seen) and time.monotonic() < deadline:
            try:
                seen += os.read(master, 1024)
            except OSError:
                break
        assert b"DECRYPTED True" in seen, seen
        assert seen.count(b"pass phrase") == 1
    finally:
        proc.kill()
        proc.wait(5)
        os.close(master)


def test_a_cheroot_adapter_is_served_too(pki, tls_serve):
    """An import left unchanged: Cheroot's own BuiltinSSLAdapter, its files and context."""
    cheroot_builtin = pytest.importorskip("cheroot.ssl.builtin")
    adapter = cheroot_builtin.BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    adapter.context.verify_mode = ssl.CERT_OPTIONAL
    pki.ca.configure_trust(adapter.context)
    srv = tls_serve(adapter=adapter)
    client = pki.ca.issue_cert("dave@example.com", common_name="dave")
    env, _ = env_over(srv, pki.client_context(client))
    assert (env["SSL_CLIENT_VERIFY"], env["SSL_CLIENT_S_DN_CN"]) == ("SUCCESS", "dave")


def test_proxy_protocol_header_before_the_tls_handshake(pki, tls_serve):
    """HAProxy in TCP mode: the PROXY header in plain text, then the client's handshake."""
    srv = tls_serve(attrs={"proxy_protocol": True})
    raw = socket.create_connection(srv.bind_addr, timeout=5)
    raw.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n")
    with pki.client_context().wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    env = json.loads(data.partition(b"\r\n\r\n")[2])
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.7", "40000")
    assert (env["HTTPS"], env["SSL_PROTOCOL"]) == ("on", "TLSv1.3")


def test_handshakes_and_plain_http_refusals_are_counted(pki, tls_serve):
    srv = tls_serve(hello_app, attrs={"timeout": 2})
    assert https_get(srv.bind_addr, pki.client_context())[0] == 200
    with socket.create_connection(srv.bind_addr, timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x05\xde\xad\xbe\xef\x00")  # a broken ClientHello
        with contextlib.suppress(OSError):
            s.recv(100)
    assert requests.get(f"http://127.0.0.1:{srv.bind_addr[1]}/", timeout=5).status_code == 400

    def value(name):
        for line in srv.metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    assert wait_for_value(lambda: value("stogie_tls_handshake_failures_total"), 1.0)
    assert value("stogie_tls_handshakes_total") == 1.0


def wait_for_value(get, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while get() != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return get() == want
