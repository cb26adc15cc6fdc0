"""stogie: a WSGI HTTP server with a Rust engine, a drop-in replacement for Cheroot."""

import os as _os

# The engine's memory allocator (mimalloc) reads its options when the extension loads. By
# default it treats its arenas as always committed and never hands freed pages back, so a
# burst of connections left its peak in the process for good (10,000 idle keep-alive
# connections measured 1.9 KB each instead of 0.8). Set it yourself to override.
_os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")

from ._native import __version__  # noqa: E402

__all__ = ["__version__"]
