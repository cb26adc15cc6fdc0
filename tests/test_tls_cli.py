"""HTTPS from the ``stogie`` command: its TLS options (and gunicorn's names for them), real
clients (curl, openssl s_client, Python's ssl), SIGHUP reloading the certificate in the
process and in every worker."""

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time

import pytest
import trustme
from test_cli import run_to_exit, stogie_process
from tlskit import PASSWORD, Pki, cert_version, key_bytes, load_key, openssl_cert, tls_connect

from conftest import connect_tcp, free_port, wait_until_serving
from stogie._native import MAKE_V3_CERTIFICATE

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")

CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


def curl(port, pki, *args, path="/"):
    """curl a page of the server: (exit code, body, stderr)."""
    proc = subprocess.run(
        [CURL, "-sS", "--max-time", "5", "--cacert", pki.ca_file, *args]
        + [f"https://localhost:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return proc.returncode, proc.stdout, proc.stderr


GET = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def s_client(port, pki, *args, data=GET):
    proc = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", pki.ca_file, "-ign_eof"]
        + list(args),
        input=data,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return proc.returncode, proc.stdout, proc.stderr


def peer_cert(port, pki):
    with tls_connect(("127.0.0.1", port), pki.client_context()) as s:
        return s.getpeercert(binary_form=True)


def der(leaf):
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


@pytest.fixture
def tls_process(tmp_path, pki):
    """``tls_process(*extra_args)``: a ``stogie`` serving HTTPS (the demo app) with the
    pki's files, waited for; yields (running process, port)."""
    import contextlib

    stack = contextlib.ExitStack()

    def start(*extra, cert=True):
        port = free_port()
        args = ["--bind", f"127.0.0.1:{port}"]
        if cert:
            args += ["--ssl-certificate", pki.cert_file, "--ssl-private-key", pki.key_file]
        running = stack.enter_context(stogie_process(args + list(extra), tmp_path))
        wait_until_serving(running, lambda: connect_tcp(port))
        return running, port

    with stack:
        yield start


@needs_curl
def test_gunicorn_option_names_and_the_demo_page(tmp_path, pki, tls_process):
    running, port = tls_process("--certfile", pki.cert_file, "--keyfile", pki.key_file, cert=False)
    code, page, err = curl(port, pki)
    assert code == 0, err
    assert "HTTPS: TLSv1.3" in page
    assert "SSL_SERVER_S_DN" in page
    assert f"on https://127.0.0.1:{port} (" in running.stderr
    assert "TLS on)" in running.stderr
    code, page, err = curl(port, pki, "--tlsv1.2", "--tls-max", "1.2")
    assert code == 0, err
    assert "HTTPS: TLSv1.2" in page


@needs_curl
def test_minimum_version_and_ciphers(pki, tls_process):
    _, port = tls_process("--ssl-minimum-version", "TLSv1.3")
    assert curl(port, pki, "--tls-max", "1.2")[0] != 0
    assert curl(port, pki)[0] == 0
    _, port = tls_process("--ssl-ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305")
    code, page, err = curl(port, pki, "--tls-max", "1.2")
    assert code == 0, err
    assert "ECDHE-ECDSA-CHACHA20-POLY1305" in page


@needs_curl
@pytest.mark.parametrize("verify", ["required", "optional"])
def test_client_certificates_with_curl(tmp_path, pki, tls_process, verify):
    _, port = tls_process("--ca-certs", pki.ca_file, "--ssl-client-verify", verify)
    client = pki.ca.issue_cert("carol@example.com", common_name="carol")
    cert, key = tmp_path / "carol.pem", tmp_path / "carol.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    code, page, err = curl(port, pki, "--cert", str(cert), "--key", str(key))
    assert code == 0, err
    assert "SSL_CLIENT_S_DN_CN" in page and "carol" in page
    code, page, err = curl(port, pki)
    if verify == "required":
        assert code != 0, page
    else:
        assert code == 0, err
        assert "SSL_CLIENT_VERIFY</th><td>NONE" in page
    stranger = trustme.CA().issue_cert("mallory@example.com")
    stranger.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "mallory.pem"))
    assert curl(port, pki, "--cert", str(tmp_path / "mallory.pem"))[0] != 0


