"""The command line: options, and the run from setup to the results file."""

from __future__ import annotations

import argparse
import atexit
import datetime
import os
import resource
import signal
import sys
from pathlib import Path

from harness.base import BENCH, LOGS, say
from harness.builds import CHECKOUT, prepare
from harness.install import setup, target_dir
from harness.measure import run_all
from harness.ops import ops_all, ops_report
from harness.procs import _on_signal, cleanup
from harness.report import commands, git_rev, loadavg, machine_info, report, versions
from harness.results import Results
from harness.rounds import rounds_report, run_rounds
from harness.servers import (
    AB_KEYS,
    QUICK_PEER,
    SERVER_KEYS,
    SERVERS,
    Context,
    ab_server,
    stogie_workers_support,
)
from harness.workloads import WORKLOAD_GROUPS, WORKLOAD_KEYS, WORKLOADS

AB_WORKLOADS = ["hello", "post"]  # what an engine change is judged on (issue 18, part A)
AB_ROUNDS = 5


def parse_args(argv=None):
    env_duration = os.environ.get("BENCH_DURATION")
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark stogie side by side with other WSGI servers (issue 4).",
        epilog=(
            f"servers: {', '.join(SERVER_KEYS + AB_KEYS)}; workloads: {', '.join(WORKLOAD_KEYS)}"
            f" (or {' and '.join(WORKLOAD_GROUPS)}, all of each protocol's)."
            " Environment: BENCH_DURATION (seconds per measured run, default 10)."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: stogie and {QUICK_PEER} (or --only), hello only, 3 s runs",
    )
    p.add_argument("--only", metavar="SERVER,...", help="run only these servers")
    p.add_argument("--workloads", metavar="WORKLOAD,...", help="run only these workloads")
    p.add_argument(
        "--duration",
        type=int,
        help="seconds per measured run (default: BENCH_DURATION or 10; 3 with --quick)",
    )
    p.add_argument("--warmup", type=int, help="seconds of warm-up before each run (default 2)")
    p.add_argument(
        "--idle-connections", type=int, default=10000, help="connections for the idle test"
    )
    p.add_argument(
        "--h2-idle-connections",
        type=int,
        default=1000,
        help="connections for the idle HTTP/2 tests (default 1000)",
    )
    p.add_argument(
        "--idle-quiet", type=float, default=3.0, help="seconds of quiet before measuring idle RSS"
    )
    p.add_argument(
        "--rounds",
        type=int,
        help="alternating rounds: run every selected server and workload N times, the order"
        f" reversed each round, and report medians and spread (default 1; {AB_ROUNDS} with"
        " --stogie-a/-b); writes bench/.logs/ROUNDS.md",
    )
    p.add_argument(
        "--stogie-a",
        metavar="BUILD",
        help="compare two builds of stogie in alternating rounds: the server stogie-a runs this"
        " build: a virtualenv's path, a wheel, a git revision (built into bench/.builds/), or"
        f" '{CHECKOUT}' (this checkout, the default for a side not given). Selects"
        f" stogie-a,stogie-b (or --only) and {','.join(AB_WORKLOADS)} (or --workloads)",
    )
    p.add_argument("--stogie-b", metavar="BUILD", help="the build stogie-b runs, as --stogie-a")
    p.add_argument(
        "--ops",
        action="store_true",
        help="only the operations runs: load through SIGHUP reloads and max-requests recycling",
    )
    p.add_argument("--no-install", action="store_true", help="do not install missing packages")
    p.add_argument(
        "--no-build", action="store_true", help="do not rebuild stogie or the ceiling binary"
    )
    p.add_argument(
        "--output",
        metavar="PATH",
        help="where to write the results (default: bench/RESULTS.md for a full run,"
        " bench/.logs/RESULTS-partial.md otherwise)",
    )
    opts = p.parse_args(argv)

    def pick(text, known, what, groups=None):
        groups = groups or {}
        names = []
        for n in (n.strip() for n in text.split(",")):
            names += groups.get(n, [n] if n else [])
        unknown = [n for n in names if n not in known]
        if unknown:
            known_names = ", ".join(known + list(groups))
            p.error(f"unknown {what}: {', '.join(unknown)} (known: {known_names})")
        return list(dict.fromkeys(names))

    opts.ab = opts.stogie_a is not None or opts.stogie_b is not None
    if opts.ab:
        opts.stogie_a = opts.stogie_a or CHECKOUT
        opts.stogie_b = opts.stogie_b or CHECKOUT
        if opts.stogie_a == opts.stogie_b:
            p.error("--stogie-a and --stogie-b name the same build")
    opts.server_keys = SERVER_KEYS
    opts.workload_keys = [k for k in WORKLOAD_KEYS]
    if opts.ab:
        opts.server_keys = AB_KEYS
        opts.workload_keys = AB_WORKLOADS
    if opts.quick:
        opts.server_keys = AB_KEYS if opts.ab else ["stogie", QUICK_PEER]
        opts.workload_keys = ["hello"]
    if opts.only:
        known = SERVER_KEYS + AB_KEYS if opts.ab else SERVER_KEYS
        opts.server_keys = pick(opts.only, known, "server")
    if opts.workloads:
        opts.workload_keys = pick(opts.workloads, WORKLOAD_KEYS, "workload", WORKLOAD_GROUPS)
    if opts.ops:
        opts.server_keys = ["stogie"]
        opts.workload_keys = []
    if opts.rounds is None:
        opts.rounds = AB_ROUNDS if opts.ab else 1
    if opts.rounds < 1:
        p.error("--rounds must be at least 1")
    if opts.rounds > 1 and opts.ops:
        p.error("--rounds does not apply to --ops")
    opts.partial = (
        opts.ops
        or opts.quick
        or opts.ab
        or opts.rounds > 1
        or opts.only is not None
        or opts.workloads is not None
        or opts.idle_connections != 10000
        or opts.h2_idle_connections != 1000
    )
    if opts.duration is None:
        if env_duration:
            try:
                opts.duration = max(1, round(float(env_duration)))
            except ValueError:
                p.error(f"BENCH_DURATION={env_duration!r} is not a number of seconds")
        else:
            opts.duration = 3 if opts.quick else 10
    if opts.warmup is None:
        opts.warmup = 1 if opts.quick else 2
    if opts.duration < 10 and not opts.quick:
        opts.partial = True
    return opts


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    elif hard == resource.RLIM_INFINITY and soft < 65536:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def head_lines(servers, workloads, opts, rev, started, load_before, builds):
    info = machine_info()
    vers = versions(servers, workloads, rev)
    head = [
        "# stogie benchmark results",
        "",
        "Written by `bench/run`" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "") + ".",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']}, Linux {info['kernel']}",
        f"- load average before / after: {load_before} / {loadavg()}",
        f"- wrk -t1 -cN --latency, {opts.duration} s per run after {opts.warmup} s of warm-up,"
        " on loopback; peak RSS sampled every 0.2 s over the server's process tree",
    ]
    if any(w.h2 and not w.idle for w in workloads):
        head.append(
            "- HTTP/2: h2load -t1 -cN -mM -D, the same durations; over TLS by ALPN, in cleartext"
            " h2c by prior knowledge; stogie, HTTP/1.1: h2load --h1 -cN -m1 over the same"
            " transport"
        )
    head += [f"- {title}: {desc}" for title, desc in builds.items()]
    head += [
        "- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        "- `!` after a number: wrk reported socket errors or non-2xx responses (listed at the end)",
    ]
    return head


