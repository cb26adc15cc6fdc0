"""The application named on the command line: ``MODULE[:ATTR]`` imported, with errors that
say what to type instead."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from .. import server as server_module
from . import CLIError

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing_extensions import TypeIs

    from .._typing import WSGIApplication

DEMO_APP = "stogie.demo:app"
# Names tried in order when MODULE is given without :ATTR. `application` is the
# WSGI convention (and Cheroot's default); `app` is what Flask and most
# tutorials call it.
DEFAULT_ATTRS = ("application", "app")


def load_app(spec: str) -> tuple[WSGIApplication | type[server_module.Gateway], str]:
    """Import ``MODULE[:ATTR]`` and return ``(obj, 'module:attr')``.

    Without ATTR, ``application`` is tried, then ``app``. ATTR may be dotted
    (``module:obj.wsgi_app``). The object must be callable: a WSGI application
    or a ``stogie.server.Gateway`` subclass.

    Raises:
        CLIError: the module cannot be imported, has no such attribute, or the
            attribute is not callable.
    """
    module_name, colon, attr = spec.partition(":")
    if not module_name:
        raise CLIError(f"no module named in {spec!r}; expected MODULE[:ATTR]")
    if colon and not attr:
        raise CLIError(f"no attribute named after ':' in {spec!r}")
    if module_name.startswith("."):
        raise CLIError(f"{module_name!r}: relative module names are not supported")

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CLIError(
            f"cannot import module {module_name!r}: {exc}{_path_hint(module_name)}"
        ) from None
    except SyntaxError as exc:
        raise CLIError(f"cannot import module {module_name!r}: SyntaxError: {exc}") from None
    except Exception as exc:
        # The module itself is broken: its traceback is what its author needs.
        _print_user_traceback(exc)
        raise CLIError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None

    for name in (attr,) if attr else DEFAULT_ATTRS:
        try:
            obj = _getattr_path(module, name)
        except AttributeError:
            continue
        break
    else:
        if attr:
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}")
        raise CLIError(
            f"module {module_name!r} has no attribute 'application' or 'app';"
            f" name the app as {module_name}:ATTR"
        )

    description = f"{module_name}:{name}"
    if not callable(obj):
        raise CLIError(
            f"{description} is not callable (it is {type(obj).__name__}),"
            " so it is not a WSGI application"
        )
    return obj, description


def _print_user_traceback(exc: BaseException) -> None:
    # Only the module's own frames: the import machinery's and ours are noise.
    report = traceback.TracebackException.from_exception(exc)
    report.stack = traceback.StackSummary.from_list(
        [
            frame
            for frame in report.stack
            if not frame.filename.startswith("<frozen importlib")
            and frame.filename not in (__file__, importlib.__file__)
        ]
    )
    print("".join(report.format()), end="", file=sys.stderr)


def _path_hint(module_name: str) -> str:
    # People often pass the file ("app.py", "src/app.py"); say what to pass.
    if not (module_name.endswith(".py") or "/" in module_name or os.sep in module_name):
        return ""
    path = os.path.normpath(module_name)
    if path.endswith(".py"):
        path = path[:-3]
    dotted = path.strip(os.sep).replace(os.sep, ".").replace("/", ".")
    return f" (give a module name, not a file: {dotted!r})"


def _getattr_path(obj: object, dotted: str) -> object:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _is_gateway_class(obj: object) -> TypeIs[type[server_module.Gateway]]:
    if not isinstance(obj, type):
        return False
    return issubclass(obj, server_module.Gateway)
