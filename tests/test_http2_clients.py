"""HTTP/2 with real clients: curl (``--http2`` over TLS by ALPN, ``--http2-prior-knowledge``
in cleartext, and its ``Upgrade: h2c`` attempt, which gets HTTP/1.1), httpx with
``http2=True``, nghttp (prior knowledge, uploads, many streams, ``-u`` for the upgrade that
is not honoured) and h2load (thousands of requests on multiplexed connections)."""

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess

import httpx
import pytest
from test_http2 import H2C, App
from tlskit import Pki

from stogie.ssl.builtin import BuiltinSSLAdapter

CURL = shutil.which("curl")
NGHTTP = shutil.which("nghttp")
H2LOAD = shutil.which("h2load")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
needs_nghttp = pytest.mark.skipif(NGHTTP is None, reason="nghttp2-client is not installed")
needs_h2load = pytest.mark.skipif(H2LOAD is None, reason="nghttp2-client is not installed")


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


@pytest.fixture
def servers(serve, pki, tmp_path):
    """One app served twice: h2c (prior knowledge, HTTP/1.1 otherwise) and HTTPS (h2 and
    HTTP/1.1 by ALPN). Returns (app, h2c base URL, https base URL)."""
    app = App(tmp_path)
    plain = serve(app, attrs=H2C)
    adapter = BuiltinSSLAdapter(pki.cert_file, pki.key_file)
    tls = serve(app, attrs={"ssl_adapter": adapter})
    return app, f"http://127.0.0.1:{plain.bind_addr[1]}", f"https://localhost:{tls.bind_addr[1]}"


