"""The workloads: what each run asks of a server, and what a correct answer is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from harness.base import HELLO, POST_BODY


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    app: str  # callable in apps.py
    connections: int
    path: str = "/"
    script: str | None = None  # wrk lua script in bench/
    method: str = "GET"
    body: bytes | None = None
    # what a correct response body is
    expect: Callable[[bytes], bool] = lambda body: body == HELLO
    tls: bool = False  # HTTPS (the certificate from tls_files())
    close: bool = False  # "Connection: close": a new connection (and handshake) per request


def _json_ok(body):
    try:
        return json.loads(body) == {"message": "Hello, World!"}
    except ValueError:
        return False


WORKLOADS = [
    Workload("hello", "hello", "hello", 64),
    Workload("hello-256", "hello, 256 connections", "hello", 256),
    Workload("big", "64 KiB body", "big", 64, expect=lambda b: b == b"x" * 65536),
    Workload(
        "post",
        "POST 4 KiB echo",
        "echo",
        64,
        script="post4k.lua",
        method="POST",
        body=POST_BODY,
        expect=lambda b: b == POST_BODY,
    ),
    Workload("stream", "stream 100 x 1 KiB", "stream", 64, expect=lambda b: b == b"y" * 102400),
    Workload("flask", "Flask JSON", "flask_app", 64, path="/json", expect=_json_ok),
    Workload("sleep", "sleep 10 ms, 256 connections", "sleep", 256),
    Workload("tls", "hello over TLS", "hello", 64, tls=True),
    Workload("tls-handshake", "hello, a TLS handshake each", "hello", 64, tls=True, close=True),
    Workload("idle", "10k idle keep-alive", "hello", 10000),
]
WORKLOAD_KEYS = [w.key for w in WORKLOADS]
