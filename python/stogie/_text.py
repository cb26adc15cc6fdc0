"""Words for log lines and messages."""


def quantity(number: object, noun: str) -> str:
    """``'1 worker'``, ``'2 workers'``: a number and its noun, singular for one."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
