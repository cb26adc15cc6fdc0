"""HTTP/2's limits under the known attacks, against ``stogie`` in a subprocess: Rapid Reset
(CVE-2023-44487, as fast as possible and paced), MadeYouReset (CVE-2025-8671), PING,
SETTINGS, PRIORITY, RST_STREAM and empty DATA floods, CONTINUATION floods, an HPACK bomb
and a client that never opens its window. The attacker is tests/h2attack.py in a process of
its own; meanwhile a normal client on another connection must be answered in under 100 ms
(the median of its requests; the max is reported), the app calls that ran are counted by
the app itself, and the server's memory must stay bounded.

The server runs 10 threads, no more, and lets a connection have 4 streams (4 jobs queued or
running): one connection's share of the pool is less than the pool."""

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from h2kit import (
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    WINDOW_UPDATE,
    H2Client,
    count,
    frame,
    rss_kib,
    stogie_h2,
)

from conftest import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")

THREADS, STREAMS = 10, 4
ATTACKER = Path(__file__).with_name("h2attack.py")
LATENCY = 0.100  # the normal client's bound, median of its requests
MEMORY = 32 * 1024  # KiB the server may grow by under an attack


class Probe(threading.Thread):
    """A normal client: one HTTP/2 connection of its own, a GET every 20 ms; the
    latencies it saw, and whether a request failed."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.latencies = []
        self.failures = []
        self.halt = threading.Event()
        self.ready = threading.Event()

    def run(self):
        try:
            with H2Client.connect(("127.0.0.1", self.port)) as c:
                c.get("/")  # connected and warm
                self.ready.set()
                while not self.halt.is_set():
                    start = time.monotonic()
                    r = c.get("/", timeout=10)
                    took = time.monotonic() - start
                    if (r.status, r.body) != (200, b"ok"):
                        self.failures.append(repr(r))
                    self.latencies.append(took)
                    self.halt.wait(0.02)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.failures.append(repr(e))
            self.ready.set()


class Rss(threading.Thread):
    """The server's resident memory, sampled every 50 ms: the most seen."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_kib(pid)
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid))


