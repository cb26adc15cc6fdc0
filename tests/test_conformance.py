"""The HTTP/1.1 request corpus, black-box over real sockets.

``../shared/conformance/http1-requests.json`` holds raw requests from gunicorn's test suite
with the outcome gunicorn expects (its ``format`` field: ``raw_b64`` is the exact bytes a
client sends; ``expect`` is ``accept``, with the requests a server must parse, or ``reject``,
with gunicorn's error class; ``gunicorn_settings`` are non-default settings the case
assumes). Every case is sent to a live stogie serving an echo app, three ways: whole, byte by
byte, and in random pieces (``random.Random(1234)``).

- An accepted case must reach the app exactly as expected: method, target, path, query,
  version, headers (compared as environ keys, repeated fields joined as PEP 3333 servers do)
  and the de-chunked body, every pipelined request in order; then the connection is either
  closed (the last request asked for it) or still in step, which a final request proves.
- A rejected case must get a 4xx or 5xx answer and a close, and the app is never invoked.
- The cases with gunicorn's ``proxy_protocol`` go to a second server with stogie's
  ``proxy_protocol`` on; the client port their PROXY header names is the one the app sees.

Where stogie is deliberately stricter than gunicorn (issue 3: RFC 9112 at the level of the
strictest peer), the case is listed in ``DIFFERS`` with the reason and stogie's own answer,
which is then checked instead. One rule differs for a whole family of cases: RFC 9112 §3.2
says an HTTP/1.1 request without Host gets a 400, and gunicorn accepts it. Those cases are
sent as they are (the requests before the first Host-less HTTP/1.1 one reach the app, that one
gets a 400 and the close) and once more with a Host line added, which must then be accepted
exactly as the corpus says.
"""

import base64
import itertools
import json
import os
import random
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import ResponseReader, running
from stogie import wsgi

CORPUS_PATH = Path(
    os.environ.get(
        "STOGIE_CONFORMANCE_CORPUS",
        Path(__file__).resolve().parents[2] / "shared" / "conformance" / "http1-requests.json",
    )
)
CORPUS = json.loads(CORPUS_PATH.read_text())
CASES = {case["name"]: case for case in CORPUS["cases"]}

MODES = ("whole", "bytewise", "random")

# How the gunicorn settings the corpus names are met:
# - limit_request_line, limit_request_fields, limit_request_field_size: stogie's
#   max_request_line, max_header_count and max_header_field (server_settings());
# - header_map: "drop" is stogie's default, "dangerous" is allow_underscore_headers=True,
#   "refuse" has no equivalent (skipped);
# - forwarded_allow_ips: stogie's forwarded_allow_ips (gunicorn's name and meaning);
# - proxy_protocol: a second server with proxy_protocol=True (a setting taken at start); its
#   records are found by the client port the PROXY header names;
# - permit_unconventional_http_method: stogie takes any token as a method anyway;
# - casefold_http_method, strip_header_spaces, permit_obsolete_folding: lax modes stogie
#   deliberately lacks (those cases are in DIFFERS, or refused either way).
UNSUPPORTED = {
    ("header_map", "refuse"): (
        "header_map='refuse': stogie drops header names with '_' (the default, valid/040) "
        "or allows them (valid/040_compat); it has no refusing mode"
    ),
}

# Cases where stogie deliberately answers otherwise than gunicorn: the reason, and what stogie
# does instead (a status code for a refusal, or field overrides for an accepted request).
DIFFERS = {
    "valid/005": (
        400,
        "a request-target with a #fragment is refused (RFC 9112 §3.2: no fragment on the wire)",
    ),
    "valid/009": (
        400,
        "a request-target with a #fragment is refused (and Transfer-Encoding: identity with "
        "Content-Length would be refused next)",
    ),
    "valid/025": (501, "only chunked is a supported transfer-coding: gzip gets a 501"),
    "valid/025_line": (501, "only chunked is a supported transfer-coding: gzip gets a 501"),
    "valid/rfc9112_smuggle_gzip_chunked_01": (
        501,
        "only chunked is a supported transfer-coding: gzip gets a 501",
    ),
    "valid/029": (
        501,
        "identity is not a transfer-coding (RFC 9112 dropped it): only chunked is supported",
    ),
    "valid/030": (
        501,
        "identity is not a transfer-coding (RFC 9112 dropped it): only chunked is supported",
    ),
    "valid/rfc9112_smuggle_te_identity_chunked_01": (
        501,
        "identity is not a transfer-coding (RFC 9112 dropped it): only chunked is supported",
    ),
    "valid/027": (400, "raw bytes outside visible ASCII in the request-target are refused"),
    "valid/028": (
        400,
        "whitespace before a header's colon is refused (RFC 9112 §5.1); stogie has no "
        "strip_header_spaces",
    ),
    "valid/031compat": (
        {"method": "-blargh"},
        "the method is case-sensitive (RFC 9110 §9.1) and kept as sent: stogie has no "
        "casefold_http_method",
    ),
    "valid/compat_obs_fold": (
        400,
        "obs-fold is refused (RFC 9112 §5.2); stogie has no permit_obsolete_folding",
    ),
    "valid/compat_obs_fold_huge": (
        400,
        "obs-fold is refused (RFC 9112 §5.2); stogie has no permit_obsolete_folding",
    ),
    "valid/rfc9112_target_authority_connect_01": (
        405,
        "CONNECT gets a 405: stogie is not a proxy",
    ),
    "valid/rfc9112_target_authority_ipv6_01": (
        405,
        "CONNECT gets a 405: stogie is not a proxy",
    ),
    "valid/rfc9112_target_absolute_userinfo_01": (
        400,
        "userinfo in an absolute-form target is refused (RFC 9110 §4.2.4: treat it as an error)",
    ),
    "valid/pp_03": (
        400,
        "a listener with the PROXY protocol on refuses a connection without the header: "
        "gunicorn's 'auto' makes it optional, which lets a client that reaches the port "
        "directly pass as the proxy",
    ),
    "valid/099": (
        400,
        "Content-Length says 17914 bytes and 8599 come before the end of input: stogie refuses "
        "a truncated body, gunicorn's test reads what there is",
    ),
}

