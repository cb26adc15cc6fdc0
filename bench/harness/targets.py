"""The targets the issues set, checked against a run's results."""

from __future__ import annotations

from harness.base import fmt_ms, fmt_rps, mb
from harness.results import Idle, Run


def best_peer(results, servers, w):
    best = None
    for s in servers:
        r = results.runs.get((s.key, w.key))
        if s.peer and isinstance(r, Run) and not r.fail and (best is None or r.rps > best[1].rps):
            best = (s, r)
    return best


def best_stogie(results, servers, w):
    best = None
    for s in servers:
        r = results.runs.get((s.key, w.key))
        if s.family == "stogie" and isinstance(r, Run) and not r.fail:
            if best is None or r.rps > best[1].rps:
                best = (s, r)
    return best


def ratio_row(results, servers, w, need):
    """The target row "stogie / best peer >= need" of workload ``w``, or None while either
    side has no number (or ``w`` was not run)."""
    bs = best_stogie(results, servers, w) if w else None
    bp = best_peer(results, servers, w) if w else None
    if not (bs and bp and bp[1].rps):
        return None
    ratio = bs[1].rps / bp[1].rps
    return [
        f"{w.title}: stogie / best peer ({bp[0].title})",
        f">= {need}x",
        f"{ratio:.2f}x ({bs[0].title}, {fmt_rps(bs[1].rps)})",
        yes(ratio >= need),
    ]


def h2_ratio(results, w):
    """stogie's HTTP/2 over its HTTP/1.1 on the same transport and connections."""
    h2 = results.runs.get(("stogie", w.key))
    h1 = results.runs.get(("stogie-h1", w.key))
    if isinstance(h2, Run) and isinstance(h1, Run) and not (h2.fail or h1.fail) and h1.rps:
        return h2.rps / h1.rps
    return None


def per_connection(r):
    """RSS added per connection opened, bytes."""
    return (r.rss_after - r.rss_before) / max(r.opened, 1)


def target_rows(results, servers, workloads):
    rows = []
    keys = {w.key: w for w in workloads}
    ratios = {"hello": 1.1, "hello-256": 1.1, "post": 1.1, "flask": 1.1, "big": 1.2, "stream": 2.0}
    for key, need in ratios.items():
        row = ratio_row(results, servers, keys.get(key), need)
        if row:
            rows.append(row)
    w = keys.get("hello")
    if w:
        bs = best_stogie(results, servers, w)
        ceil = results.runs.get(("ceiling", "hello"))
        if bs and isinstance(ceil, Run) and not ceil.fail and ceil.rps:
            share = bs[1].rps / ceil.rps
            rows.append(["hello: stogie / ceiling", ">= 80%", f"{share:.0%}", yes(share >= 0.8)])
        bp = best_peer(results, servers, w)
        if bs and bp:
            rows.append(
                [
                    f"hello p99: stogie vs best peer ({bp[0].title})",
                    f"<= {fmt_ms(bp[1].p99)} ms",
                    f"{fmt_ms(bs[1].p99)} ms",
                    yes(bs[1].p99 <= bp[1].p99),
                ]
            )
    # Issue 11: TLS keep-alive >= 1.3x the best peer and within 20% of stogie's plain hello;
    # handshakes at least as fast as the best peer's.
    for key, need in (("tls", 1.3), ("tls-handshake", 1.0)):
        row = ratio_row(results, servers, keys.get(key), need)
        if row:
            rows.append(row)
    if "tls" in keys and "hello" in keys:
        bt = best_stogie(results, servers, keys["tls"])
        bh = best_stogie(results, servers, keys["hello"])
        if bt and bh and bh[1].rps:
            share = bt[1].rps / bh[1].rps
            label = "hello over TLS: stogie / its plain hello"
            rows.append([label, ">= 80%", f"{share:.0%}", yes(share >= 0.8)])
    w = keys.get("sleep")
    if w:
        bs = best_stogie(results, servers, w)
        gr = results.runs.get(("granian", "sleep"))
        if bs and isinstance(gr, Run) and not gr.fail and gr.rps:
            ratio = bs[1].rps / gr.rps
            rows.append(
                [
                    "sleep 10 ms, 256 conns: stogie / Granian",
                    ">= 0.95x",
                    f"{ratio:.2f}x ({fmt_rps(bs[1].rps)})",
                    yes(ratio >= 0.95),
                ]
            )
    if "idle" in keys:
        for s in servers:
            r = results.runs.get((s.key, "idle"))
            if s.family != "stogie" or not isinstance(r, Idle) or r.fail:
                continue
            added = r.rss_after - r.rss_before
            rows.append(
                [
                    f"idle ({s.title}): all stay open",
                    f"{r.wanted}",
                    f"{r.still_open}",
                    yes(r.still_open == r.wanted),
                ]
            )
            rows.append(
                [f"idle ({s.title}): RSS added", "<= 10 MB", f"{mb(added)} MB", yes(added <= 10e6)]
            )
            ok = r.probe_failed == 0 and r.probe_max <= 5
            rows.append(
                [f"idle ({s.title}): new client", "<= 5 ms", f"{fmt_ms(r.probe_max)} ms", yes(ok)]
            )
    return rows


