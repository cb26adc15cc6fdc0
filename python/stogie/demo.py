"""The demo application that ``stogie`` serves when no application is named.

It shows the request as the application received it (method, path, query,
protocol, client address, headers, and over HTTPS the TLS variables) and echoes
what a form posts back, which makes it a quick check of a deployment behind a
proxy.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qsl

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._typing import StartResponse, WSGIEnvironment

# The demo reads at most this much of a posted body: it is for a short form,
# and a demo must not let anyone make the server hold a large upload in memory.
MAX_BODY = 64 * 1024

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>stogie {version}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 46em;
       padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.1em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; width: 100%; table-layout: fixed; }}
th, td {{ text-align: left; vertical-align: top; padding: .2em .6em;
          border-bottom: 1px solid #ddd; font-family: ui-monospace, monospace;
          overflow-wrap: anywhere; }}
th {{ width: 14em; font-weight: normal; color: #555; }}
input, textarea {{ font: inherit; width: 100%; box-sizing: border-box; }}
</style>
</head>
<body>
<h1>stogie {version} is serving</h1>
<p>This is stogie's built-in demo. Name your own application to serve it:
<code>stogie mymodule:application</code>.</p>
<h2>Your request</h2>
<table>
{request_rows}
</table>
<h2>Connection</h2>
{tls}
<h2>Request headers</h2>
<table>
{header_rows}
</table>
<h2>Post a form</h2>
{posted}
<form method="post" action="">
<p><label>Name <input name="name"></label></p>
<p><label>Message <textarea name="message" rows="3"></textarea></label></p>
<p><button type="submit">Send</button></p>
</form>
</body>
</html>
"""


def _text(value: str) -> str:
    """Undo WSGI's latin-1 decoding of raw request bytes, for display."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _rows(pairs: Iterable[tuple[str, str]]) -> str:
    return "\n".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in pairs
    )


def _read_body(environ: WSGIEnvironment) -> tuple[bytes, str]:
    """Return up to ``MAX_BODY`` bytes of the request body, and its size in words."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit():
        size = int(length)
        body = stream.read(min(size, MAX_BODY))
        if size > MAX_BODY:
            return body, f"{size} bytes (the demo read the first {MAX_BODY})"
        return body, f"{size} bytes"
    if environ.get("wsgi.input_terminated"):
        # A chunked body: the stream ends where the body does.
        body = stream.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return body[:MAX_BODY], f"more than {MAX_BODY} bytes"
        return body, f"{len(body)} bytes"
    return b"", "0 bytes"


def _tls(environ: WSGIEnvironment) -> str:
    """The HTML saying whether the page came over HTTPS, with the TLS variables."""
    if environ.get("HTTPS") != "on":
        return "<p>Plain HTTP: this page was not reached over HTTPS.</p>"
    pairs = sorted(
        (name, value)
        for name, value in environ.items()
        if name.startswith("SSL_") and name not in ("SSL_SERVER_CERT", "SSL_CLIENT_CERT")
    )
    return (
        f"<p>HTTPS: {html.escape(environ.get('SSL_PROTOCOL', ''))}, "
        f"{html.escape(environ.get('SSL_CIPHER', ''))}.</p>\n<table>\n{_rows(pairs)}\n</table>"
    )


def _posted(environ: WSGIEnvironment) -> str:
    """The HTML reporting a POSTed body, or an empty string for other methods."""
    if environ.get("REQUEST_METHOD") != "POST":
        return ""
    body, size = _read_body(environ)
    parts = [f"<p>Received a body of {size}.</p>"]
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        fields = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        if fields:
            parts.append(f"<table>\n{_rows(fields)}\n</table>")
        else:
            parts.append("<p>No form fields.</p>")
    elif body:
        parts.append(f"<p>Content-Type: {html.escape(content_type or '(none)')}</p>")
    return "\n".join(parts)


def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """WSGI application: an HTML page describing the request it received."""
    from stogie import __version__

    remote = environ.get("REMOTE_ADDR") or "(unknown)"
    if environ.get("REMOTE_PORT"):
        remote = f"{remote} port {environ['REMOTE_PORT']}"
    request_rows = _rows(
        [
            ("Method", environ.get("REQUEST_METHOD", "")),
            ("Path", _text(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))),
            ("Query", _text(environ.get("QUERY_STRING", ""))),
            ("Protocol", environ.get("SERVER_PROTOCOL", "")),
            ("Scheme", environ.get("wsgi.url_scheme", "")),
            ("Remote address", remote),
        ]
    )
    headers = sorted(
        (name[5:].replace("_", "-").title(), _text(value))
        for name, value in environ.items()
        if name.startswith("HTTP_")
    )
    # CGI keeps these two out of HTTP_*; they are request headers all the same.
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if environ.get(key):
            headers.append((name, environ[key]))

    page = _PAGE.format(
        version=html.escape(__version__),
        request_rows=request_rows,
        header_rows=_rows(headers) or "<tr><td>(none)</td></tr>",
        tls=_tls(environ),
        posted=_posted(environ),
    )
    body = page.encode("utf-8")
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            # The page shows the request; a cache must not serve it to another.
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]