# What gunicorn's limit errors are in stogie's words; other refusals only need a 4xx or 5xx.
LIMIT_STATUS = {"LimitRequestLine": 414, "LimitRequestHeaders": 431}
STATUS_OVERRIDE = {
    # With permit_obsolete_folding gunicorn reaches its field size limit; stogie refuses the
    # obs-fold itself first.
    "invalid/013": 400,
}

# The corpus's limits are gunicorn's, whose defaults differ from stogie's.
GUNICORN_LIMITS = {
    "limit_request_line": 4094,
    "limit_request_fields": 100,
    "limit_request_field_size": 8190,
}

# gunicorn sees the end of its input after the bytes; these cases are about that end, so the
# client half-closes after sending them.
ENDS_WITH_EOF = {"NoMoreData", "ChunkMissingTerminator"}
TRUNCATED = {"valid/099"}

PROBE = b"GET /conformance-probe HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
ADDED_HOST = "stogie.test"
HEXDIGITS = b"0123456789abcdefABCDEF"

RESULTS = Counter()


def skip_reason(case):
    for name, value in case["gunicorn_settings"].items():
        value = tuple(value) if isinstance(value, list) else value
        for key in ((name, None), (name, value)):
            if key in UNSUPPORTED:
                return UNSUPPORTED[key]
    return None


def server_settings(case):
    """stogie's equivalents of the gunicorn settings the case runs with."""
    settings = case["gunicorn_settings"]
    limits = dict(GUNICORN_LIMITS)
    for name, default in GUNICORN_LIMITS.items():
        # 0 means gunicorn's default (case invalid/limit_header_default_01).
        value = settings.get(name) or default
        limits[name] = value
    return {
        "max_request_line": limits["limit_request_line"],
        "max_header_count": limits["limit_request_fields"],
        # gunicorn counts a field line with its CRLF, stogie without.
        "max_header_field": limits["limit_request_field_size"] - 2,
        "allow_underscore_headers": settings.get("header_map") == "dangerous",
        "forwarded_allow_ips": ",".join(settings.get("forwarded_allow_ips", ["127.0.0.1", "::1"])),
    }


def proxied_port(raw):
    """The client port a PROXY protocol header at the start of ``raw`` names, or None."""
    if raw.startswith(b"PROXY TCP"):
        fields = raw.split(b"\r\n", 1)[0].split(b" ")
        return int(fields[4]) if len(fields) == 6 and fields[4].isdigit() else None
    if raw.startswith(b"\r\n\r\n\x00\r\nQUIT\n") and len(raw) >= 16:
        offset = {0x11: 8, 0x21: 32}.get(raw[13])
        return int.from_bytes(raw[16 + offset : 18 + offset], "big") if offset else None
    return None


# -- the server ---------------------------------------------------------------------------

CALLS = []
CALLS_LOCK = threading.Lock()
RECORDED = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "SERVER_PROTOCOL")


def echo_app(environ, start_response):
    """Answers with what it received, as JSON, and records every call by client port."""
    body = environ["wsgi.input"].read()
    record = {key: environ.get(key) for key in RECORDED}
    record["headers"] = {
        key: value
        for key, value in environ.items()
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
    }
    record["body"] = body.decode("latin-1")
    with CALLS_LOCK:
        CALLS.append((environ["REMOTE_PORT"], record))
    out = json.dumps(record).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    )
    return [out]