@needs_curl
def test_encrypted_key_with_a_password_file(tmp_path, pki, tls_process):
    key = tmp_path / "enc.key"
    plain = load_key(pki.server.private_key_pem.bytes())
    key.write_bytes(key_bytes(plain, "pkcs8", PASSWORD.encode()))
    password = tmp_path / "password.txt"
    password.write_text(PASSWORD + "\n")
    args = ["--ssl-certificate", pki.cert_file, "--ssl-private-key", str(key)]
    _, port = tls_process(*args, "--ssl-private-key-password-file", str(password), cert=False)
    assert curl(port, pki)[0] == 0


@needs_openssl
def test_openssl_s_client_alpn_sni_protocol_cipher_and_resumption(tmp_path, pki, tls_process):
    _, port = tls_process()
    sess = str(tmp_path / "session.pem")
    suite = "ECDHE-ECDSA-AES128-GCM-SHA256"
    common = ["-alpn", "http/1.1", "-servername", "localhost", "-tls1_2", "-cipher", suite]
    code, out, err = s_client(port, pki, *common, "-sess_out", sess)
    assert code == 0, err
    assert "ALPN protocol: http/1.1" in out
    assert f"New, TLSv1.2, Cipher is {suite}" in out
    assert "Verify return code: 0 (ok)" in out
    assert "HTTP/1.1 200 OK" in out
    assert "SSL_TLS_SNI</th><td>localhost" in out
    code, out, err = s_client(port, pki, *common, "-sess_in", sess)
    assert code == 0, err
    assert f"Reused, TLSv1.2, Cipher is {suite}" in out
    assert "SSL_SESSION_RESUMED</th><td>Resumed" in out
    code, out, _ = s_client(port, pki, "-tls1_3", "-alpn", "http/1.1")
    assert "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384" in out


@needs_openssl
def test_renegotiation_is_refused_and_the_server_goes_on(pki, tls_process):
    _, port = tls_process()
    # "R" at the start of a line asks s_client to renegotiate (TLS 1.2); rustls answers
    # with a no_renegotiation alert.
    command = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", pki.ca_file]
    proc = subprocess.Popen(
        command + ["-tls1_2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        proc.stdin.write("R\n")
        proc.stdin.flush()
        time.sleep(1)
        proc.stdin.close()
        proc.wait(10)
        out = proc.stdout.read()
    finally:
        proc.kill()
    assert "RENEGOTIATING" in out
    assert peer_cert(port, pki) == der(pki.server)


def test_sighup_reloads_the_certificate(tmp_path, pki, tls_process):
    running, port = tls_process()
    assert peer_cert(port, pki) == der(pki.server)
    renewed = pki.ca.issue_cert("127.0.0.1", "localhost", common_name="renewed")
    pki.write(renewed, "server")
    running.proc.send_signal(signal.SIGHUP)
    assert _wait(lambda: peer_cert(port, pki) == der(renewed)), running.stderr
    assert "TLS certificate reloaded" in running.stderr
    # A broken pair is refused: logged, and the served one stays.
    with open(pki.key_file, "w") as f:
        f.write("not a key\n")
    running.proc.send_signal(signal.SIGHUP)
    assert _wait(lambda: "TLS reload failed" in running.stderr), running.stderr
    assert peer_cert(port, pki) == der(renewed)
    assert running.proc.poll() is None


def test_sighup_reloads_every_worker(tmp_path, pki, tls_process):
    # With workers, SIGHUP is a reload: new workers start with the certificate as the files
    # are now, and the old ones drain once they serve.
    running, port = tls_process("--workers", "2")
    renewed = pki.ca.issue_cert("127.0.0.1", "localhost", common_name="renewed")
    pki.write(renewed, "server")
    os.kill(running.proc.pid, signal.SIGHUP)
    assert _wait(lambda: "reloaded: 2 workers serving" in running.stderr), running.stderr
    # Connections land on either worker: every one sees the new certificate.
    assert all(peer_cert(port, pki) == der(renewed) for _ in range(12))
    # Files that cannot be read: the reload fails, the old workers serve the old pair.
    with open(pki.key_file, "w") as f:
        f.write("not a key\n")
    os.kill(running.proc.pid, signal.SIGHUP)
    assert _wait(lambda: "reload failed" in running.stderr), running.stderr
    assert all(peer_cert(port, pki) == der(renewed) for _ in range(6))
    assert running.proc.poll() is None


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ssl-private-key", "k.pem"], "--ssl-private-key needs --ssl-certificate"),
        (
            ["--ssl-certificate", "missing.pem"],
            "bad TLS settings: --ssl-certificate missing.pem: no such file",
        ),
        (
            ["--ssl-certificate", "{cert}", "--ssl-client-verify", "required"],
            "--ssl-client-verify required needs --ssl-client-ca",
        ),
        (
            ["--ssl-certificate", "{cert}", "--ssl-private-key", "{key}", "--ssl-ciphers", "NOPE"],
            "bad TLS settings",
        ),
        # The file at fault is the one named, and what is wrong with it is said.
        (
            ["--ssl-certificate", "{cert}", "--ssl-private-key", "missing.pem"],
            "bad TLS settings: --ssl-private-key missing.pem: no such file",
        ),
        (
            ["--ssl-certificate", "{cert}"],
            "bad TLS settings: --ssl-certificate {cert}: no private key in it, and no "
            "--ssl-private-key given",
        ),
        (
            ["--ssl-certificate", "{key}", "--ssl-private-key", "{cert}"],
            "bad TLS settings: --ssl-certificate {key}: a private key, not a certificate",
        ),
        (
            ["--ssl-certificate", "{cert}", "--ssl-private-key", "{other_key}"],
            "bad TLS settings: private key file {other_key}: the private key does not match "
            "the certificate in certificate file {cert}",
        ),
        (
            ["--ssl-certificate", "{cert}", "--ssl-private-key", "{encrypted_key}"],
            "bad TLS settings: --ssl-private-key {encrypted_key}: the private key is encrypted: "
            "give its password with --ssl-private-key-password-file",
        ),
    ],
)
def test_bad_tls_options_are_one_line_errors(tmp_path, pki, args, message):
    _, other_key = pki.write(pki.ca.issue_cert("other.example"), "other")
    encrypted_key = tmp_path / "enc.key"
    encrypted_key.write_bytes(
        key_bytes(load_key(pki.server.private_key_pem.bytes()), "pkcs8", PASSWORD.encode())
    )
    files = dict(cert=pki.cert_file, key=pki.key_file, other_key=other_key)
    files["encrypted_key"] = str(encrypted_key)
    args = [a.format(**files) for a in args]
    code, _, err = run_to_exit(["--bind", f"127.0.0.1:{free_port()}", *args], tmp_path)
    assert code == 2
    assert message.format(**files) in err
    assert "Traceback" not in err
    assert "PEM lib" not in err


