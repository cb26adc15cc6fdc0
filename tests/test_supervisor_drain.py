"""What a user sees of old workers: after a reload, a recycling or SIGTTOU, with and without
``--metrics``, every old worker is gone by the drain deadline, only the new code answers, and
SIGTERM then stops everything within ``--shutdown-timeout``; ``--max-requests N`` means about
N; a worker that does not drain in time is killed by its supervisor, which says so."""

import http.client
import os
import re
import signal
import time

import pytest
from test_supervisor import APP, Load, pids_answering, serve, serving, workers_of
from test_workers import alive, children_of

from conftest import connect_tcp, free_port, wait_for, wait_until_serving

# The drain deadline the supervisor enforces: --shutdown-timeout plus its margin.
SHUTDOWN_TIMEOUT = 1.0
STOP_MARGIN = 3.0
DRAIN_DEADLINE = SHUTDOWN_TIMEOUT + STOP_MARGIN


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "rapp.py").write_text(APP)
    (tmp_path / "version.txt").write_text("one")
    return tmp_path


def answers(port, count=20):
    """What ``count`` requests on fresh connections got: a set of (pid, version)."""
    seen = set()
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            pid, version = conn.getresponse().read().decode().split()
            seen.add((int(pid), version))
        finally:
            conn.close()
    return seen


def gone_within(pids, seconds):
    """Wait for every process of ``pids`` to be gone; the time it took, or fail."""
    start = time.monotonic()
    assert wait_for(lambda: not any(alive(p) for p in pids), seconds + 1), [
        p for p in pids if alive(p)
    ]
    took = time.monotonic() - start
    assert took <= seconds, f"old workers took {took:.1f} s to go (deadline {seconds} s)"
    return took


def stop_within_shutdown_timeout(running):
    """SIGTERM: the supervisor and every worker gone within --shutdown-timeout (and the
    supervisor's margin), none left behind."""
    kids = children_of(running.pid)
    start = time.monotonic()
    running.proc.send_signal(signal.SIGTERM)
    running.proc.wait(DRAIN_DEADLINE + 2)
    took = time.monotonic() - start
    assert took <= DRAIN_DEADLINE, f"SIGTERM took {took:.1f} s"
    assert not any(alive(p) for p in kids), [p for p in kids if alive(p)]
    assert "killing them" not in running.stderr, running.stderr


def start(app_dir, port, metrics, *extra):
    args = ["--workers", "2", "--shutdown-timeout", str(SHUTDOWN_TIMEOUT)]
    if metrics:
        args += ["--metrics", f"127.0.0.1:{free_port()}"]
    return serve(app_dir, *args, *extra, "--bind", f"127.0.0.1:{port}")


METRICS = pytest.mark.parametrize("metrics", [False, True], ids=["plain", "metrics"])


@METRICS
def test_each_reload_leaves_no_old_worker(app_dir, metrics):
    """Two reloads in a row (the second one's old workers were themselves started after the
    supervisor began serving /metrics): every old pid gone by the deadline, only the new
    code answering, and three workers never left behind."""
    port = free_port()
    with start(app_dir, port, metrics) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        serving(running)
        for reloads, version in enumerate(("two", "three"), 1):
            old = workers_of(running, 2)
            (app_dir / "version.txt").write_text(version)
            running.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda n=reloads: running.stderr.count("reloaded:") == n, 10), (
                running.stderr
            )
            gone_within(old, DRAIN_DEADLINE)
            new = workers_of(running, 2)
            assert not new & old
            seen = answers(port)
            assert {v for _, v in seen} == {version}, seen
            assert {p for p, _ in seen} <= new
        assert "still running" not in running.stderr, running.stderr
        stop_within_shutdown_timeout(running)


@METRICS
def test_recycled_workers_leave_no_old_worker(app_dir, metrics):
    """--max-requests: the workers replaced (their replacements import the changed app) are
    gone by the deadline, and then only the new code answers."""
    port = free_port()
    with start(app_dir, port, metrics, "--max-requests", "30") as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        serving(running)
        first = workers_of(running, 2)
        (app_dir / "version.txt").write_text("two")
        with Load(lambda: connect_tcp(port), clients=2, keep_alive=False) as load:
            assert wait_for(lambda: not (first & set(children_of(running.pid))), 20), running.stderr
        assert load.errors == [], load.errors[:5]
        gone_within(first, DRAIN_DEADLINE)
        seen = answers(port, 10)
        assert {v for _, v in seen} == {"two"}, seen
        assert not {p for p, _ in seen} & first
        assert "still running" not in running.stderr, running.stderr
        stop_within_shutdown_timeout(running)