@pytest.fixture(scope="module")
def server():
    srv = wsgi.Server(("127.0.0.1", 0), echo_app, numthreads=4, timeout=10)
    with running(srv):
        yield srv


@pytest.fixture(scope="module")
def proxy_server():
    srv = wsgi.Server(("127.0.0.1", 0), echo_app, numthreads=4, timeout=10)
    srv.proxy_protocol = True
    with running(srv):
        yield srv


def calls_from(port):
    with CALLS_LOCK:
        return [record for p, record in CALLS if p == str(port)]


# -- what a request must look like to the app ---------------------------------------------


def environ_key(name):
    """The environ key a header name reaches the app under (PEP 3333)."""
    if name == "CONTENT-TYPE":
        return "CONTENT_TYPE"
    if name == "CONTENT-LENGTH":
        return "CONTENT_LENGTH"
    return "HTTP_" + name.replace("-", "_")


def decode_path(path):
    """PATH_INFO: percent-decoded as latin-1, with %2F kept encoded (as Cheroot does)."""
    raw = path.encode("latin-1")
    out = bytearray()
    i = 0
    while i < len(raw):
        pair = raw[i + 1 : i + 3]
        if raw[i] == ord("%") and len(pair) == 2 and all(c in HEXDIGITS for c in pair):
            byte = int(pair, 16)
            out += b"%2F" if byte == ord("/") else bytes([byte])
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("latin-1")


def expected_record(req):
    headers = {}
    for name, value in req["headers"]:
        key = environ_key(name)
        if key not in headers:
            headers[key] = value
        elif key != "CONTENT_LENGTH":  # repeated equal values: the first one stands
            headers[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
    return {
        "REQUEST_METHOD": req["method"],
        # The corpus gives gunicorn's path; stogie's PATH_INFO always starts with a slash,
        # as Cheroot's does (`OPTIONS *` gives "/*", REQUEST_URI keeps "*").
        "PATH_INFO": decode_path(req["path"] if req["path"].startswith("/") else "/" + req["path"]),
        "QUERY_STRING": req["query"],
        "REQUEST_URI": req["target"],
        "SERVER_PROTOCOL": "HTTP/%d.%d" % tuple(req["version"]),
        "headers": headers,
        "body": base64.b64decode(req["body_b64"]).decode("latin-1"),
    }


def header_values(req, name):
    return [v for n, v in req["headers"] if n == name]


def needs_host(req):
    return req["version"] == [1, 1] and not header_values(req, "HOST")


def keeps_alive(req):
    tokens = {t.strip().lower() for v in header_values(req, "CONNECTION") for t in v.split(",")}
    if req["version"] == [1, 1]:
        return "close" not in tokens
    return "keep-alive" in tokens and "close" not in tokens


def with_host(raw, requests):
    """The raw bytes with a Host line after the request line of every Host-less HTTP/1.1
    request, and the requests as they then reach the app."""
    out = bytearray()
    pos = 0
    reqs = []
    for req in requests:
        tail = b" %s HTTP/%d.%d\r\n" % (req["target"].encode("latin-1"), *req["version"])
        end = raw.index(tail, pos) + len(tail)
        out += raw[pos:end]
        pos = end
        if needs_host(req):
            out += b"Host: %s\r\n" % ADDED_HOST.encode()
            req = dict(req, headers=[["HOST", ADDED_HOST], *req["headers"]])
        reqs.append(req)
    out += raw[pos:]
    return bytes(out), reqs


# -- the client ---------------------------------------------------------------------------


def pieces(raw, mode):
    if mode == "whole":
        return [raw]
    if mode == "bytewise":
        return [raw[i : i + 1] for i in range(len(raw))]
    rng = random.Random(1234)
    cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, 16)))
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def pause_after(raw, mode, index, piece):
    """Whether to let the server read what was sent before sending more."""
    if mode == "random":
        return True
    # Byte by byte: after every byte of a short request; after line ends and every 64th
    # byte of a long one (the long ones are 8 to 16 KiB of one header or request line).
    return mode == "bytewise" and (len(raw) <= 4096 or piece in b"\r\n" or index % 64 == 0)


def send(sock, raw, mode):
    parts = pieces(raw, mode)
    for i, piece in enumerate(parts):
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return  # the server answered and closed early: its answer is what counts
        if i + 1 < len(parts) and pause_after(raw, mode, i, piece):
            time.sleep(0.001 if mode == "random" else 0.00002)