def under_attack(running, port, kind, seconds, **opts):
    """Runs attack ``kind`` for ``seconds`` while a normal client requests; returns what
    the attacker reported, with the normal client's latencies and the server's memory."""
    probe, rss = Probe(port), Rss(running.pid)
    probe.start()
    assert probe.ready.wait(10) and not probe.failures, probe.failures
    # The server's memory once it served a request on HTTP/2 (its buffers made).
    before = rss_kib(running.pid)
    rss.start()
    started = len(probe.latencies)
    proc = subprocess.run(
        [sys.executable, str(ATTACKER), kind, str(port), str(seconds), json.dumps(opts)],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    probe.halt.set()
    rss.halt.set()
    probe.join(15)
    rss.join(5)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    during = probe.latencies[started:]
    assert not probe.failures, probe.failures
    assert len(during) >= 5, f"the normal client got {len(during)} answers in {seconds} s"
    result["median_ms"] = statistics.median(during) * 1000
    result["max_ms"] = max(during) * 1000
    result["probes"] = len(during)
    result["rss_growth_kib"] = rss.peak - before
    result["rss_kib"] = rss.peak
    # What the numbers were, for whoever reads the output (pytest -rP or -s).
    print(f"[h2 attack] {json.dumps(result)}")
    assert result["median_ms"] < LATENCY * 1000, result
    assert result["rss_growth_kib"] < MEMORY, result
    return result


@pytest.fixture
def server(tmp_path):
    args = ["--threads", str(THREADS), "--max-threads", str(THREADS)]
    args += ["--http2-max-concurrent-streams", str(STREAMS)]
    with stogie_h2(tmp_path, *args, "--timeout", "2") as (running, port):
        yield running, port


def calls(port):
    """The app's /work calls that ran, and the most of one connection's running at once
    (the most of all connections' at once is printed)."""
    ran, peak, peak_all = (count(port, what) for what in ("count", "peak", "peakall"))
    print(f"[h2 attack] /work: {ran} calls ran, at once {peak} of a connection, {peak_all} in all")
    return ran, peak


WORK = 0.2  # seconds an app call of the reset attacks takes


def capped(port, result):
    """Checks the job cap after an attack of resets: no more of one connection's calls
    running at once than it may have streams; no backlog (the calls that ran were running
    when the attack ended, or done: a second later, at most a connection's worth more have
    started); and most streams never reached the app. The calls that ran."""
    ran, peak = calls(port)
    time.sleep(1.0)
    later = count(port)
    print(f"[h2 attack] {result['kind']}: {ran} app calls ran of {result['streams']} streams")
    assert peak <= STREAMS, (peak, result)
    assert later - ran <= STREAMS, (ran, later, result)
    assert ran <= result["streams"] / 10, (ran, result)
    return ran


# --- Rapid Reset and MadeYouReset ------------------------------------------------------------


def test_rapid_reset_as_fast_as_possible(server):
    running, port = server
    result = under_attack(running, port, "rapid-reset", 2.0, path="/work?ms=200")
    # The h2 crate ends a connection that resets 20 streams before they are accepted.
    assert calmed(result) == {"too_many_resets"}, result
    assert result["streams"] >= 5000, result
    capped(port, result)


def test_rapid_reset_paced_past_the_crates_limit(server):
    # Streams opened up to the limit and reset 1 ms later, over and over: past the h2
    # crate's limit on streams reset before they are accepted, most jobs are waiting for a
    # place or queued when their streams are reset.
    running, port = server
    result = under_attack(running, port, "paced-reset", 2.0, streams=STREAMS, hold=0.001)
    assert result["streams"] >= 500, result
    capped(port, result)


def test_rapid_reset_paced_after_the_jobs_started(server):
    # Reset 30 ms after they were opened, the jobs have started: each runs to its end (an
    # app call cannot be interrupted), and its stream, reset, still counts among the
    # connection's jobs until then. The app runs no more of them than the connection may
    # have at once: a place per 200 ms call.
    running, port = server
    result = under_attack(running, port, "paced-reset", 2.0, streams=STREAMS, hold=0.03)
    assert result["connections"] == 1 and result["streams"] >= 100, result
    ran, peak = calls(port)
    assert peak == STREAMS
    assert ran <= STREAMS * (2.0 / WORK + 2), (ran, result)


@pytest.mark.parametrize("by", ["client", "server"])
def test_a_stream_reset_before_its_job_starts_never_reaches_the_app(server, tmp_path, by):
    # Reset by the client (Rapid Reset), or by the server itself on a frame the client
    # sends to that end (MadeYouReset: a WINDOW_UPDATE that overflows the stream's window).
    running, port = server
    # Every thread busy: the attacker's requests can only queue.
    blockers = [H2Client.connect(("127.0.0.1", port)) for _ in range(THREADS // STREAMS + 1)]
    try:
        for i in range(THREADS):
            b = blockers[i // STREAMS]
            b.request("GET", "/wait?for=release")
        waiting = tmp_path / "waiting.txt"
        assert wait_for(lambda: waiting.exists() and len(waiting.read_bytes()) == THREADS)
        with H2Client.connect(("127.0.0.1", port)) as c:
            for _ in range(50):
                sids = [c.request("GET", "/work") for _ in range(STREAMS)]
                time.sleep(0.005)
                for sid in sids:
                    if by == "client":
                        c.conn.reset_stream(sid, 8)
                    else:
                        c.sock.sendall(frame(WINDOW_UPDATE, 0, sid, b"\x7f\xff\xff\xff"))
                c.flush()
                if by == "server":
                    # Its streams closed before it opens more, as a client must.
                    assert c.wait(lambda sids=sids: all(c.streams[s].reset for s in sids))
            if by == "server":
                assert {r.reset for r in c.streams.values()} == {FLOW_CONTROL_ERROR}
            (tmp_path / "release").touch()
            for b in blockers:
                for sid in b.streams:
                    assert b.response(sid, 10).body == b"waited"
            # The connection is whole: a request after all that is answered.
            assert c.get("/work").body == b"worked"
    finally:
        for b in blockers:
            b.close()
    assert calls(port)[0] == 1


def test_made_you_reset(server):
    # Streams the server resets itself (a WINDOW_UPDATE that overflows the stream's
    # window: FLOW_CONTROL_ERROR), as fast as possible.
    running, port = server
    result = under_attack(running, port, "made-you-reset", 2.0, path="/work?ms=200")
    # The h2 crate ends a connection that made it reset 1,024 streams.
    assert calmed(result) == {"too_many_internal_resets"}, result
    assert result["streams"] >= 5000, result
    capped(port, result)


# --- frames that carry no request ------------------------------------------------------------


def calmed(result):
    """Checks that the server ended each of the attacker's connections, with GOAWAY
    ENHANCE_YOUR_CALM; returns the GOAWAYs' debug data (the h2 crate says which of its
    limits it was; stogie's meter says nothing)."""
    assert result["ended"] >= result["connections"] - 1, result
    codes = {key.split()[0] for key in result["goaways"]}
    assert codes == {str(ENHANCE_YOUR_CALM)}, result
    assert sum(result["goaways"].values()) >= result["connections"] / 2, result
    return {key.partition(" ")[2] for key in result["goaways"]}


@pytest.mark.parametrize("kind", ["ping", "settings", "priority", "rst"])
def test_floods_of_frames_of_no_request_end_in_goaway_enhance_your_calm(server, kind):
    running, port = server
    result = under_attack(running, port, kind, 1.5, batch=500)
    # stogie's meter (the h2 crate answers 100,000 PINGs or SETTINGS, and takes PRIORITY
    # and RST_STREAM on closed streams without end).
    assert calmed(result) == {""}, result
    assert wait_for(lambda: "too many frames that carry no request" in running.stderr)
    # Its budget is 1,000 such frames a connection: the server sends little back (a PING
    # or SETTINGS is answered with 17 or 9 bytes), less than the attacker's 500 a write
    # can push past the budget before it is seen.
    assert result["received"] / result["connections"] < 200_000, result


def test_a_flood_of_empty_data_frames_ends_in_goaway_enhance_your_calm(server):
    running, port = server
    result = under_attack(running, port, "empty-data", 1.5, batch=500)
    # The h2 crate's own limit comes before stogie's meter.
    assert calmed(result) <= {"", "too_many_data_frames"}, result


@pytest.mark.parametrize(
    "kind,limit",
    [
        ("continuation", "too_many_continuations"),
        ("empty-continuation", "too_many_continuations"),
        ("hpack-bomb", "header_list_way_too_large"),
    ],
)
def test_continuation_floods_and_hpack_bombs_end_in_goaway(server, kind, limit):
    # The h2 crate's limits, kept: what its GOAWAY says.
    running, port = server
    result = under_attack(running, port, kind, 1.5, batch=100)
    assert calmed(result) == {limit}, result
    assert calls(port)[0] == 0


# --- a client that never opens its window ----------------------------------------------------


def test_a_zero_window_client_holds_its_share_of_threads_for_timeout_at_most(server, tmp_path):
    running, port = server
    # 2 streams more than it may have: the crate refuses them.
    opts = {"path": "/big?n=100000000", "streams": STREAMS + 2}
    start = time.time()
    result = under_attack(running, port, "zero-window", 5.0, **opts)
    started = [float(t) for t in (tmp_path / "started.txt").read_text().split()]
    closed = [float(t) for t in (tmp_path / "closed.txt").read_text().split()]
    # Its share, and only for --timeout (2 s): then its responses are given up, the app's
    # iterables closed and the threads free.
    assert len(started) == len(closed) == STREAMS, (started, closed)
    for t in closed:
        assert t - start <= 2 + 1.5, closed
    assert result["goaways"] == {"0": 1}, result  # and then the idle connection's GOAWAY
