"""Cheroot's documented TLS set-ups, written as its users write them: the adapter's context
configured with the TLS library's own calls (pyOpenSSL's ``SSL.Context`` from
``get_context()``, the builtin adapter's ``ssl.SSLContext``), trustme's ``configure_trust()``
and ``configure_cert()``, ``safe_start()`` in a thread and a ``while not server.ready``
loop; then real clients (requests, Python's ssl) with client certificates required,
optional and absent. And what cannot be honoured: refused by name at start."""

import contextlib
import json
import logging
import ssl
import threading
import time

import pytest
import requests
import trustme
from OpenSSL import SSL, crypto
from tlskit import PASSWORD, Pki, environ_app, https_get, key_bytes, load_key, tls_connect

from stogie import wsgi
from stogie.ssl import TLSError
from stogie.ssl.builtin import BuiltinSSLAdapter
from stogie.ssl.pyopenssl import Context, pyOpenSSLAdapter

# Cheroot's test_ssl.py: the stdlib verify modes as pyOpenSSL's.
OPENSSL_VERIFY = {
    ssl.CERT_NONE: SSL.VERIFY_NONE,
    ssl.CERT_OPTIONAL: SSL.VERIFY_PEER,
    ssl.CERT_REQUIRED: SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
}


def cheroots_callback(conn, cert, errno, depth, preverify_ok):
    """The verify callback of Cheroot's tests: OpenSSL's verdict, unchanged."""
    return preverify_ok


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