def connect(server):
    sock = socket.create_connection(server.bind_addr, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def expect_refusal(server, raw, mode, status, eof=False, label=""):
    """Sends ``raw``; asserts the answer is ``status`` (or any 4xx/5xx when None), that the
    connection then closes, and that the app saw none of it. Returns the status."""
    with connect(server) as sock:
        port = proxied_port(raw) or sock.getsockname()[1]
        send(sock, raw, mode)
        if eof:
            sock.shutdown(socket.SHUT_WR)
        reader = ResponseReader(sock)
        try:
            status_line, _, body, _ = reader.read_response()
        except EOFError:
            pytest.fail(f"{label}: the connection closed without an answer")
        code = int(status_line.split()[1])
        if status is None:
            assert 400 <= code < 600, f"{label}: {status_line!r} {body!r}"
        else:
            assert code == status, f"{label}: {status_line!r} {body!r}"
        assert reader.closed(5), f"{label}: the connection stayed open after {code}"
    assert calls_from(port) == [], f"{label}: the app was invoked"
    return code


def expect_requests(server, raw, mode, requests, refused_after=False, label=""):
    """Sends ``raw``; asserts every request in ``requests`` reached the app as expected and
    was answered in order. Then either a 400 and the close (``refused_after``), the close the
    last request asked for, or a connection still in step."""
    with connect(server) as sock:
        port = proxied_port(raw) or sock.getsockname()[1]
        send(sock, raw, mode)
        reader = ResponseReader(sock)
        for i, req in enumerate(requests):
            try:
                status_line, _, body, complete = reader.read_response()
            except EOFError:
                pytest.fail(f"{label}: closed before the answer to request {i + 1}")
            assert status_line.split()[1] == b"200", f"{label} #{i + 1}: {status_line!r} {body!r}"
            assert complete
            seen = json.loads(body)
            assert seen == expected_record(req), f"{label} #{i + 1}"
        if refused_after:
            status_line, _, body, _ = reader.read_response()
            assert status_line.split()[1] == b"400", f"{label}: {status_line!r} {body!r}"
            assert reader.closed(5), f"{label}: the connection stayed open after the 400"
            extra = 0
        elif requests and not keeps_alive(requests[-1]):
            assert reader.closed(5), f"{label}: the connection stayed open"
            extra = 0
        else:
            # Still in step: nothing of the case is left to be read as a request.
            sock.sendall(PROBE)
            status_line, _, body, _ = reader.read_response()
            assert status_line.split()[1] == b"200", f"{label}: {status_line!r} {body!r}"
            assert json.loads(body)["PATH_INFO"] == "/conformance-probe", label
            assert reader.closed(5), f"{label}: the connection stayed open after the probe"
            extra = 1
    assert len(calls_from(port)) == len(requests) + extra, f"{label}: app invocations"


def configure(server, case):
    for name, value in server_settings(case).items():
        setattr(server, name, value)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(CASES))
def test_corpus(request, name, mode):
    case = CASES[name]
    reason = skip_reason(case)
    if reason:
        RESULTS[mode, "skipped"] += 1
        pytest.skip(reason)
    proxied = "proxy_protocol" in case["gunicorn_settings"]
    server = request.getfixturevalue("proxy_server" if proxied else "server")
    configure(server, case)
    with CALLS_LOCK:
        CALLS.clear()  # client ports get reused from one test to the next
    raw = base64.b64decode(case["raw_b64"])
    eof = case.get("error") in ENDS_WITH_EOF or name in TRUNCATED

    if name in DIFFERS:
        outcome, _ = DIFFERS[name]
        if isinstance(outcome, int):
            label = f"{name} (differs)"
            if any(needs_host(req) for req in case["requests"]):
                # Without Host it would be refused for that alone.
                raw, _ = with_host(raw, case["requests"])
                label = f"{name} (differs, Host added)"
            expect_refusal(server, raw, mode, outcome, eof, label=label)
            RESULTS[mode, "differs"] += 1
            return
        requests = [dict(req, **outcome) for req in case["requests"]]
        kind = "differs"
    elif case["expect"] == "accept":
        requests = case["requests"]
        kind = "accepted"
    else:
        status = STATUS_OVERRIDE.get(name, LIMIT_STATUS.get(case["error"]))
        expect_refusal(server, raw, mode, status, eof, label=name)
        RESULTS[mode, "rejected"] += 1
        return

    hostless = [i for i, req in enumerate(requests) if needs_host(req)]
    if hostless:
        # As sent: the Host-less HTTP/1.1 request is refused, those before it are served.
        first = hostless[0]
        expect_requests(
            server, raw, mode, requests[:first], refused_after=True, label=f"{name} (as sent)"
        )
        raw, requests = with_host(raw, requests)
        RESULTS[mode, "host added"] += 1
    expect_requests(server, raw, mode, requests, label=name)
    RESULTS[mode, kind] += 1


def test_corpus_counts():
    """Runs last in this module: prints what the corpus run came to, per mode."""
    if not RESULTS:
        pytest.skip("the corpus tests did not run")
    for mode in MODES:
        counts = {k: v for (m, k), v in sorted(RESULTS.items()) if m == mode}
        print(f"corpus {mode}: {counts}")
    assert len(CASES) == 137
