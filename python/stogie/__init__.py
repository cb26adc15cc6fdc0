"""stogie: a WSGI HTTP server with a Rust engine, a drop-in replacement for Cheroot."""

import os as _os

# The engine's memory allocator (mimalloc) reads its options when the extension loads. By
# default it treats its arenas as always committed and never hands freed pages back, so a
# burst of connections left its peak in the process for good (10,000 idle keep-alive
# connections measured 1.9 KB each instead of 0.8). Set it yourself to override. Set here
# for the load only: the app's environment and its subprocesses do not see it.
_EAGER_COMMIT = "MIMALLOC_ARENA_EAGER_COMMIT"
_set_here = _EAGER_COMMIT not in _os.environ
if _set_here:
    _os.environ[_EAGER_COMMIT] = "0"
try:
    from ._native import __version__  # noqa: E402
finally:
    if _set_here:
        del _os.environ[_EAGER_COMMIT]

__all__ = ["__version__"]
