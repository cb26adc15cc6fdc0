"""Settings from the environment (``STOGIE_<NAME>``) and a TOML file (``--config``), their
precedence, ``--print-config``, ``--pid``, ``--log-config`` and the start-up line: the
``stogie`` command run as users run it, in a subprocess, reached over real sockets."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import stogie
from conftest import (
    Proc,
    connect_tcp,
    connect_unix,
    free_port,
    http_get,
    wait_for,
    wait_until_serving,
)
from stogie import cli, config

APP = """
import os


def application(environ, start_response):
    body = ("%d" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "capp.py").write_text(textwrap.dedent(APP))
    return tmp_path


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOGIE_")}
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run(args, cwd, env=None, timeout=10):
    proc = subprocess.run(
        [sys.executable, "-m", "stogie", *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout, proc.stderr


@contextlib.contextmanager
def serving(args, cwd, env=None):
    err_path = cwd / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stogie", *args],
            cwd=cwd,
            env=clean_env(env),
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield Proc(proc, err_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def printed(args, cwd, env=None):
    """The settings ``--print-config`` shows, parsed back as TOML, and the raw text."""
    code, out, err = run([*args, "--print-config"], cwd, env)
    assert code == 0, err
    return tomllib.loads(out), out


# --- where settings come from ------------------------------------------------------------------


def test_environment_and_file_serve_like_the_command_line(app_dir):
    port = free_port()
    (app_dir / "stogie.toml").write_text(f'app = "capp"\nbind = "127.0.0.1:{port}"\nthreads = 3\n')
    env = {"STOGIE_WORKERS": "2", "STOGIE_CONFIG": "stogie.toml"}
    with serving([], app_dir, env) as running:
        connect = lambda: connect_tcp(port)  # noqa: E731
        wait_until_serving(running, connect)
        status, body = http_get(connect)
        assert status == 200 and int(body) != running.pid  # a worker answered
        assert wait_for(lambda: "(2 workers, 3 threads each, TLS off)" in running.stderr)
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(8) == 0, running.stderr


def test_precedence_command_line_then_environment_then_file_then_default(app_dir):
    (app_dir / "s.toml").write_text("threads = 3\nworkers = 3\ntimeout = 7\n")
    env = {"STOGIE_THREADS": "4", "STOGIE_WORKERS": "5"}
    values, text = printed(["--config", "s.toml", "--threads", "6"], app_dir, env)
    assert values["threads"] == 6  # command line over environment and file
    assert values["workers"] == 5  # environment over file
    assert values["timeout"] == 7  # file over default
    assert values["log_level"] == "info"  # default
    assert "threads = 6  # command line" in text
    assert "workers = 5  # STOGIE_WORKERS" in text
    assert "timeout = 7  # s.toml" in text


def test_file_names_with_dashes_or_underscores_and_flags(app_dir):
    (app_dir / "s.toml").write_text(
        'max-threads = 9\nshutdown_timeout = 2.5\nlog_level = "DEBUG"\n'
    )
    values, _ = printed(["--config", "s.toml"], app_dir)
    assert values["max_threads"] == 9
    assert values["shutdown_timeout"] == 2.5
    assert values["log_level"] == "debug"  # through the option's own type


def test_print_config_reads_back_as_the_same_settings(app_dir):
    env = {"STOGIE_BIND": "[::1]:8123", "STOGIE_TIMEOUT": "3", "STOGIE_APP": "capp:application"}
    first, text = printed([], app_dir, env)
    (app_dir / "again.toml").write_text(text)
    second, _ = printed(["--config", "again.toml"], app_dir)
    assert first == second
    assert first["bind"] == ["[::1]:8123"] and first["app"] == "capp:application"


def test_print_config_gives_the_value_in_effect_of_each_option_with_a_default(app_dir):
    values, text = printed(["capp"], app_dir)
    assert "threads = 10  # default" in text
    assert (values["threads"], values["max_threads"], values["workers"]) == (10, -1, 1)
    assert (values["timeout"], values["shutdown_timeout"], values["worker_timeout"]) == (10, 5, 30)
    assert (values["request_queue_size"], values["accepted_queue_size"]) == (5, -1)
    assert values["max_requests"] == 0 and values["proxy_protocol"] is False
    assert values["forwarded_allow_ips"] == "127.0.0.1,::1"
    # A default that depends on where the server runs is said, not written as a setting.
    assert "bind" not in values
    assert "# bind: not set (the sockets systemd passes, else 127.0.0.1:8080)" in text
    # What it prints serves the same, read back as a file.
    (app_dir / "printed.toml").write_text(text)
    assert printed(["--config", "printed.toml"], app_dir)[0] == values
    port = free_port()
    with serving(["--config", "printed.toml", "--bind", f"127.0.0.1:{port}"], app_dir) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        assert wait_for(lambda: "(10 threads, TLS off)" in running.stderr), running.stderr


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"STOGIE_WORKERS": "0"}, ["STOGIE_WORKERS", "less than 1"]),
        ({"STOGIE_THREADS": "many"}, ["STOGIE_THREADS", "'many' is not a whole number"]),
        ({"STOGIE_LOG_LEVEL": "loud"}, ["STOGIE_LOG_LEVEL", "'loud' is not one of"]),
        ({"STOGIE_TIMEOUT": "-1"}, ["STOGIE_TIMEOUT", "seconds"]),
    ],
)
def test_bad_environment_value_is_one_line_and_status_2(app_dir, env, words):
    code, out, err = run(["capp"], app_dir, env)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err


