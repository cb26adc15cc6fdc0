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
    h2: bool = False  # HTTP/2 (h2load): over TLS by ALPN, else cleartext h2c by prior knowledge
    streams: int = 1  # HTTP/2 streams in flight per connection (h2load -m)
    idle: bool = False  # the idle test: connections opened, one request each, then quiet


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
    Workload("idle", "10k idle keep-alive", "hello", 10000, idle=True),
    # HTTP/2 (issue 18): h2load -c 10 -m 10, 100 streams in flight over 10 connections.
    Workload("h2c-hello", "hello over HTTP/2, h2c", "hello", 10, h2=True, streams=10),
    Workload("h2tls-hello", "hello over HTTP/2, TLS", "hello", 10, tls=True, h2=True, streams=10),
    Workload(
        "h2c-flask",
        "Flask JSON over HTTP/2, h2c",
        "flask_app",
        10,
        path="/json",
        expect=_json_ok,
        h2=True,
        streams=10,
    ),
    Workload(
        "h2tls-flask",
        "Flask JSON over HTTP/2, TLS",
        "flask_app",
        10,
        path="/json",
        expect=_json_ok,
        tls=True,
        h2=True,
        streams=10,
    ),
    Workload("h2c-idle", "1k idle HTTP/2, h2c", "hello", 1000, h2=True, idle=True),
    Workload("h2tls-idle", "1k idle HTTP/2, TLS", "hello", 1000, tls=True, h2=True, idle=True),
]
WORKLOAD_KEYS = [w.key for w in WORKLOADS]
# Names for several workloads at once in --workloads.
WORKLOAD_GROUPS = {
    "http1": [w.key for w in WORKLOADS if not w.h2],
    "http2": [w.key for w in WORKLOADS if w.h2],
}
