"""Setup: packages from PyPI, the stogie build, the ceiling binary, the TLS files."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from harness.base import BIN, LOGS, PY, ROOT, TLS_CERT, TLS_KEY, dist_version, last_line, say

# --------------------------------------------------------------------------------------------
# Setup: packages, the stogie build, the ceiling binary


def pip_install(args, log_name, python=PY, env=None):
    log_path = LOGS / log_name
    with open(log_path, "w") as log:
        rc = subprocess.call(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    return None if rc == 0 else f"pip install failed: {last_line(log_path, 60)}"


def tls_files():
    """The TLS workloads' certificate and key (openssl's command line; made once)."""
    if TLS_CERT.exists() and TLS_KEY.exists():
        return None
    TLS_CERT.parent.mkdir(parents=True, exist_ok=True)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    argv += ["-nodes", "-days", "3650", "-subj", "/CN=127.0.0.1"]
    argv += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    argv += ["-keyout", str(TLS_KEY), "-out", str(TLS_CERT)]
    out = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return None if out.returncode == 0 else f"openssl req failed: {out.stderr.strip()[:60]}"


def uses_checkout(s):
    """Whether the server runs the stogie built from this checkout into bench/.venv."""
    return s.key.startswith("stogie") and s.build in (None, "checkout")


def setup(servers, workloads, opts):
    """Installs what the selected servers need. Returns {server key: why it cannot run}."""
    broken: dict = {}
    if any(w.tls for w in workloads):
        why = tls_files()
        if why:
            say(f"no TLS workloads: {why}")
            workloads[:] = [w for w in workloads if not w.tls]
    if any(w.h2 and not w.idle for w in workloads) and not shutil.which("h2load"):
        say("no HTTP/2 load workloads: h2load is not installed (Debian: nghttp2-client)")
        workloads[:] = [w for w in workloads if w.idle or not w.h2]
    needed = {pkg for s in servers for pkg in s.packages}
    if any(w.app == "flask_app" for w in workloads):
        needed.add("flask")
    if any(w.h2 for w in workloads):
        needed.add("h2")  # the harness's HTTP/2 client, and gunicorn's HTTP/2
    for pkg in sorted(needed):
        if dist_version(pkg) or opts.no_install:
            continue
        say(f"installing {pkg} from PyPI")
        why = pip_install([pkg], f"pip-{pkg}.log")
        if why:
            say(f"  {why}")
        importlib.invalidate_caches()
    for s in servers:
        missing = [p for p in s.packages if not dist_version(p)]
        if missing:
            broken[s.key] = f"{', '.join(missing)} not installed"

    if any(uses_checkout(s) for s in servers):
        if not opts.no_build:
            say("building stogie in release mode from this checkout (pip install .)")
            t0 = time.monotonic()
            why = pip_install(["--force-reinstall", "--no-deps", str(ROOT)], "pip-stogie.log")
            say(f"  {'done' if not why else why} in {time.monotonic() - t0:.0f} s")
            if why:
                for s in servers:
                    if uses_checkout(s):
                        broken[s.key] = f"build failed, see {LOGS / 'pip-stogie.log'}"
        if not (BIN / "stogie").exists():
            for s in servers:
                if uses_checkout(s):
                    broken.setdefault(s.key, "stogie not installed")

    hello_bin = target_dir() / "release" / "examples" / "hello"
    if any(s.key == "ceiling" for s in servers):
        if not opts.no_build:
            say("building the ceiling (cargo build --release --example hello)")
            log_path = LOGS / "cargo-hello.log"
            with open(log_path, "w") as log:
                rc = subprocess.call(
                    ["cargo", "build", "--release", "-p", "stogie-http", "--example", "hello"],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if rc != 0:
                broken["ceiling"] = f"cargo build failed: {last_line(log_path, 60)}"
        if not hello_bin.exists():
            broken.setdefault("ceiling", "hello example not built")
    return broken, hello_bin


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