@pytest.mark.parametrize(
    ("name", "closest"),
    [("STOGIE_WORKER", "STOGIE_WORKERS"), ("STOGIE_MAX_REQUEST", "STOGIE_MAX_REQUESTS")],
)
def test_unknown_environment_variable_is_one_line_and_status_2(app_dir, name, closest):
    code, out, err = run(["capp", "--print-config"], app_dir, {name: "3"})
    assert code == 2, out
    assert len(err.splitlines()) == 1, err
    assert f"stogie: unknown setting in the environment: {name}; did you mean {closest}?" in err


def test_variables_of_stogies_own_scripts_are_no_settings_and_no_errors(app_dir):
    # scripts/test, scripts/docs, scripts/cheroot-suite and the tests set these; the servers
    # they start inherit them.
    names = ["PY", "PYTHON", "VENV", "WHEEL", "CONFORMANCE_CORPUS", "TEST_MARKER"]
    env = {f"STOGIE_{name}": "x" for name in names}
    values, _ = printed(["capp"], app_dir, {"STOGIE_CONFIG": "", **env})
    assert values["app"] == "capp"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("wokers = 2\n", ["unknown setting 'wokers'"]),
        ("workers = 0\n", ["workers", "less than 1"]),
        ('workers = "two"\n', ["workers", "not a whole number"]),
        ("workers = true\n", ["workers", "not a string or a number"]),
        ("print_config = true\n", ["unknown setting 'print_config'"]),
        ("[server]\nworkers = 2\n", ["unknown setting 'server'"]),
        ("workers = \n", ["not valid TOML"]),
    ],
)
def test_bad_file_is_one_line_and_status_2(app_dir, text, words):
    (app_dir / "bad.toml").write_text(text)
    code, out, err = run(["--config", "bad.toml", "capp"], app_dir)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("stogie: bad.toml")
    for word in words:
        assert word in err


def test_missing_config_file(app_dir):
    code, _, err = run(["--config", "nowhere.toml", "capp"], app_dir)
    assert code == 2 and len(err.splitlines()) == 1
    assert "cannot read nowhere.toml" in err


def test_options_added_later_are_read_from_environment_and_file(tmp_path):
    # The TLS options came after the configuration code, with no code of their own for it.
    factory = cli.build_parser
    (tmp_path / "s.toml").write_text(
        'ssl_certificate = "file.pem"\nssl-client-verify = "required"\n'
    )
    got = config.load(factory, ["--config", str(tmp_path / "s.toml")], environ={})
    assert got.values.ssl_certificate == "file.pem"
    assert got.values.ssl_client_verify == "required"
    env = {"STOGIE_SSL_CERTIFICATE": "env.pem", "STOGIE_SSL_CLIENT_VERIFY": "optional"}
    got = config.load(factory, ["--config", str(tmp_path / "s.toml")], environ=env)
    assert got.values.ssl_certificate == "env.pem"
    assert got.values.ssl_client_verify == "optional"
    assert got.sources["ssl_certificate"] == "STOGIE_SSL_CERTIFICATE"
    got = config.load(factory, ["--ssl-certificate", "cli.pem"], environ=env)
    assert got.values.ssl_certificate == "cli.pem"


# --- --pid -------------------------------------------------------------------------------------


def test_pid_file_holds_the_servers_pid_and_goes_at_exit(app_dir):
    port = free_port()
    pid_path = app_dir / "run" / "stogie.pid"
    pid_path.parent.mkdir()
    args = ["--bind", f"127.0.0.1:{port}", "--workers", "2", "--pid", str(pid_path), "capp"]
    with serving(args, app_dir) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        assert pid_path.read_text() == f"{running.pid}\n"  # the supervisor, not a worker
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(8) == 0, running.stderr
    assert not pid_path.exists()


def test_pid_file_that_cannot_be_written(app_dir):
    code, _, err = run(["--pid", str(app_dir / "no" / "such" / "dir.pid"), "capp"], app_dir)
    assert code == 2 and len(err.splitlines()) == 1
    assert "cannot write --pid" in err


# --- logging -----------------------------------------------------------------------------------


def test_startup_line_says_version_address_processes_threads_and_tls(app_dir):
    port = free_port()
    args = ["--bind", f"127.0.0.1:{port}", "--threads", "4", "--max-threads", "8", "capp"]
    with serving(args, app_dir) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        # The line comes once the signals are taken, a moment after the socket serves.
        wait_for(lambda: "serving" in running.stderr)
        line = next(x for x in running.stderr.splitlines() if "serving" in x)
        assert f"stogie {stogie.__version__} serving capp:application" in line
        assert f"on http://127.0.0.1:{port} (4 to 8 threads, TLS off)" in line


