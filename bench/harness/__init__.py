"""stogie's side-by-side benchmark (issue 4). Run it through ``bench/run``, which installs wrk and
makes the virtualenv this runs in.

For every server and workload: start the server on a fresh port (its own process group), wait
until it answers correctly, warm up with wrk, measure with ``wrk -t1 -cN --latency`` while sampling
the RSS of the server's process tree, kill the whole group. Servers with several candidate
configurations run each and keep the best. Prints the tables and writes them, with the date and
machine, to bench/RESULTS.md (a full run) or bench/.logs/RESULTS-partial.md (a filtered run).
"""
