"""The type checks of ``./scripts/test``: run as ``.venv/bin/python tests/typing/check.py``.

1. ``mypy`` on the package, from the repository's root: ``--strict``, as
   ``[tool.mypy]`` in pyproject.toml sets it (only private modules are less strict).
2. ``mypy --strict`` on ``user_code.py``, a program that uses the public API, against the
   installed package (its ``py.typed`` and stubs, as a user's mypy sees them): it must pass.
3. ``mypy --strict`` on ``misuse.py``: exactly the errors its ``# expect:`` comments name
   (code and words of the message), on their lines, and no others.
4. ``stubtest`` on ``stogie._native``: the engine's stubs match the built extension.
5. pyright, where installed: ``user_code.py`` passes, and ``misuse.py`` has errors on the
   expected lines and no others.

Exit status 0 when all pass; each failure is said on stderr.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PYTHON_VERSION = "3.10"  # the oldest Python stogie supports: no newer stdlib names
# "# expect: CODE "words" "more words"" after a line of misuse.py.
EXPECT = re.compile(r"#\s*expect:\s*([a-z-]+)((?:\s+\"[^\"]*\")*)\s*$")
MIN_EXPECTED = 20

failures = []


def run(title, args, cwd):
    print(f"-- {title}: {shlex.join(str(a) for a in args)}", flush=True)
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    return result


def fail(message):
    failures.append(message)
    print(f"FAIL: {message}", file=sys.stderr, flush=True)


def show(result):
    text = (result.stdout + result.stderr).strip()
    if text:
        print(text)


def user_mypy(*args):
    """mypy --strict as a user runs it: no stogie configuration, the installed package."""
    return [
        sys.executable,
        "-m",
        "mypy",
        "--config-file=",
        "--strict",
        "--python-version",
        PYTHON_VERSION,
        "--cache-dir",
        str(ROOT / "target" / "mypy-user"),
        *args,
    ]


def expectations():
    """``{line: (code, [words])}`` from misuse.py's comments."""
    expected = {}
    for number, line in enumerate((HERE / "misuse.py").read_text().splitlines(), 1):
        match = EXPECT.search(line)
        if match:
            expected[number] = (match.group(1), re.findall(r"\"([^\"]*)\"", match.group(2)))
    return expected


def check_package():
    result = run("mypy on the package", [sys.executable, "-m", "mypy"], ROOT)
    show(result)
    if result.returncode != 0:
        fail("mypy finds errors in the package (python/stogie)")


def check_installed():
    """The package the user checks come from, and its py.typed (what makes mypy read it)."""
    spec = subprocess.run(
        [sys.executable, "-c", "import stogie; print(stogie.__file__)"],
        cwd=HERE,
        capture_output=True,
        text=True,
    )
    package = Path(spec.stdout.strip()).parent
    print(f"-- the user checks read stogie from {package}")
    for name in ("py.typed", "_native.pyi", "_typing.pyi"):
        if not (package / name).is_file():
            fail(f"the installed package has no {name} ({package})")


def check_user_code():
    result = run("mypy on a user's program", user_mypy("user_code.py"), HERE)
    show(result)
    if result.returncode != 0:
        fail("mypy --strict rejects tests/typing/user_code.py")


def check_misuse():
    expected = expectations()
    if len(expected) < MIN_EXPECTED:
        fail(f"misuse.py expects only {len(expected)} errors (at least {MIN_EXPECTED})")
    result = run("mypy on misuses", user_mypy("--output", "json", "misuse.py"), HERE)
    found = {}
    for line in result.stdout.splitlines():
        if not line.startswith("{"):
            continue
        error = json.loads(line)
        if error["severity"] != "error":
            continue
        found.setdefault(error["line"], []).append(error)
        print(f"misuse.py:{error['line']}: [{error['code']}] {error['message']}")
    if result.returncode != 1:
        fail(f"mypy on misuse.py exited with {result.returncode}: {result.stderr.strip()}")
    before = len(failures)
    for number, (code, words) in sorted(expected.items()):
        errors = found.pop(number, [])
        matching = [e for e in errors if e["code"] == code]
        if not matching:
            got = "; ".join(f"[{e['code']}] {e['message']}" for e in errors) or "no error"
            fail(f"misuse.py:{number}: expected a [{code}] error, got {got}")
            continue
        message = " ".join(e["message"] for e in matching)
        for word in words:
            if word not in message:
                fail(f"misuse.py:{number}: [{code}] error without {word!r}: {message}")
        if len(errors) != len(matching):
            others = [e for e in errors if e["code"] != code]
            fail(f"misuse.py:{number}: unexpected errors too: {others}")
    for number, errors in sorted(found.items()):
        for e in errors:
            fail(f"misuse.py:{number}: unexpected [{e['code']}] {e['message']}")
    if len(failures) == before:
        print(f"-- mypy rejects each of the {len(expected)} misuses as expected")


def check_stubs():
    result = run(
        "stubtest on the engine's stubs",
        [sys.executable, "-m", "mypy.stubtest", "stogie._native"],
        ROOT,
    )
    show(result)
    if result.returncode != 0:
        fail("stubtest: python/stogie/_native.pyi does not match the built stogie._native")


def pyright():
    """The pyright command, if installed next to this Python or on PATH."""
    beside = Path(sys.executable).parent / "pyright"
    if beside.is_file():
        return str(beside)
    return shutil.which("pyright")


def check_pyright():
    command = pyright()
    if command is None:
        print("-- pyright is not installed: skipped")
        return
    base = [command, "--pythonpath", sys.executable, "--pythonversion", PYTHON_VERSION]
    result = run("pyright on a user's program", [*base, "user_code.py"], HERE)
    show(result)
    if result.returncode != 0:
        fail("pyright rejects tests/typing/user_code.py")
    result = run("pyright on misuses", [*base, "--outputjson", "misuse.py"], HERE)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        fail(f"pyright gave no report: {result.stdout[-500:]} {result.stderr[-500:]}")
        return
    lines = {
        d["range"]["start"]["line"] + 1
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    }
    expected = set(expectations())
    for number in sorted(expected - lines):
        fail(f"pyright: misuse.py:{number}: no error")
    for number in sorted(lines - expected):
        fail(f"pyright: misuse.py:{number}: an error not expected")
    print(f"-- pyright: errors on {len(lines & expected)} of the {len(expected)} misuse lines")


def main():
    os.environ.pop("MYPYPATH", None)
    check_package()
    check_installed()
    check_user_code()
    check_misuse()
    check_stubs()
    check_pyright()
    if failures:
        print(f"type checks: {len(failures)} failures", file=sys.stderr)
        return 1
    print("type checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
