"""Starts a peer server that has no command line of its own (or none that takes every option the
benchmark sets): ``python serve.py KIND PORT MODULE:ATTR [--threads N] [--timeout S]``.

KIND is ``bjoern``, ``pyruvate`` or ``cheroot``. The server listens on 127.0.0.1:PORT and runs
until it is killed; Cheroot serves HTTPS with ``--certfile`` and ``--keyfile``.
"""

import argparse
import importlib
import sys


def load(spec):
    module, _, attr = spec.partition(":")
    app = getattr(importlib.import_module(module), attr or "application")
    if app is None:
        raise SystemExit(f"serve: {spec} is not available (a missing dependency?)")
    return app


def serve_bjoern(app, port, opts):
    import bjoern

    # One process, one thread: bjoern's own model.
    bjoern.run(app, "127.0.0.1", port)


def serve_pyruvate(app, port, opts):
    import pyruvate

    # Left at its defaults on purpose (pyruvate 1.6.1, seen here): with max_reuse_count > 0 it
    # answers Connection: keep-alive but never answers a second request on the connection, and
    # chunked_transfer=True appends a last-chunk to Content-Length bodies. So one request per
    # connection, and a body without Content-Length ends at the close.
    pyruvate.serve(app, f"127.0.0.1:{port}", opts.threads, keepalive_timeout=opts.timeout)


def serve_cheroot(app, port, opts):
    from cheroot import wsgi

    server = wsgi.Server(
        ("127.0.0.1", port),
        app,
        numthreads=opts.threads,
        max=opts.threads,
        request_queue_size=4096,
        timeout=opts.timeout,
    )
    if opts.certfile:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(opts.certfile, opts.keyfile)
    try:
        server.start()
    finally:
        server.stop()


SERVERS = {"bjoern": serve_bjoern, "pyruvate": serve_pyruvate, "cheroot": serve_cheroot}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=sorted(SERVERS))
    parser.add_argument("port", type=int)
    parser.add_argument("app", metavar="MODULE:ATTR")
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=10, help="keep-alive idle timeout")
    parser.add_argument("--certfile", help="serve HTTPS with this certificate (Cheroot only)")
    parser.add_argument("--keyfile", help="and this key")
    opts = parser.parse_args(argv)
    sys.path.insert(0, ".")
    SERVERS[opts.kind](load(opts.app), opts.port, opts)


if __name__ == "__main__":
    main()
