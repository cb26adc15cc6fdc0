"""Paths and constants every part of the harness shares, and a few small helpers."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
LOGS = BENCH / ".logs"
BIN = Path(sys.executable).parent
PY = sys.executable
HOST = "127.0.0.1"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")

HELLO = b"Hello, World!"
POST_BODY = b"x" * 4096  # what post4k.lua sends
IDLE_TIMEOUT = 60  # keep-alive timeout given to every server for the idle test, where it can
# The TLS workloads' certificate and key: ECDSA P-256, self-signed, made by tls_files().
TLS_CERT = LOGS / "tls" / "cert.pem"
TLS_KEY = LOGS / "tls" / "key.pem"


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def last_line(path, limit=90):
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:limit] if lines else ""


class WrongResponse(Exception):
    pass


def fmt_rps(x):
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def fmt_ms(x):
    if x != x:  # nan
        return "?"
    if x < 1:
        return f"{x:.2f}"
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def mb(n):
    return f"{n / 2**20:.1f}" if abs(n) < 10 * 2**20 else f"{n / 2**20:.0f}"
