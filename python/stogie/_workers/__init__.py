"""The parts of the supervisor of worker processes (:mod:`stogie.workers`), each a job of its
own: the parent's bookkeeping of its workers (``bookkeeping``), a worker's own main loop
(``child``), reload and recycling (``replacing``), worker slots and the steering of new
connections over them (``steering``), and the process and control-channel helpers they use
(``process``). Here: the timings and limits they share, and their logger."""

import logging
import signal

log = logging.getLogger("stogie.workers")

# The first replacement of a dead worker waits this long; each further one in the same slot
# within a minute doubles it, up to MAX_RESTART_DELAY.
RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 5.0
MAX_RESTARTS_PER_MINUTE = 10
# Time given to workers beyond shutdown_timeout to exit on their own before they are killed:
# the engine's own teardown and the interpreter's exit.
STOP_MARGIN = 3.0
# A second SIGINT or SIGTERM this soon after the first is the same one delivered twice (a
# terminal or `timeout` signals the whole process group), not a request to hurry.
REPEAT_SIGNAL_WINDOW = 0.5
# A new worker (reload, replacement, added slot) that does not serve within this long has
# failed: it is stopped, and the workers it was to replace go on.
START_TIMEOUT = 120.0
# How often a worker sends its heartbeat and checks its request count.
BEAT_INTERVAL = 0.25
# A worker whose engine's runtime has not run for this long sends no heartbeat, and one
# whose heartbeat is this old counts as hung (for the watchdog).
STALE_AFTER = 2.0
# A supervisor whose loop did not run for this long was stopped itself (SIGSTOP, Ctrl-Z, a
# debugger): the heartbeats it missed say nothing of its workers.
SUPERVISOR_STALL = 2 * STALE_AFTER
# A recycling replacement that failed is tried again after this long.
RECYCLE_RETRY = 10.0
# Before a removed TCP slot's worker drains, its backlog must have stayed empty this long
# (a handshake that began before the socket filter changed lands late), or this long passed.
SLOT_SETTLE = 0.2
SLOT_DRAIN_LIMIT = 5.0
# Exit status of a worker that could not load the application (it said why first).
EXIT_LOAD_FAILED = 4

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_CONTROL_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1, *_CONTROL_SIGNALS}
_PR_SET_PDEATHSIG = 1
# What the engine writes to a worker's wake-up socket when it served OVER_LIMIT times its
# request limit (no signal has this number).
_OVER = 255
OVER_LIMIT = 2
_MESSAGE_SIZE = 65536
