"""Alternating rounds (issue 19): every selected configuration runs every workload once per
round, for N rounds, the order reversed each round (A B, B A, A B, ...) so that whatever drifts
on the machine weighs on both alike; the report gives the median of each metric and its spread
(min-max over the rounds), and each configuration against the first one (A).

The metric that matters most is the server's CPU time per response (its whole process tree's
utime + stime over the responses): req/s on a 2-CPU machine moves with whatever else runs."""

from __future__ import annotations

import statistics

from harness.base import fmt_ms, fmt_rps, say
from harness.measure import bench_one, describe
from harness.report import md_table
from harness.results import Idle, Run
from harness.targets import per_connection

# A change "within 3%" of the build before it (issue 18 part A; issue 19).
WITHIN = 0.03


def plan(servers, workloads, broken, ctx):
    """{workload key: [(server, variant)]} and {(server key, workload key): why not run}."""
    entries, skipped = {}, {}
    for w in workloads:
        entries[w.key] = []
        for s in servers:
            if s.key in broken:
                skipped[(s.key, w.key)] = broken[s.key]
                continue
            variants = s.variants(w, ctx)
            if isinstance(variants, str):
                skipped[(s.key, w.key)] = variants
                continue
            entries[w.key] += [(s, v) for v in variants]
    return entries, skipped


def run_rounds(servers, workloads, broken, ctx, opts):
    """{(server key, variant label, workload key): [Run | Idle, one per round]}, and what
    was not run."""
    entries, skipped = plan(servers, workloads, broken, ctx)
    runs: dict = {}
    total = opts.rounds * sum(len(e) for e in entries.values())
    i = 0
    for rnd in range(opts.rounds):
        for w in workloads:
            order = entries[w.key] if rnd % 2 == 0 else entries[w.key][::-1]
            for s, v in order:
                i += 1
                say(
                    f"[{i}/{total}] round {rnd + 1}/{opts.rounds}, {w.title}: {s.title} ({v.label})"
                )
                result = bench_one(s, v, w, opts)
                say(f"    {describe(result)}")
                runs.setdefault((s.key, v.label, w.key), []).append(result)
    return entries, skipped, runs


def _median_cell(values, fmt):
    if not values:
        return "?"
    mid = statistics.median(values)
    if len(values) == 1:
        return fmt(mid)
    return f"{fmt(mid)} ({fmt(min(values))}-{fmt(max(values))})"


def _us(x):
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _sw(x):
    return f"{x:.2f}"


def _pct(x):
    return f"{x:.0f}"


def _kb(x):
    return f"{x / 1024:.2f}"


def _change(value, base):
    if value is None or base is None or not base:
        return ""
    return f"{(value / base - 1) * 100:+.1f}%"


def _good(results):
    return [r for r in results if not r.fail]


def _fails(results):
    fails = [r.fail for r in results if r.fail]
    return f"; failed: {', '.join(sorted(set(fails)))}" if fails else ""


def load_table(w, entries, runs):
    header = [
        "server (configuration)",
        "req/s",
        "CPU per response (us)",
        "switches per response",
        "latency mean (ms)" if w.h2 else "p99 (ms)",
        "server CPU %",
        "rounds",
        "req/s vs A",
        "CPU per response vs A",
    ]
    rows, base, summary = [], None, []
    for s, v in entries:
        results = runs.get((s.key, v.label, w.key), [])
        good = [r for r in _good(results) if isinstance(r, Run)]
        name = f"{s.title} ({v.label})"
        if not good:
            why = results[0].fail if results else "not run"
            rows.append([name, f"n/a ({why})", "", "", "", "", f"0/{len(results)}", "", ""])
            continue
        rps = [r.rps for r in good]
        cpu = [r.cpu_us for r in good if r.cpu_us == r.cpu_us]
        switches = [r.switches for r in good if r.switches == r.switches]
        lat = [r.lat_mean if w.h2 else r.p99 for r in good]
        lat = [x for x in lat if x == x]
        med = (statistics.median(rps), statistics.median(cpu) if cpu else None)
        if base is None:
            base, base_name, base_family = med, s.title, s.family
            vs = ("A", "A")
        else:
            vs = (_change(med[0], base[0]), _change(med[1], base[1]))
            # Two builds of stogie: the verdict an engine change is judged by.
            if s.family == base_family == "ab" and med[1] is not None and base[1]:
                delta = med[1] / base[1] - 1
                if abs(delta) <= WITHIN:
                    verdict = f"within {WITHIN:.0%}"
                else:
                    verdict = f"**more than {WITHIN:.0%} {'above' if delta > 0 else 'below'}**"
                summary.append(
                    f"{s.title} ({v.label}) against {base_name}: CPU per response"
                    f" {delta * 100:+.1f}% ({verdict}), req/s {vs[0]}"
                )
        rows.append(
            [
                name,
                _median_cell(rps, fmt_rps),
                _median_cell(cpu, _us),
                _median_cell(switches, _sw),
                _median_cell(lat, fmt_ms),
                _median_cell([r.cpu_server for r in good], _pct),
                f"{len(good)}/{len(results)}{_fails(results)}",
                *vs,
            ]
        )
    text = f"#### {w.title}\n\n" + md_table(header, rows)
    if summary:
        text += "\n\n" + "\n".join(f"- {line}" for line in summary)
    return text


