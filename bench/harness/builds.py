"""Two builds of stogie compared in one run (--stogie-a, --stogie-b), each from its own
virtualenv: this checkout (bench/.venv, built as for every run), a virtualenv given by its
path, a wheel, or a git revision built into bench/.builds/ (kept, and reused next time).

An engine change is judged by its CPU per response "within 3%" of the build before it:
alternating rounds of the two builds in one run (rounds.py) are what can tell 3% apart.
"""

from __future__ import annotations

import os
import subprocess
import sysconfig
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.base import BENCH, BIN, LOGS, PY, ROOT, say
from harness.install import pip_install

BUILDS = BENCH / ".builds"
CHECKOUT = "checkout"


@dataclass
class Build:
    stogie: Path | None = None  # its stogie command
    desc: str = ""
    fail: str | None = None


def _git(*args):
    out = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return out.stdout.strip() if out.returncode == 0 else None


def _version(python):
    try:
        out = subprocess.run(
            [str(python), "-c", "import stogie; print(stogie.__version__)"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() or "?"


def _make_venv(venv):
    """A virtualenv that sees bench/.venv's packages (Flask, h2) after its own: a .pth line
    is appended to sys.path after its site-packages, so its own stogie comes first."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([PY, "-m", "venv", str(venv)], check=True, stdin=subprocess.DEVNULL)
    paths = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})
    site = Path(paths["purelib"])
    site.mkdir(parents=True, exist_ok=True)
    (site / "bench-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def _build_rev(spec, name):
    sha = _git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if not sha:
        return Build(fail=f"{spec!r}: not a virtualenv, a wheel or a git revision")
    subject = (_git("log", "-1", "--format=%s", sha) or "")[:60]
    desc = f"{spec} = {sha[:10]} ({subject})" if spec != sha else f"{sha[:10]} ({subject})"
    venv = BUILDS / f"rev-{sha[:12]}"
    stogie = venv / "bin" / "stogie"
    # (Builds made before revision trees were dated anew have the old mark: made again.)
    built = venv / ".built-anew"
    if stogie.exists() and built.exists():
        return Build(stogie, desc + ", built before")
    say(f"building stogie {sha[:10]} in release mode into {venv.relative_to(BENCH)}/")
    BUILDS.mkdir(exist_ok=True)
    _make_venv(venv)
    log_name = f"pip-stogie-{name}.log"
    with tempfile.TemporaryDirectory(dir=BUILDS) as src:
        archive = Path(src) / "src.tar"
        with open(archive, "wb") as f:
            rc = subprocess.call(["git", "archive", sha], cwd=ROOT, stdout=f)
        if rc != 0:
            return Build(fail=f"git archive {sha[:10]} failed")
        tree = Path(src) / "tree"
        with tarfile.open(archive) as tar:
            tar.extractall(tree, filter="data")
        # git archive dates every file at its commit: older than what a target directory
        # built since holds, so cargo took that for this revision's build and compiled
        # nothing (an A/B then compared a build with itself). Dated now, its crates are
        # compiled, in a target directory of the revision builds' own (its dependencies
        # kept for the next one; the checkout's own build is left alone).
        for path in tree.rglob("*"):
            os.utime(path)
        env = dict(os.environ, CARGO_TARGET_DIR=str(BUILDS / "target"))
        args = ["--force-reinstall", "--no-deps", str(tree)]
        why = pip_install(args, log_name, python=venv / "bin" / "python", env=env)
    if why:
        return Build(fail=f"build failed, see {LOGS / log_name}")
    built.touch()
    return Build(stogie, desc)


def prepare(spec, name):
    """The stogie command of one side of the comparison (a Build), built when needed: a git
    revision once (even with --no-build, which spares only this checkout's rebuild)."""
    if spec == CHECKOUT:
        return Build(BIN / "stogie", CHECKOUT)  # described by the caller: git_rev()
    path = Path(spec).expanduser().resolve()  # servers run in bench/
    if path.is_dir():
        stogie = path / "bin" / "stogie"
        if not stogie.exists():
            return Build(fail=f"{path} has no bin/stogie")
        return Build(stogie, f"virtualenv {path} (stogie {_version(path / 'bin' / 'python')})")
    if spec.endswith(".whl"):
        if not path.is_file():
            return Build(fail=f"{spec}: no such wheel")
        venv = BUILDS / f"wheel-{path.stem}"
        BUILDS.mkdir(exist_ok=True)
        _make_venv(venv)
        log_name = f"pip-stogie-{name}.log"
        why = pip_install(
            ["--force-reinstall", "--no-deps", str(path.resolve())],
            log_name,
            python=venv / "bin" / "python",
        )
        if why:
            return Build(fail=f"wheel install failed, see {LOGS / log_name}")
        return Build(venv / "bin" / "stogie", f"wheel {path.name}")
    return _build_rev(spec, name)
