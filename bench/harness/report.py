"""The report: the Markdown tables, the targets, and the facts about the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.base import BENCH, BIN, PY, ROOT, dist_version, fmt_ms, fmt_rps, mb
from harness.h2load import h2load_version
from harness.install import uses_checkout
from harness.results import Idle, Run
from harness.targets import (
    best_peer,
    h2_ratio,
    h2_target_rows,
    per_connection,
    target_rows,
)

# --------------------------------------------------------------------------------------------
# Reporting


def md_table(header, rows):
    cols = list(zip(header, *rows, strict=True))
    widths = [max(len(str(c)) for c in col) for col in cols]
    out = ["| " + " | ".join(str(h).ljust(wd) for h, wd in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for row in rows:
        cells = (str(c).ljust(wd) for c, wd in zip(row, widths, strict=True))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def cell(r, fmt):
    if r is None:
        return ""
    if r.fail:
        return "-" if r.fail == "-" else f"n/a ({r.fail})"
    return fmt(r)


def shown(results, servers, workloads):
    """The servers with something to say about these workloads (not "-" throughout)."""
    out = []
    for s in servers:
        rs = [results.runs.get((s.key, w.key)) for w in workloads]
        if any(r is not None and r.fail != "-" for r in rs):
            out.append(s)
    return out


def load_tables(results, servers, workloads, h2):
    """The five tables of load runs: req/s (with the ratios), latency, RSS, CPU, CPU per
    response. HTTP/2 workloads have tables of their own (h2load's numbers differ in kind)."""
    parts = []
    stogies = [s for s in servers if s.family == "stogie"]
    client = "h2load" if h2 else "wrk"
    pre = "HTTP/2: " if h2 else ""
    header = ["workload"] + [s.title for s in servers]
    if any(s.peer for s in servers):
        header += ["best peer"] + [f"{s.title} / best peer" for s in stogies]
    with_h1 = h2 and any(s.key == "stogie-h1" for s in servers)
    if with_h1:
        header.append("stogie HTTP/2 / HTTP/1.1")
    rows = []
    for w in workloads:
        row = [w.title] + [cell(results.runs.get((s.key, w.key)), rps_cell) for s in servers]
        if any(s.peer for s in servers):
            bp = best_peer(results, servers, w)
            row.append(f"{bp[0].title} {fmt_rps(bp[1].rps)}" if bp else "")
            for s in stogies:
                r = results.runs.get((s.key, w.key))
                ok = bp and isinstance(r, Run) and not r.fail and bp[1].rps > 0
                row.append(f"{r.rps / bp[1].rps:.2f}x" if ok else "")
        if with_h1:
            ratio = h2_ratio(results, w)
            row.append(f"{ratio:.0%}" if ratio is not None else "")
        rows.append(row)
    title = "### Requests per second"
    if h2:
        conns = sorted({(w.connections, w.streams) for w in workloads})
        how = ", ".join(f"-c {c} -m {m}" for c, m in conns)
        title = (
            f"### HTTP/2: requests per second (h2load -t1 {how}; stogie, HTTP/1.1: the same"
            " server without HTTP/2, h2load --h1 with the same connections, one request in"
            " flight on each)"
        )
    parts.append(title + "\n\n" + md_table(header, rows))

    header = ["workload"] + [s.title for s in servers]

    def table(fmt):
        return md_table(
            header,
            [
                [w.title] + [cell(results.runs.get((s.key, w.key)), fmt) for s in servers]
                for w in workloads
            ],
        )

    if h2:
        parts.append(
            "### HTTP/2: latency mean / max (ms; h2load gives no percentiles)\n\n"
            + table(lat_mean_cell)
        )
    else:
        parts.append("### Latency p50 / p99 (ms)\n\n" + table(lat_cell))
    parts.append(f"### {pre}Peak RSS of the server's process tree (MB)\n\n" + table(rss_cell))
    cpus = os.cpu_count()
    parts.append(
        f"### {pre}CPU used during the run, % of one CPU: server / {client} (the machine has"
        f" {cpus})\n\n" + table(cpu_cell)
    )
    parts.append(
        f"### {pre}Server CPU time per response (us; its whole process tree)\n\n"
        + table(cpu_us_cell)
    )
    return parts


def idle_table(results, servers, idle_w):
    header = [
        "server",
        "answered",
        "open after quiet",
        "RSS before (MB)",
        "RSS after (MB)",
        "added per connection",
        "new client p50 / max (ms)",
        "open errors",
    ]
    rows = []
    for s in servers:
        r = results.runs.get((s.key, idle_w.key))
        if r is None or r.fail == "-":
            continue
        if r.fail:
            rows.append([s.title, cell(r, str), "", "", "", "", "", ""])
            continue
        probe = f"{fmt_ms(r.probe_p50)} / {fmt_ms(r.probe_max)}"
        if r.probe_failed:
            probe += f" ({r.probe_failed} failed)"
        rows.append(
            [
                s.title,
                f"{r.opened} / {r.wanted}",
                f"{r.still_open} / {r.wanted}",
                mb(r.rss_before),
                mb(r.rss_after),
                f"{per_connection(r) / 1024:.2f} KB",
                probe,
                r.open_errors or "-",
            ]
        )
    how = "one request each, then quiet"
    if idle_w.h2:
        how = "one request each, then quiet; open: a PING still answered"
    return (
        f"### {idle_w.title} ({results_idle_n(results, servers, idle_w)} connections, {how})"
        "\n\n" + md_table(header, rows)
    )


def report(results, servers, workloads):
    parts = []
    for h2 in (False, True):
        load = [w for w in workloads if not w.idle and w.h2 == h2]
        if load:
            parts += load_tables(results, shown(results, servers, load), load, h2)
    for idle_w in [w for w in workloads if w.idle]:
        parts.append(idle_table(results, servers, idle_w))

    plain = results.runs.get(("stogie", "hello"))
    logged = results.runs.get(("stogie-log", "hello"))
    if isinstance(plain, Run) and isinstance(logged, Run) and not (plain.fail or logged.fail):
        cost = 1 - logged.rps / plain.rps if plain.rps else 0
        parts.append(
            "### The access log's cost at hello (issue 12: at most 10%)\n\n"
            f"stogie {fmt_rps(plain.rps)} req/s, with `--access-log FILE` {fmt_rps(logged.rps)}"
            f": {cost:.1%} fewer ({'met' if cost <= 0.10 else 'not met'}). One round each in this"
            " run: compare alternating rounds before trusting a few percent."
        )

    targets = target_rows(results, servers, workloads)
    if targets:
        parts.append(
            "### Targets (issue 4; stogie = its best mode in this run)\n\n"
            + md_table(["target", "required", "measured", "met"], targets)
        )
    targets = h2_target_rows(results, servers, workloads)
    if targets:
        parts.append(
            "### HTTP/2 targets (issue 18; stogie = its best mode in this run)\n\n"
            + md_table(["target", "required", "measured", "met"], targets)
        )

    configs, errors = [], []
    for s in servers:
        used, labels, alternatives = [], set(), False
        for w in workloads:
            tried = results.tried.get((s.key, w.key), [])
            r = results.runs.get((s.key, w.key))
            if not tried or r is None or r.fail:
                continue
            others = [f"{t.variant}: {short(t)}" for t in tried if t is not r]
            alternatives = alternatives or bool(others)
            labels.add(r.variant)
            used.append(
                f"{w.title}: {r.variant}" + (f" (also {'; '.join(others)})" if others else "")
            )
            if isinstance(r, Run) and r.errors:
                errors.append(f"- {s.title}, {w.title}: {r.errors}")
        if used and len(labels) == 1 and not alternatives:
            configs.append(f"- {s.title}: {labels.pop()}")
        elif used:
            configs.append(f"- {s.title}: " + "; ".join(used))
    if configs:
        parts.append("### Configurations (the best of those tried)\n\n" + "\n".join(configs))
    if errors:
        by = " and h2load" if any(w.h2 and not w.idle for w in workloads) else ""
        parts.append(
            f"### Errors reported by wrk{by}\n\n"
            "A server that closes the connection after each response (gunicorn sync, pyruvate)"
            " shows up as read errors.\n\n" + "\n".join(errors)
        )
    return "\n\n".join(parts)


def commands(servers, workloads, ctx):
    """Every command line run, for the results file."""
    lines = []
    for s in servers:
        seen = []
        for w in workloads:
            variants = s.variants(w, ctx)
            if isinstance(variants, str):
                continue
            for v in variants:
                cmd = " ".join(v.argv).replace(str(BIN) + "/", "").replace(PY, "python")
                cmd = cmd.replace(str(BENCH) + "/", "").replace(str(ROOT) + "/", "")
                if cmd not in seen:
                    seen.append(cmd)
        lines += [f"- {s.title}: `{c}`" for c in seen]
    return (
        "### Commands ({port} fresh for each run, {app} the workload's callable)\n\n"
        + "\n".join(lines)
    )


def results_idle_n(results, servers, idle_w):
    for s in servers:
        r = results.runs.get((s.key, idle_w.key))
        if isinstance(r, Idle) and r.wanted:
            return f"{r.wanted:,}"
    return "?"


def short(r):
    if r.fail:
        return f"n/a ({r.fail})"
    if isinstance(r, Idle):
        return f"{r.still_open} open"
    return fmt_rps(r.rps)


def rps_cell(r):
    return fmt_rps(r.rps) + (" !" if r.errors else "")


def lat_cell(r):
    return f"{fmt_ms(r.p50)} / {fmt_ms(r.p99)}"


def lat_mean_cell(r):
    return f"{fmt_ms(r.lat_mean)} / {fmt_ms(r.lat_max)}"


def rss_cell(r):
    return mb(r.rss)


def cpu_cell(r):
    return f"{r.cpu_server:.0f} / {r.cpu_wrk:.0f}"


def cpu_us_cell(r):
    return f"{r.cpu_us:.0f}" if r.cpu_us == r.cpu_us else "?"


def machine_info():
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": os.uname().release,
        "memory": mem_total(),
    }


def mem_total():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "?"


def versions(servers, workloads, rev):
    out = {}
    for s in servers:
        for p in s.packages:
            out[p] = dist_version(p) or "not installed"
    if any(uses_checkout(s) for s in servers):
        out["stogie"] = f"{dist_version('stogie') or 'not installed'} ({rev})"
    if any(w.app == "flask_app" for w in workloads):
        out["flask"] = dist_version("flask") or "not installed"
    if any(w.h2 for w in workloads):
        out["h2"] = dist_version("h2") or "not installed"
        if any(not w.idle for w in workloads if w.h2):
            out["h2load"] = h2load_version() or "not installed"
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        first = (wrk.stdout + wrk.stderr).split("\n")[0].split(" [")[0].strip()
        out["wrk"] = first.removeprefix("wrk ")
    except (OSError, subprocess.TimeoutExpired):
        pass
    out["python"] = sys.version.split()[0]
    return out


def git_rev():
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + (" with uncommitted changes" if dirty else "")
    except OSError:
        return "?"


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