def run(args, timeout=60):
    proc = subprocess.run(args, capture_output=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")


def curl(pki, url, *args):
    """curl ``url``: (exit code, body, the HTTP version curl used, stderr)."""
    code, out, err = run(
        [CURL, "-sS", "--max-time", "30", "--cacert", pki.ca_file, *args]
        + ["-w", "\n%{http_version}", url]
    )
    body, _, version = out.rpartition(b"\n")
    return code, body, version.decode(), err


def uploaded(body):
    return b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


# --- curl ------------------------------------------------------------------------------------


@needs_curl
def test_curl_over_tls_and_h2c(servers, pki):
    _, plain, tls = servers
    for url, args in [(tls, ["--http2"]), (plain, ["--http2-prior-knowledge"])]:
        code, body, version, err = curl(pki, url + "/env?x=1", *args)
        assert (code, version) == (0, "2"), err
        env = json.loads(body)
        assert env["SERVER_PROTOCOL"] == "HTTP/2.0"
        assert env["QUERY_STRING"] == "x=1"
        assert env["wsgi.url_scheme"] == ("https" if url == tls else "http")
    # A client that asks for HTTP/1.1 gets it, over TLS as in cleartext.
    for url in (tls, plain):
        code, body, version, err = curl(pki, url + "/env", "--http1.1")
        assert (code, version) == (0, "1.1"), err
        assert json.loads(body)["SERVER_PROTOCOL"] == "HTTP/1.1"


@needs_curl
def test_curl_asking_to_upgrade_to_h2c_gets_http1(servers, pki):
    # curl --http2 on an http:// URL sends Upgrade: h2c: not honoured (no 101).
    _, plain, _ = servers
    code, body, version, err = curl(pki, plain + "/env", "--http2", "-v")
    assert (code, version) == (0, "1.1"), err
    assert "Upgrade: h2c" in err and "101" not in err
    assert json.loads(body)["SERVER_PROTOCOL"] == "HTTP/1.1"


@needs_curl
def test_curl_uploads_and_downloads_over_h2(servers, pki, tmp_path):
    _, plain, tls = servers
    body = os.urandom(2_000_000)
    (tmp_path / "up.bin").write_bytes(body)
    for url, flag in [(tls, "--http2"), (plain, "--http2-prior-knowledge")]:
        up = ["--data-binary", f"@{tmp_path / 'up.bin'}", "-H", "Content-Type: x/y"]
        code, got, version, err = curl(pki, url + "/upload", flag, *up)
        assert (code, version, got) == (0, "2", uploaded(body)), err
        # Expect: 100-continue, answered when the app reads.
        code, got, version, err = curl(
            pki, url + "/upload", flag, *up, "-H", "Expect: 100-continue"
        )
        assert (code, version, got) == (0, "2", uploaded(body)), err
        code, got, version, err = curl(pki, url + "/big?n=5000000&chunk=100000", flag)
        assert (code, version, len(got)) == (0, "2", 5_000_000), err


# --- httpx -----------------------------------------------------------------------------------


def test_httpx_http2_over_tls_multiplexed(servers, pki):
    app, _, tls = servers
    context = ssl.create_default_context(cafile=pki.ca_file)
    with httpx.Client(http2=True, verify=context, timeout=30) as client:
        r = client.get(tls + "/env")
        assert r.http_version == "HTTP/2"
        assert r.json()["SERVER_PROTOCOL"] == "HTTP/2.0"
        # Requests from several threads share the one connection, as concurrent streams.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda i: client.get(f"{tls}/env?i={i}"), range(40)))
        assert {r.http_version for r in got} == {"HTTP/2"}
        assert [r.json()["QUERY_STRING"] for r in got] == [f"i={i}" for i in range(40)]
        ports = {r.json()["REMOTE_PORT"] for r in got}
        assert len(ports) == 1, ports
        # A streamed upload (no Content-Length) and a streamed download.
        body = os.urandom(1_500_000)
        chunks = (body[i : i + 100_000] for i in range(0, len(body), 100_000))
        assert client.post(tls + "/upload", content=chunks).content == uploaded(body)
        with client.stream("GET", tls + "/big?n=4000000&chunk=65536") as r:
            assert sum(len(c) for c in r.iter_bytes()) == 4_000_000
        r = client.head(tls + "/status/200")
        assert (r.status_code, r.content, r.headers["x-status"]) == (200, b"", "200")


def test_httpx_http2_prior_knowledge(servers):
    _, plain, _ = servers
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        r = client.get(plain + "/env")
        assert r.http_version == "HTTP/2"
        assert r.json()["SERVER_PROTOCOL"] == "HTTP/2.0"
        body = os.urandom(300_000)
        assert client.post(plain + "/upload", content=body).content == uploaded(body)


# --- nghttp ----------------------------------------------------------------------------------


@needs_nghttp
def test_nghttp(servers, tmp_path):
    _, plain, tls = servers
    body = os.urandom(1_000_000)
    (tmp_path / "up.bin").write_bytes(body)
    for url in (plain, tls):
        code, out, err = run([NGHTTP, "-v", url + "/env"])
        assert code == 0, err
        assert re.search(rb"recv \(stream_id=\d+\) :status: 200", out), out[-2000:]
        assert b'"SERVER_PROTOCOL": "HTTP/2.0"' in out
        code, out, err = run([NGHTTP, "-d", str(tmp_path / "up.bin"), url + "/upload"])
        assert (code, out) == (0, uploaded(body)), err
        # Ten streams at once on one connection.
        code, out, err = run([NGHTTP, "-m", "10", url + "/"])
        assert (code, out) == (0, b"ok" * 10), err


@needs_nghttp
def test_nghttp_upgrade_to_h2c_is_not_honoured(servers):
    _, plain, _ = servers
    code, out, err = run([NGHTTP, "-uv", plain + "/"])
    # nghttp sends Upgrade: h2c and gets HTTP/1.1 200 instead of 101 Switching Protocols.
    assert re.search(rb"\nupgrade: h2c\r?\n", out), out
    assert re.search(rb"HTTP Upgrade response\r?\nHTTP/1.1 200 OK\r?\n", out), out
    assert b"HTTP Upgrade failed" in out + err.encode(), (out, err)


# --- h2load ----------------------------------------------------------------------------------


@needs_h2load
@pytest.mark.parametrize("transport", ["h2c", "tls"])
def test_h2load_multiplexed_load(servers, transport):
    _, plain, tls = servers
    url = plain if transport == "h2c" else tls
    code, out, err = run([H2LOAD, "-n", "3000", "-c", "10", "-m", "10", url + "/"], timeout=120)
    text = out.decode()
    assert code == 0, text + err
    assert "3000 succeeded, 0 failed, 0 errored" in text, text
    assert "status codes: 3000 2xx" in text, text
    protocol = "h2c" if transport == "h2c" else "h2"
    assert f"Application protocol: {protocol}" in text, text