@METRICS
def test_a_removed_worker_leaves(app_dir, metrics):
    """SIGTTIN then SIGTTOU: the worker added (forked while /metrics was served) is the one
    removed, and it is gone by the deadline; the others go on answering."""
    port = free_port()
    with start(app_dir, port, metrics) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        serving(running)
        first = workers_of(running, 2)
        running.proc.send_signal(signal.SIGTTIN)
        added = workers_of(running, 3) - first
        assert wait_for(lambda: added <= pids_answering(lambda: connect_tcp(port), 3, 1), 8)
        running.proc.send_signal(signal.SIGTTOU)
        gone_within(added, 5.0 + DRAIN_DEADLINE)  # + its backlog's settling (at most 5 s)
        assert workers_of(running, 2) == first
        assert {p for p, _ in answers(port)} <= first
        assert "still running" not in running.stderr, running.stderr
        stop_within_shutdown_timeout(running)


def test_a_worker_that_does_not_drain_is_killed_by_its_supervisor(app_dir):
    """Whatever holds an old worker up (here: it is stopped), its supervisor kills it once
    the drain deadline passed, with a warning that names it."""
    port = free_port()
    with start(app_dir, port, False) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        serving(running)
        old = workers_of(running, 2)
        stuck = min(old)
        os.kill(stuck, signal.SIGSTOP)
        (app_dir / "version.txt").write_text("two")
        running.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reloaded:" in running.stderr, 10), running.stderr
        gone_within({stuck}, DRAIN_DEADLINE + 1)
        assert re.search(
            rf"worker {stuck} \(slot \d, generation 0\) still running .* told to drain: killing it",
            running.stderr,
        ), running.stderr
        assert {v for _, v in answers(port)} == {"two"}
        stop_within_shutdown_timeout(running)


def test_max_requests_means_about_n(app_dir):
    """--workers 2 --max-requests 50 --max-requests-jitter 5 under four clients sending one
    request per connection: no worker answers more than three times N + jitter, and the count
    each replaced worker logs when it exits is what its clients got from it."""
    port = free_port()
    args = ["--max-requests", "50", "--max-requests-jitter", "5"]
    with start(app_dir, port, False, *args) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        serving(running)
        with Load(lambda: connect_tcp(port), clients=4, keep_alive=False) as load:
            time.sleep(2)
        assert load.errors == [], load.errors[:5]
        counts = {}
        for body, n in load.seen.items():
            pid = int(body.split()[0])
            counts[pid] = counts.get(pid, 0) + n
        assert len(counts) >= 4, counts  # workers were replaced
        assert max(counts.values()) <= 3 * 55, counts
        # Each exited worker's own total, from the supervisor's log, is what clients saw.
        assert wait_for(lambda: "after answering" in running.stderr, 5), running.stderr
        totals = {
            int(pid): int(n)
            for pid, n in re.findall(r"worker (\d+) exited .*after answering (\d+)", running.stderr)
        }
        assert totals, running.stderr
        for pid, total in totals.items():
            assert total == counts.get(pid, 0), (pid, total, counts)
        assert re.search(r"reached its limit of 5\d requests: replacing it", running.stderr)
        stop_within_shutdown_timeout(running)


def test_workers_started_after_metrics_exit_when_the_supervisor_dies(app_dir):
    """The workers of a reload (forked while /metrics was served, as in the bug report) end
    with a supervisor that was killed: none is left serving old code, orphaned."""
    port = free_port()
    with start(app_dir, port, True) as running:
        wait_until_serving(running, lambda: connect_tcp(port))
        serving(running)
        old = workers_of(running, 2)
        running.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reloaded:" in running.stderr, 10), running.stderr
        gone_within(old, DRAIN_DEADLINE)
        new = workers_of(running, 2)
        running.proc.kill()
        running.proc.wait(5)
        gone_within(new, DRAIN_DEADLINE)