def idle_table(w, entries, runs):
    header = ["server (configuration)", "open after quiet (least)", "added per connection (KB)"]
    header += ["rounds"]
    rows = []
    for s, v in entries:
        results = runs.get((s.key, v.label, w.key), [])
        good = [r for r in _good(results) if isinstance(r, Idle)]
        name = f"{s.title} ({v.label})"
        if not good:
            why = results[0].fail if results else "not run"
            rows.append([name, f"n/a ({why})", "", f"0/{len(results)}"])
            continue
        rows.append(
            [
                name,
                f"{min(r.still_open for r in good)} / {good[0].wanted}",
                _median_cell([per_connection(r) for r in good], _kb),
                f"{len(good)}/{len(results)}{_fails(results)}",
            ]
        )
    return f"#### {w.title}\n\n" + md_table(header, rows)


def _medians(runs, key, label, wkey):
    good = [r for r in _good(runs.get((key, label, wkey), [])) if isinstance(r, Run)]
    cpu = [r.cpu_us for r in good if r.cpu_us == r.cpu_us]
    if not good or not cpu:
        return None
    return statistics.median(r.rps for r in good), statistics.median(cpu)


# Issue 19: stogie (one process) against bjoern in the same rounds: CPU per response at most
# bjoern's and req/s at least bjoern's at hello and POST 4 KiB echo; CPU per response at most
# 0.95x bjoern's at Flask JSON.
BJOERN_TARGETS = {"hello": (1.0, True), "post": (1.0, True), "flask": (0.95, False)}


def bjoern_target_rows(entries, runs):
    rows = []
    for wkey, (cpu_need, rps_too) in BJOERN_TARGETS.items():
        pairs = entries.get(wkey) or []
        ours = [(s, v) for s, v in pairs if s.key == "stogie"]
        theirs = [(s, v) for s, v in pairs if s.key == "bjoern"]
        if not ours or not theirs:
            continue
        a = _medians(runs, "stogie", ours[0][1].label, wkey)
        b = _medians(runs, "bjoern", theirs[0][1].label, wkey)
        if not a or not b:
            continue
        cpu = a[1] / b[1]
        rows.append(
            [
                f"{wkey}: CPU per response, stogie / bjoern",
                f"<= {cpu_need:.2f}x",
                f"{cpu:.2f}x ({_us(a[1])} / {_us(b[1])} us)",
                "yes" if cpu <= cpu_need else "**no**",
            ]
        )
        if rps_too:
            rps = a[0] / b[0]
            rows.append(
                [
                    f"{wkey}: req/s, stogie / bjoern",
                    ">= 1.00x",
                    f"{rps:.2f}x ({fmt_rps(a[0])} / {fmt_rps(b[0])})",
                    "yes" if rps >= 1.0 else "**no**",
                ]
            )
    return rows


def rounds_report(workloads, entries, skipped, runs, servers, opts):
    parts = [
        f"### Alternating rounds: {opts.rounds} rounds of {opts.duration} s, the order reversed"
        " every round\n\n"
        "Each cell: the median over the rounds, then (min-max). CPU per response is the server's"
        " whole process tree, utime + stime, over the responses counted; against A: the first"
        " row's medians."
    ]
    for w in workloads:
        if not entries.get(w.key):
            continue
        table = idle_table if w.idle else load_table
        parts.append(table(w, entries[w.key], runs))
    targets = bjoern_target_rows(entries, runs)
    if targets:
        header = ["target (issue 19), medians of the rounds", "needs", "measured", "met"]
        parts.append(md_table(header, targets))
    notes = []
    titles = {s.key: s.title for s in servers}
    for (skey, wkey), why in skipped.items():
        if why != "-":
            w = next(w for w in workloads if w.key == wkey)
            notes.append(f"- {titles.get(skey, skey)}, {w.title}: n/a ({why})")
    if notes:
        parts.append("Not run:\n\n" + "\n".join(notes))
    return "\n\n".join(parts)