@contextlib.contextmanager
def started_in_a_thread(server, timeout=10.0):
    """As Cheroot's users (and its test suite) start a server: ``safe_start()`` in a
    thread, then ``while not server.ready``, here with a deadline."""
    thread = threading.Thread(target=server.safe_start, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.ready:
        assert thread.is_alive(), "safe_start() ended without the server getting ready"
        assert time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.stop()
        thread.join(10)


def adapter_as_cheroots_users_set_it_up(kind, pki, verify_mode, served):
    """The adapter of Cheroot's test_tls_client_auth: made from the pki's files, its
    context given the verify mode, trusting the pki's CA (trustme's configure_trust()), and
    serving ``served`` (a trustme leaf, loaded with configure_cert())."""
    if kind == "pyopenssl":
        adapter = pyOpenSSLAdapter(pki.cert_file, pki.key_file)
        adapter.context = adapter.get_context()
        adapter.context.set_verify(OPENSSL_VERIFY[verify_mode], cheroots_callback)
    else:
        adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
        adapter.context.verify_mode = verify_mode
    pki.ca.configure_trust(adapter.context)
    served.configure_cert(adapter.context)
    return adapter


def der(leaf):
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def refused(addr, context):
    try:
        https_get(addr, context)
    except (ssl.SSLError, ConnectionError):
        return True
    return False


@pytest.mark.parametrize("kind", ["pyopenssl", "builtin"])
@pytest.mark.parametrize(
    "verify_mode",
    [ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED],
    ids=["none", "optional", "required"],
)
def test_cheroots_documented_set_up_is_served_as_written(pki, tmp_path, kind, verify_mode):
    if kind == "pyopenssl":
        # OpenSSL refuses a key that does not match the certificate already loaded, so
        # configure_cert() loads the files' own pair again, as in Cheroot's test.
        served = pki.server
    else:
        served = pki.ca.issue_cert("localhost", "127.0.0.1", common_name="served")
    adapter = adapter_as_cheroots_users_set_it_up(kind, pki, verify_mode, served)
    srv = wsgi.Server(("127.0.0.1", 0), environ_app)
    srv.ssl_adapter = adapter
    with started_in_a_thread(srv):
        addr = srv.bind_addr
        # The certificate loaded into the context is the one served.
        with tls_connect(addr, pki.client_context()) as s:
            assert s.getpeercert(binary_form=True) == der(served)
        # A client certificate from the trusted CA: verified, unless nobody asked for one.
        carol = pki.ca.issue_cert("carol@example.com", common_name="carol")
        carol_file = tmp_path / "carol.pem"
        carol.private_key_and_cert_chain_pem.write_to_path(str(carol_file))
        url = f"https://127.0.0.1:{addr[1]}/"
        resp = requests.get(url, verify=pki.ca_file, cert=str(carol_file), timeout=5)
        assert resp.status_code == 200
        env = json.loads(resp.text)
        if verify_mode == ssl.CERT_NONE:
            assert env["SSL_CLIENT_VERIFY"] == "NONE"
        else:
            assert (env["SSL_CLIENT_VERIFY"], env["SSL_CLIENT_S_DN_CN"]) == ("SUCCESS", "carol")
        # No client certificate: refused only when one is required.
        if verify_mode == ssl.CERT_REQUIRED:
            with pytest.raises(requests.exceptions.SSLError):
                requests.get(url, verify=pki.ca_file, timeout=5)
        else:
            env = requests.get(url, verify=pki.ca_file, timeout=5).json()
            assert env["SSL_CLIENT_VERIFY"] == "NONE"
        # One from another CA: refused when client certificates are verified at all
        # (Cheroot's test expects "tlsv1 alert unknown ca").
        mallory = trustme.CA().issue_cert("mallory@example.com")
        mallory_file = tmp_path / "mallory.pem"
        mallory.private_key_and_cert_chain_pem.write_to_path(str(mallory_file))
        if verify_mode == ssl.CERT_NONE:
            assert requests.get(url, verify=pki.ca_file, cert=str(mallory_file), timeout=5).ok
        else:
            with pytest.raises(requests.exceptions.SSLError, match="unknown ca"):
                requests.get(url, verify=pki.ca_file, cert=str(mallory_file), timeout=5)


@pytest.mark.filterwarnings("ignore:Context.set_passwd_cb is deprecated:DeprecationWarning")
def test_pyopenssl_files_password_callback_and_verify_locations(pki, tmp_path, tls_serve):
    """The other pyOpenSSL calls Cheroot's docs point to: the certificate and an encrypted
    key from files (the password through set_passwd_cb), CAs from load_verify_locations()."""
    other = pki.ca.issue_cert("localhost", "127.0.0.1", common_name="from-files")
    cert_file, _ = pki.write(other, "from-files")
    encrypted = tmp_path / "from-files-enc.key"
    encrypted.write_bytes(
        key_bytes(load_key(other.private_key_pem.bytes()), "pkcs8", PASSWORD.encode())
    )
    adapter = pyOpenSSLAdapter(pki.cert_file, pki.key_file)
    ctx = adapter.context = adapter.get_context()
    ctx.set_passwd_cb(lambda maxlen, verify, data: PASSWORD.encode())
    ctx.use_certificate_file(cert_file)
    ctx.use_privatekey_file(str(encrypted))
    ctx.load_verify_locations(pki.ca_file)
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    srv = tls_serve(adapter=adapter)
    dave = pki.ca.issue_cert("dave@example.com", common_name="dave")
    status, body, facts = https_get(srv.bind_addr, pki.client_context(dave))
    assert status == 200
    assert facts["peer"] == der(other)
    assert json.loads(body)["SSL_CLIENT_S_DN_CN"] == "dave"
    assert refused(srv.bind_addr, pki.client_context())


def test_pyopenssl_options_versions_and_ciphers(pki, tls_serve):
    suite = "ECDHE-ECDSA-AES256-GCM-SHA384"
    adapter = pyOpenSSLAdapter(pki.cert_file, pki.key_file)
    ctx = adapter.context = adapter.get_context()
    ctx.set_cipher_list(suite.encode())
    ctx.set_options(SSL.OP_NO_TLSv1_3)
    srv = tls_serve(adapter=adapter)
    env = json.loads(https_get(srv.bind_addr, pki.client_context())[1])
    assert (env["SSL_PROTOCOL"], env["SSL_CIPHER"]) == ("TLSv1.2", suite)

    only13 = pyOpenSSLAdapter(pki.cert_file, pki.key_file)
    only13.context = only13.get_context()
    only13.context.set_min_proto_version(SSL.TLS1_3_VERSION)
    srv = tls_serve(adapter=only13)
    old = pki.client_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    assert refused(srv.bind_addr, old)
    assert json.loads(https_get(srv.bind_addr, pki.client_context())[1])["SSL_PROTOCOL"] == (
        "TLSv1.3"
    )


def test_builtin_load_cert_chain_is_served_and_reloaded(pki, tls_serve, tmp_path):
    first = pki.ca.issue_cert("localhost", "127.0.0.1", common_name="first")
    loaded = tmp_path / "loaded.pem"
    first.private_key_and_cert_chain_pem.write_to_path(str(loaded))
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    adapter.context.load_cert_chain(str(loaded))
    srv = tls_serve(adapter=adapter)
    assert https_get(srv.bind_addr, pki.client_context())[2]["peer"] == der(first)
    # A reload reads the file the context was given, as it does the adapter's.
    second = pki.ca.issue_cert("localhost", "127.0.0.1", common_name="second")
    second.private_key_and_cert_chain_pem.write_to_path(str(loaded))
    srv.reload_tls()
    assert https_get(srv.bind_addr, pki.client_context())[2]["peer"] == der(second)


def cert_object(leaf):
    return crypto.load_certificate(crypto.FILETYPE_PEM, leaf.cert_chain_pems[0].bytes())


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            lambda c, pki: c.set_verify(SSL.VERIFY_PEER, lambda *args: True),
            "context.set_verify(): stogie verifies client certificates itself (rustls) and "
            "cannot call the callback",
        ),
        (
            # Stricter than OpenSSL: it looks at the certificate, which it cannot be given.
            lambda c, pki: c.set_verify(
                SSL.VERIFY_PEER, lambda conn, cert, e, d, ok: ok and cert.get_subject().CN == "a"
            ),
            "context.set_verify(): stogie verifies client certificates itself",
        ),
        (
            lambda c, pki: c.set_verify(SSL.VERIFY_PEER),
            "context.set_verify(VERIFY_PEER): there are no CA certificates to verify client "
            "certificates with",
        ),
        (
            lambda c, pki: (
                c.set_verify(SSL.VERIFY_PEER),
                c.load_verify_locations(None, str(pki.dir)),
            ),
            "context.load_verify_locations(capath=...): a CA directory",
        ),
        (
            lambda c, pki: (
                c.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT),
                pki.ca.configure_trust(c),
                c.set_verify_depth(1),
            ),
            "context.set_verify_depth(): stogie cannot limit",
        ),
        (
            lambda c, pki: (
                c.set_verify(SSL.VERIFY_PEER),
                pki.ca.configure_trust(c),
                c.get_cert_store().set_flags(crypto.X509StoreFlags.CRL_CHECK),
            ),
            "get_cert_store().set_flags(CRL_CHECK): certificate revocation lists",
        ),
        (
            lambda c, pki: c.set_tlsext_servername_callback(lambda conn: None),
            "context.set_tlsext_servername_callback(): stogie does not call it",
        ),
        (
            lambda c, pki: c.set_min_proto_version(SSL.TLS1_1_VERSION),
            "context.set_min_proto_version(TLS1_1_VERSION): stogie (rustls) speaks TLS 1.2 "
            "and 1.3 only",
        ),
    ],
    ids=[
        "accept-any-callback",
        "stricter-callback",
        "no-cas",
        "capath",
        "verify-depth",
        "crl",
        "sni-callback",
        "tls11",
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(pki, setting, message):
    adapter = pyOpenSSLAdapter(pki.cert_file, pki.key_file)
    adapter.context = adapter.get_context()
    setting(adapter.context, pki)
    srv = wsgi.Server(("127.0.0.1", 0), environ_app)
    srv.ssl_adapter = adapter
    with pytest.raises(TLSError) as raised:
        srv.prepare()
    assert str(raised.value).startswith(message), raised.value
    assert not srv.ready


@pytest.mark.filterwarnings("ignore:Context.set_passwd_cb is deprecated:DeprecationWarning")
def test_a_context_made_elsewhere_is_honoured_where_it_can_be_read(pki, tls_serve):
    """An ``OpenSSL.SSL.Context`` not made by stogie (CherryPy's ``ssl_context``, an
    unchanged Cheroot import): its store and key cannot be read back, so CAs added to it
    and a certificate other than the adapter's are refused, saying how to make one that
    can be read; what can be read (verify mode, options) is honoured."""
    cheroot_pyopenssl = pytest.importorskip("cheroot.ssl.pyopenssl")
    theirs = cheroot_pyopenssl.pyOpenSSLAdapter(pki.cert_file, pki.key_file, pki.ca_file)
    theirs.context = theirs.get_context()
    theirs.context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    srv = tls_serve(adapter=theirs)
    erin = pki.ca.issue_cert("erin@example.com", common_name="erin")
    assert json.loads(https_get(srv.bind_addr, pki.client_context(erin))[1])[
        "SSL_CLIENT_S_DN_CN"
    ] == ("erin")
    assert refused(srv.bind_addr, pki.client_context())

    elsewhere = SSL.Context(SSL.TLS_METHOD)
    elsewhere.set_verify(SSL.VERIFY_PEER)
    pki.ca.configure_trust(elsewhere)
    adapter = pyOpenSSLAdapter(pki.cert_file, pki.key_file)
    adapter.context = elsewhere
    srv = wsgi.Server(("127.0.0.1", 0), environ_app)
    srv.ssl_adapter = adapter
    with pytest.raises(TLSError, match=r"cannot have its CAs read back: make it with adapter"):
        srv.prepare()

    other = pki.ca.issue_cert("localhost", common_name="other")
    elsewhere = SSL.Context(SSL.TLS_METHOD)
    other.configure_cert(elsewhere)
    adapter.context = elsewhere
    with pytest.raises(TLSError, match=r"context.use_certificate\(\): the certificate on an"):
        srv.prepare()
    # One of stogie's, made directly, can be read.
    ours = Context(SSL.TLS_METHOD)
    other.configure_cert(ours)
    adapter.context = ours
    srv = tls_serve(adapter=adapter)
    assert https_get(srv.bind_addr, pki.client_context())[2]["peer"] == der(other)


def test_a_refused_context_in_a_thread_is_logged_and_raised(pki, caplog, monkeypatch):
    """safe_start() in a thread with a setting that cannot be served: the thread ends with
    the TLSError, and it is logged on stogie.error, so a ``while not server.ready`` loop
    is not left waiting with nothing said."""
    adapter = pyOpenSSLAdapter(pki.cert_file, pki.key_file)
    adapter.context = adapter.get_context()
    adapter.context.set_verify(SSL.VERIFY_PEER)  # and no CAs
    srv = wsgi.Server(("127.0.0.1", 0), environ_app)
    srv.ssl_adapter = adapter
    ended = []
    monkeypatch.setattr(threading, "excepthook", lambda args: ended.append(args.exc_value))
    thread = threading.Thread(target=srv.safe_start)
    thread.start()
    thread.join(10)
    assert not srv.ready
    (exc,) = ended
    assert isinstance(exc, TLSError)
    (record,) = [r for r in caplog.records if "does not start" in r.getMessage()]
    assert record.name == "stogie.error" and record.levelno == logging.ERROR
    assert record.getMessage() == (f"HTTPS cannot be served, the server does not start: {exc}")
    assert "there are no CA certificates" in str(exc)


@pytest.fixture
def tls_serve():
    stack = contextlib.ExitStack()

    def start(adapter, app=environ_app):
        srv = wsgi.Server(("127.0.0.1", 0), app)
        srv.ssl_adapter = adapter
        return stack.enter_context(started_in_a_thread(srv))

    with stack:
        yield start
