"""The wheel that `scripts/build-wheel` makes, installed as a user installs it: into a fresh
virtualenv, with no Rust toolchain on PATH and no network, it serves the demo page over HTTP
and HTTPS. `scripts/test` builds the wheel and names it in STOGIE_WHEEL."""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import free_port, stop

WHEEL = os.environ.get("STOGIE_WHEEL")
pytestmark = pytest.mark.skipif(
    not WHEEL, reason="scripts/test builds the wheel and names it in STOGIE_WHEEL"
)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtualenv with the wheel installed, and a PATH without cargo or rustc."""
    root = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    path = os.pathsep.join(
        [str(root / "bin")]
        + [
            d
            for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not (shutil.which("cargo", path=d) or shutil.which("rustc", path=d))
        ]
    )
    assert shutil.which("cargo", path=path) is None and shutil.which("rustc", path=path) is None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO", "RUSTUP"))}
    env["PATH"] = path
    env.pop("PYTHONPATH", None)
    start = time.monotonic()
    subprocess.run(
        [str(root / "bin" / "pip"), "install", "-q", "--no-index", WHEEL],
        check=True,
        env=env,
        cwd=root,
    )
    took = time.monotonic() - start
    print(f"pip install of {Path(WHEEL).name}: {took:.1f} s")
    return root, env


def wheel_version():
    with zipfile.ZipFile(WHEEL) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        for line in whl.read(meta).decode().splitlines():
            if line.startswith("Version: "):
                return line.split(": ", 1)[1]
    raise AssertionError("no Version in the wheel's METADATA")


def run(venv, *args, cwd):
    root, env = venv
    return subprocess.Popen(
        [str(root / "bin" / "stogie"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_listening(port, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on port {port}")


def output(venv, program, *args, cwd):
    """What ``program`` of the virtualenv prints, run there with the PATH without Rust."""
    root, env = venv
    argv = [str(root / "bin" / program), *args]
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_installed_wheel_is_the_one_imported(venv, tmp_path):
    root, _ = venv
    where = output(
        venv, "python", "-c", "import stogie._native; print(stogie.__file__)", cwd=tmp_path
    )
    assert Path(where).is_relative_to(root), where
    assert wheel_version() in output(venv, "stogie", "--version", cwd=tmp_path)
    typed = (
        "import importlib.resources as r; print(r.files('stogie').joinpath('py.typed').is_file())"
    )
    assert output(venv, "python", "-c", typed, cwd=tmp_path) == "True"


def test_the_wheel_serves_the_demo_page(venv, tmp_path):
    port = free_port()
    proc = run(venv, "--bind", f"127.0.0.1:{port}", cwd=tmp_path)
    try:
        wait_listening(port, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.status == 200
            assert b"stogie" in resp.read()
    finally:
        stop(proc)


def test_the_wheel_serves_https(venv, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    (tmp_path / "hello.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'hello over ' + environ['wsgi.url_scheme'].encode()]\n"
    )
    port = free_port()
    args = ["--bind", f"127.0.0.1:{port}", "--ssl-certificate", "cert.pem"]
    proc = run(venv, *args, "--ssl-private-key", "key.pem", "hello:app", cwd=tmp_path)
    try:
        wait_listening(port, proc)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with urllib.request.urlopen(
            f"https://localhost:{port}/", timeout=5, context=context
        ) as resp:
            assert resp.read() == b"hello over https"
    finally:
        stop(proc)