def yes(ok):
    return "yes" if ok else "**no**"


def h2_target_rows(results, servers, workloads):
    """Issue 18: HTTP/2 hello at least 1.3x the best peer and 90% of stogie's own HTTP/1.1
    over the same transport and connections; Flask JSON at least 1.2x; an idle HTTP/2
    connection at most 25 KB, 1,000 of them all still open. A row for each target whenever
    stogie took part, "n/a" while it has no HTTP/2."""
    rows = []
    keys = {w.key: w for w in workloads}
    if not any(s.family == "stogie" for s in servers):
        return rows

    def why_not(w, family="stogie"):
        for s in servers:
            r = results.runs.get((s.key, w.key))
            if s.family == family and r is not None and r.fail and r.fail != "-":
                return f"n/a ({r.fail})"
        return "n/a"

    needs = (("h2c-hello", 1.3), ("h2tls-hello", 1.3), ("h2c-flask", 1.2), ("h2tls-flask", 1.2))
    for key, need in needs:
        w = keys.get(key)
        if w:
            row = ratio_row(results, servers, w, need)
            if not row:
                bs = best_stogie(results, servers, w)
                row = [f"{w.title}: stogie / best peer", f">= {need}x"]
                row += [why_not(w) if not bs else "no peer", "**no**"]
            rows.append(row)
            if key.endswith("-hello"):
                label = f"{w.title}: stogie / its HTTP/1.1, {w.connections} connections"
                ratio = h2_ratio(results, w)
                if ratio is not None:
                    rows.append([label, ">= 90%", f"{ratio:.0%}", yes(ratio >= 0.9)])
                else:
                    rows.append([label, ">= 90%", why_not(w), "**no**"])
    for w in [w for w in workloads if w.idle and w.h2]:
        for s in servers:
            r = results.runs.get((s.key, w.key))
            if s.family != "stogie" or r is None or r.fail == "-":
                continue
            if r.fail:
                for what, need in (
                    ("all stay open", f"{r.wanted}"),
                    ("added per connection", "<= 25 KB"),
                ):
                    rows.append(
                        [f"{w.title} ({s.title}): {what}", need, f"n/a ({r.fail})", "**no**"]
                    )
                continue
            per = per_connection(r)
            rows.append(
                [
                    f"{w.title} ({s.title}): all stay open",
                    f"{r.wanted}",
                    f"{r.still_open}",
                    yes(r.still_open == r.wanted),
                ]
            )
            rows.append(
                [
                    f"{w.title} ({s.title}): added per connection",
                    "<= 25 KB",
                    f"{per / 1024:.1f} KB",
                    yes(per <= 25 * 1024),
                ]
            )
    return rows