def main(argv=None):
    opts = parse_args(argv)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(cleanup)
    LOGS.mkdir(exist_ok=True)
    nofile = raise_nofile()
    # the client and the server each hold one descriptor per idle connection, plus slack
    if "idle" in opts.workload_keys and nofile < opts.idle_connections + 200:
        say(
            f"note: RLIMIT_NOFILE is {nofile}; the idle test asks for"
            f" {opts.idle_connections} connections and some will fail"
        )
    everything = list(SERVERS)
    if opts.ab:
        everything += [
            ab_server("stogie-a", "stogie A", opts.stogie_a),
            ab_server("stogie-b", "stogie B", opts.stogie_b),
        ]
    servers = [s for s in everything if s.key in opts.server_keys]
    workloads = [w for w in WORKLOADS if w.key in opts.workload_keys]
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = loadavg()
    results = Results()
    # The checkout as it is built, not as it is when the run ends half an hour later.
    rev = git_rev()
    ctx = Context(hello_bin=target_dir() / "release" / "examples" / "hello")
    interrupted = False
    ops, rounds, builds = [], None, {}
    try:
        broken, ctx.hello_bin = setup(servers, workloads, opts)
        for s in servers:
            if s.family == "ab" and s.key not in broken:
                build = prepare(s.build, s.key)
                if build.fail:
                    # Half a comparison is none: stop here.
                    say(f"{s.title} ({s.build}): {build.fail}")
                    return 1
                s.stogie = build.stogie
                desc = f"this checkout ({rev})" if s.build == CHECKOUT else build.desc
                builds[s.title] = desc
        if any(s.key == "stogie-workers" for s in servers) and "stogie-workers" not in broken:
            ctx.stogie_workers = stogie_workers_support(ctx)
            if ctx.stogie_workers:
                say(f"skipping stogie --workers N: {ctx.stogie_workers}")
        if opts.rounds > 1:
            rounds = run_rounds(servers, workloads, broken, ctx, opts)
        else:
            run_all(servers, workloads, broken, ctx, opts, results)
        if opts.ops or not opts.partial:
            ops = ops_all(opts)
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted: stopping servers")
    finally:
        cleanup()

    if rounds:
        table = rounds_report(workloads, *rounds, servers, opts)
    else:
        table = report(results, servers, workloads) if workloads else ""
    if ops:
        table = (table + "\n\n" if table else "") + ops_report(ops, opts.duration)
    print()
    print(table)
    if interrupted:
        say("interrupted: no results file written")
        return 130
    head = head_lines(servers, workloads, opts, rev, started, load_before, builds)
    text = "\n".join(head) + "\n\n" + table + "\n\n" + commands(servers, workloads, ctx) + "\n"
    if opts.output:
        out = Path(opts.output)
    elif rounds:
        out = LOGS / "ROUNDS.md"
    else:
        out = LOGS / "RESULTS-partial.md" if opts.partial else BENCH / "RESULTS.md"
    out.write_text(text)
    say(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