def test_log_config_json_sends_stogies_log_where_it_says(app_dir):
    port = free_port()
    log_path = app_dir / "server.log"
    (app_dir / "log.json").write_text(
        json.dumps(
            {
                "version": 1,
                "formatters": {"f": {"format": "CUSTOM %(levelname)s %(name)s %(message)s"}},
                "handlers": {
                    "file": {
                        "class": "logging.FileHandler",
                        "filename": str(log_path),
                        "formatter": "f",
                    }
                },
                "loggers": {"stogie": {"handlers": ["file"], "level": "INFO"}},
            }
        )
    )
    args = ["--bind", f"127.0.0.1:{port}", "--log-config", "log.json", "capp"]
    with serving(args, app_dir) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        assert wait_for(lambda: log_path.exists() and "serving capp" in log_path.read_text())
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(8) == 0
    lines = log_path.read_text().splitlines()
    assert any(line.startswith("CUSTOM INFO stogie.cli stogie ") for line in lines), lines
    assert "serving" not in running.stderr  # the file said where, not stderr


def test_log_config_ini(app_dir):
    port = free_port()
    log_path = app_dir / "server.log"
    (app_dir / "log.ini").write_text(
        textwrap.dedent(
            f"""
            [loggers]
            keys=root

            [handlers]
            keys=file

            [formatters]
            keys=plain

            [logger_root]
            level=INFO
            handlers=file

            [handler_file]
            class=FileHandler
            args=({str(log_path)!r},)
            formatter=plain

            [formatter_plain]
            format=INI %(name)s %(message)s
            """
        )
    )
    args = ["--bind", f"127.0.0.1:{port}", "--log-config", "log.ini", "capp"]
    with serving(args, app_dir) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        assert wait_for(
            lambda: log_path.exists() and "INI stogie.cli stogie" in log_path.read_text()
        )


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("log.yaml", "version: 1", ["use a .json file"]),
        ("log.json", "{not json", ["JSONDecodeError"]),
        ("log.json", '{"version": 2}', ["ValueError"]),
        ("log.ini", "[loggers]\nkeys=nothing\n", ["--log-config"]),
        ("missing.ini", None, ["cannot read"]),
    ],
)
def test_bad_log_config_is_one_line_and_status_2(app_dir, name, text, words):
    if text is not None:
        (app_dir / name).write_text(text)
    code, _, err = run(["--log-config", name, "capp"], app_dir)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err


def test_help_lists_the_new_options(tmp_path):
    code, out, _ = run(["--help"], tmp_path)
    assert code == 0
    for option in ("--config", "--print-config", "--pid", "--log-config", "STOGIE_"):
        assert option in out


# --- several addresses -------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_several_binds_from_the_command_line_or_the_environment(app_dir, tmp_path_factory, workers):
    port, other = free_port(), free_port()
    path = tmp_path_factory.mktemp("b") / "s.sock"
    env = {"STOGIE_BIND": f"127.0.0.1:{other}, {path}"}
    args = ["--bind", f"127.0.0.1:{port}", "--workers", workers, "capp"]
    # The command line's one --bind replaces the environment's list.
    with serving(args, app_dir, env) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        with pytest.raises(ConnectionRefusedError):
            connect_tcp(other)
    with serving(["--workers", workers, "capp"], app_dir, env) as running:
        wait_until_serving(running, lambda: connect_tcp(other))
        assert http_get(lambda: connect_tcp(other))[0] == 200
        assert http_get(lambda: connect_unix(path))[0] == 200
        assert wait_for(lambda: f"on http://127.0.0.1:{other}, unix:{path} (" in running.stderr)
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(8) == 0, running.stderr
    assert not path.exists()


def test_a_bind_that_fails_names_its_address(app_dir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(
            ["--bind", "127.0.0.1:0", "--bind", f"127.0.0.1:{port}", "capp"], app_dir
        )
    assert code == 2 and len(err.splitlines()) == 1
    assert f"cannot listen on http://127.0.0.1:{port}" in err


GATEWAY_APP = """
from stogie import server


class Hello(server.Gateway):
    def respond(self):
        import os

        req = self.req
        req.status = b"200 OK"
        body = b"gateway %d" % os.getpid()
        req.outheaders = [(b"Content-Length", str(len(body)).encode())]
        req.write(body)
"""


def test_a_gateway_class_served_by_workers(app_dir):
    (app_dir / "gapp.py").write_text(GATEWAY_APP)
    port = free_port()
    args = ["--bind", f"127.0.0.1:{port}", "--workers", "2", "gapp:Hello"]
    with serving(args, app_dir) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        status, body = http_get(lambda: connect_tcp(port))
        assert status == 200 and body.startswith(b"gateway ")
        assert int(body.split()[1]) != running.pid