@needs_openssl
def test_a_version_1_certificate_is_refused_saying_how_to_make_a_v3_one(tmp_path):
    cert, key = openssl_cert(tmp_path, "localhost")  # `openssl x509 -req`, no extensions
    assert cert_version(cert) == 1
    args = ["--ssl-certificate", cert, "--ssl-private-key", key]
    code, _, err = run_to_exit(["--bind", f"127.0.0.1:{free_port()}", *args], tmp_path)
    assert code == 2
    assert f"bad TLS settings: certificate file {cert}: the certificate is X.509 version 1 " in err
    assert (
        f"serves version 3 certificates only. A self-signed one for testing: {MAKE_V3_CERTIFICATE}"
        in err
    )
    assert "Traceback" not in err


@needs_curl
@needs_openssl
def test_a_refused_client_certificate_is_a_warning_in_the_log(tmp_path, pki, tls_process):
    running, port = tls_process("--ssl-client-ca", pki.ca_file)
    cert, key = openssl_cert(tmp_path, "carol", pki.ca)  # version 1, as the tutorials make
    for _ in range(5):
        assert curl(port, pki, "--cert", cert, "--key", key)[0] != 0
    assert curl(port, pki)[0] != 0
    v1 = (
        r"client certificate from 127\.0\.0\.1:\d+ refused: it is X\.509 version 1; "
        r"stogie accepts version 3 certificates only"
    )
    none = r"client 127\.0\.0\.1:\d+ refused: it sent no certificate, and one is required"
    assert _wait(lambda: re.search(none, running.stderr)), running.stderr
    # Five refusals for one reason from one address in a minute: one line.
    assert len(re.findall(f"WARNING stogie.error: {v1}\n", running.stderr)) == 1, running.stderr
