"""stogie: a WSGI HTTP server with a Rust engine, a drop-in replacement for Cheroot."""

from ._native import __version__

__all__ = ["__version__"]
