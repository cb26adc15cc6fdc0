"""A real CherryPy application over HTTPS, configured the CherryPy way
(``server.ssl_module``, ``server.ssl_certificate``, ``server.ssl_private_key``), with
CherryPy's imports of ``cheroot`` given stogie's modules."""

import subprocess
import sys
import textwrap

import pytest
import requests
from tlskit import Pki

from conftest import connect_tcp, free_port, stop, wait_until_serving

pytest.importorskip("cherrypy")

APP = """
import sys

import stogie
import stogie.errors
import stogie.server
import stogie.ssl
import stogie.ssl.builtin
import stogie.wsgi

# CherryPy imports cheroot: those imports get stogie's modules.
for name, module in {
    "cheroot": stogie,
    "cheroot.errors": stogie.errors,
    "cheroot.server": stogie.server,
    "cheroot.ssl": stogie.ssl,
    "cheroot.ssl.builtin": stogie.ssl.builtin,
    "cheroot.wsgi": stogie.wsgi,
}.items():
    sys.modules[name] = module

import cherrypy


class Root:
    @cherrypy.expose
    def index(self):
        req = cherrypy.request
        env = req.wsgi_environ
        version = cherrypy.server.httpserver.version
        return "|".join([req.scheme, env["SSL_PROTOCOL"], env["SSL_CLIENT_VERIFY"], version])


cert, key, port = sys.argv[1:4]
cherrypy.config.update(
    {
        "server.socket_host": "127.0.0.1",
        "server.socket_port": int(port),
        "server.ssl_module": "builtin",
        "server.ssl_certificate": cert,
        "server.ssl_private_key": key,
        "engine.autoreload.on": False,
        "checker.on": False,
    }
)
cherrypy.quickstart(Root())
"""


class Running:
    def __init__(self, proc, err):
        self.proc = proc
        self._err = err

    @property
    def stderr(self):
        return self._err.read_text()


def test_cherrypy_app_over_https(tmp_path):
    pki = Pki(tmp_path)
    (tmp_path / "cpapp.py").write_text(textwrap.dedent(APP))
    port = free_port()
    err = tmp_path / "stderr.txt"
    with open(err, "w") as errf:
        proc = subprocess.Popen(
            [sys.executable, "cpapp.py", pki.cert_file, pki.key_file, str(port)],
            cwd=tmp_path,
            stdout=errf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until_serving(Running(proc, err), lambda: connect_tcp(port), timeout=15)
        r = requests.get(f"https://localhost:{port}/", verify=pki.ca_file, timeout=5)
        scheme, protocol, verify, version = r.text.split("|")
        assert (r.status_code, scheme, protocol, verify) == (200, "https", "TLSv1.3", "NONE")
        assert "Stogie/" in version
    finally:
        stop(proc)
