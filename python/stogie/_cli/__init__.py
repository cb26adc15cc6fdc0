"""The parts of the ``stogie`` command (:mod:`stogie.cli`), each a job of its own: the
options (``options``), the addresses (``bind``), the application (``app``), and running
until a signal stops the server, with its pid file (``run``). Here: what they all share."""

import logging
import sys

log = logging.getLogger("stogie.cli")

PROG = "stogie"


class CLIError(Exception):
    """A start-up error: reported as one line on stderr, exit status 2."""


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
