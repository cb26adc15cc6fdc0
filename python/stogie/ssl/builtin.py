"""A TLS adapter with Cheroot's name and signature (``cheroot.ssl.builtin``).

stogie does not serve TLS yet: giving one of these to a server raises an error that says so.
"""

from . import Adapter


class BuiltinSSLAdapter(Adapter):
    """Wrapper for integrating Python's builtin :py:mod:`ssl` with stogie."""
