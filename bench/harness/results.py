"""What a measurement gives: a load run (Run), an idle test (Idle), and all of a run's."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Run:
    rps: float = 0.0
    p50: float = 0.0  # ms
    p99: float = 0.0
    lat_mean: float = float("nan")  # ms (h2load gives a mean and a maximum, no percentiles)
    lat_max: float = float("nan")
    rss: int = 0  # peak bytes
    cpu_server: float = float("nan")  # % of one CPU over the run, the server's process tree
    cpu_wrk: float = float("nan")  # % of one CPU over the run, wrk or h2load
    cpu_us: float = float("nan")  # the server tree's CPU time per response, microseconds
    switches: float = float("nan")  # the server tree's context switches per response
    requests: int = 0
    errors: str = ""
    variant: str = ""
    fail: str | None = None  # why there is no number


@dataclass
class Idle:
    wanted: int = 0
    opened: int = 0
    still_open: int = 0
    open_errors: str = ""
    open_seconds: float = 0.0
    rss_before: int = 0
    rss_after: int = 0
    probe_p50: float = float("nan")  # ms
    probe_max: float = float("nan")
    probe_failed: int = 0
    variant: str = ""
    fail: str | None = None


@dataclass
class Results:
    runs: dict = field(default_factory=dict)  # (server, workload) -> Run | Idle
    tried: dict = field(default_factory=dict)  # (server, workload) -> [Run | Idle] per variant
