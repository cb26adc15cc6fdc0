"""TLS adapters (Cheroot's ``cheroot.ssl``). TLS is not served yet by stogie."""

TLS_NOT_SUPPORTED = (
    "TLS is not supported by this version of stogie yet: serve plain HTTP behind a "
    "TLS-terminating proxy (nginx, HAProxy, a load balancer) for now."
)


class Adapter:
    """Base class for SSL driver library adapters.

    Required methods:

        * ``wrap(sock) -> (wrapped socket, ssl environ dict)``
        * ``makefile(sock, mode='r', bufsize=DEFAULT_BUFFER_SIZE) ->
          socket file object``
    """

    def __init__(
        self,
        certificate,
        private_key,
        certificate_chain=None,
        ciphers=None,
        *,
        private_key_password=None,
    ):
        """Set up certificates, private key ciphers and reset context."""
        self.certificate = certificate
        self.private_key = private_key
        self.certificate_chain = certificate_chain
        self.ciphers = ciphers
        self.private_key_password = private_key_password
        self.context = None

    def bind(self, sock):
        """Wrap and return the given socket."""
        return sock

    def wrap(self, sock):
        """Wrap and return the given socket, plus WSGI environ entries."""
        raise NotImplementedError(TLS_NOT_SUPPORTED)

    def get_environ(self):
        """Return WSGI environ entries to be merged into each request."""
        raise NotImplementedError(TLS_NOT_SUPPORTED)

    def makefile(self, sock, mode="r", bufsize=-1):
        """Return socket file object."""
        raise NotImplementedError(TLS_NOT_SUPPORTED)
