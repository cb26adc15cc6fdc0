"""``stogie --reload`` (development): the server restarts when a Python file under the app's
directory or a ``--reload-dir`` changes, run as a user runs it, with ``watchfiles``."""

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_workers import alive, children_of

from conftest import free_port, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")

APP = """
import helper


def application(environ, start_response):
    body = helper.WORD.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "dapp.py").write_text(textwrap.dedent(APP))
    (tmp_path / "helper.py").write_text('WORD = "first"\n')
    return tmp_path


class Proc:
    def __init__(self, proc, err_path):
        self.proc = proc
        self.err_path = err_path

    @property
    def stderr(self):
        return Path(self.err_path).read_text()


@contextlib.contextmanager
def run(args, cwd, env=None):
    err_path = cwd / "stderr.txt"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STOGIE_")}
    full_env.pop("PYTHONPATH", None)
    full_env.update(PYTHONUNBUFFERED="1", **(env or {}))
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stogie", *args],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield Proc(proc, err_path)
    finally:
        kids = children_of(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def word(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    except OSError:
        return None
    finally:
        conn.close()


def edit(path, text):
    path.write_text(text)
    # A new mtime even on a coarse clock.
    future = time.time() + 2
    os.utime(path, (future, future))


def test_a_changed_python_file_restarts_the_server(app_dir):
    port = free_port()
    with run(["--reload", "--bind", f"127.0.0.1:{port}", "dapp"], app_dir) as running:
        assert wait_for(lambda: word(port) == "first", 10), running.stderr
        assert "not for production" in running.stderr
        (server,) = children_of(running.proc.pid)
        edit(app_dir / "helper.py", 'WORD = "second"\n')
        assert wait_for(lambda: word(port) == "second", 10), running.stderr
        assert "changed: helper.py; restarting the server" in running.stderr
        assert not alive(server)
        # A file that is not Python changes nothing.
        (replacement,) = children_of(running.proc.pid)
        edit(app_dir / "notes.txt", "hello")
        time.sleep(1.0)
        assert children_of(running.proc.pid) == [replacement]
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(10) == 0, running.stderr
        assert not alive(replacement)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_pid_file_names_the_reloader_and_signalling_it_stops_everything(app_dir, signum):
    port = free_port()
    pid_path = app_dir / "stogie.pid"
    args = ["--reload", "--pid", str(pid_path), "--bind", f"127.0.0.1:{port}", "dapp"]
    with run(args, app_dir) as running:
        assert wait_for(lambda: word(port) == "first", 10), running.stderr
        assert int(pid_path.read_text()) == running.proc.pid
        edit(app_dir / "helper.py", 'WORD = "second"\n')
        assert wait_for(lambda: word(port) == "second", 10), running.stderr
        # The restarted server did not take the file over.
        assert int(pid_path.read_text()) == running.proc.pid
        (server,) = children_of(running.proc.pid)
        os.kill(int(pid_path.read_text()), signum)
        assert running.proc.wait(10) == 0, running.stderr
        assert wait_for(lambda: not alive(server), 5)
        assert word(port) is None
        assert not pid_path.exists()


def test_a_broken_save_waits_for_the_next_change(app_dir):
    port = free_port()
    with run(["--reload", "--bind", f"127.0.0.1:{port}", "dapp"], app_dir) as running:
        assert wait_for(lambda: word(port) == "first", 10), running.stderr
        edit(app_dir / "helper.py", "WORD = (\n")
        assert wait_for(lambda: "SyntaxError" in running.stderr, 10), running.stderr
        assert word(port) is None
        assert running.proc.poll() is None  # the reloader waits for the fix
        edit(app_dir / "helper.py", 'WORD = "fixed"\n')
        assert wait_for(lambda: word(port) == "fixed", 10), running.stderr


def test_reload_dir_and_workers(app_dir, tmp_path_factory):
    lib = tmp_path_factory.mktemp("lib")
    (lib / "libmod.py").write_text("X = 1\n")
    port = free_port()
    args = ["--reload", "--reload-dir", str(lib), "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    with run([*args, "dapp"], app_dir) as running:
        assert wait_for(lambda: word(port) == "first", 10), running.stderr
        (supervisor,) = children_of(running.proc.pid)
        edit(lib / "libmod.py", "X = 2\n")
        assert wait_for(lambda: "changed: " in running.stderr, 10), running.stderr
        assert wait_for(lambda: not alive(supervisor), 10)
        assert wait_for(lambda: word(port) == "first", 10)


def test_reload_without_watchfiles_says_what_to_install(app_dir, tmp_path_factory):
    fake = tmp_path_factory.mktemp("fake")
    (fake / "watchfiles.py").write_text("raise ImportError('No module named watchfiles')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "stogie", "--reload", "dapp"],
        cwd=app_dir,
        env=dict(os.environ, PYTHONPATH=str(fake)),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "stogie: --reload needs the watchfiles package: pip install 'stogie[reload]'"
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--reload-dir", "."], "--reload-dir needs --reload"),
        (["--reload", "--reload-dir", "nowhere"], "--reload-dir 'nowhere': no such directory"),
    ],
)
def test_reload_dir_mistakes(app_dir, args, words):
    proc = subprocess.run(
        [sys.executable, "-m", "stogie", *args, "dapp"],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"stogie: {words}"


def test_help_says_reload_is_not_for_production():
    out = subprocess.run(
        [sys.executable, "-m", "stogie", "--help"], capture_output=True, text=True, timeout=10
    ).stdout
    assert "--reload" in out and "not for production" in " ".join(out.split())
