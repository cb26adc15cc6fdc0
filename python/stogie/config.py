"""Settings for the ``stogie`` command from the command line, the environment and a TOML file.

Every option of the command's ``argparse`` parser is also read from an environment variable
``STOGIE_<NAME>`` (``--max-threads`` is ``STOGIE_MAX_THREADS``, the application is
``STOGIE_APP``) and from the file named by ``--config`` (or ``STOGIE_CONFIG``), under the
name ``<name>`` with ``_`` or ``-`` (``max_threads = 8``). The command line wins over the
environment, which wins over the file, which wins over the defaults. A ``STOGIE_`` variable
or a key of the file that names no setting is an error, as a mistyped option is.

Nothing here knows the options: they are found in the parser, so an option added to it later
is read from the environment and the file with no more code. Values go through the option's
own ``type`` and ``choices``, so they are checked exactly as on the command line.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys

# Not `from typing import TYPE_CHECKING`: typing is not imported at run time (import time);
# type checkers take this name for theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

ENV_PREFIX = "STOGIE_"

# Variables named like settings that are not settings: the file's own, and those that
# stogie's test and release scripts set (the servers they start inherit them).
ENV_NOT_SETTINGS = {
    ENV_PREFIX + "CONFIG",
    ENV_PREFIX + "CONFORMANCE_CORPUS",
    ENV_PREFIX + "PY",
    ENV_PREFIX + "PYTHON",
    ENV_PREFIX + "TEST_MARKER",
    ENV_PREFIX + "VENV",
    ENV_PREFIX + "WHEEL",
}

# Options that act at once (print something and exit) or name the file itself: no setting.
_NOT_SETTINGS = {"help", "version", "config", "print_config"}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(Exception):
    """A setting that cannot be used: reported as one line, exit status 2."""


class Setting:
    """One option of the parser, as the environment and the file name it."""

    def __init__(self, action: argparse.Action) -> None:
        self.action = action
        self.dest = action.dest
        longs = [s for s in action.option_strings if s.startswith("--")]
        # The positional MODULE[:ATTR] is called "app" everywhere else.
        self.name = longs[0][2:] if longs else action.dest
        self.key = self.name.replace("-", "_")
        self.env = ENV_PREFIX + self.key.upper()
        self.option = longs[0] if longs else self.name.upper()

    @property
    def is_flag(self) -> bool:
        """Whether the option takes no value (``store_true`` and the like)."""
        return self.action.nargs == 0

    @property
    def is_list(self) -> bool:
        """Whether the option may be given several times (``action="append"``)."""
        return isinstance(self.action, argparse._AppendAction)

    def convert(self, text: str) -> Any:
        """One value from its text, through the option's own type and choices."""
        action = self.action
        try:
            value = action.type(text) if action.type is not None else text  # type: ignore[operator]
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise ConfigError(str(exc) or f"invalid value {text!r}") from None
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise ConfigError(f"{text!r} is not one of {choices}")
        return value

    def from_env(self, text: str) -> Any:
        """The value an environment variable's text stands for."""
        if self.is_flag:
            word = text.strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
            raise ConfigError(f"{text!r} is not a yes or no (use 1 or 0)")
        if self.is_list:
            # Several values: separated by commas (a path with a comma goes in the file).
            return [self.convert(item.strip()) for item in text.split(",") if item.strip()]
        return self.convert(text)

    def from_file(self, value: object) -> Any:
        """The value a TOML value stands for."""
        if self.is_flag:
            if not isinstance(value, bool):
                raise ConfigError(f"{value!r} is not true or false")
            return value
        if self.is_list:
            items = value if isinstance(value, list) else [value]
            return [self.convert(self._text(item)) for item in items]
        return self.convert(self._text(value))

    @staticmethod
    def _text(value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{value!r} is not a string or a number")
        return str(value)

    def default(self) -> Any:
        """The parser's default for this option."""
        default = self.action.default
        return list(default) if isinstance(default, list) else default


def settings(parser: argparse.ArgumentParser) -> dict[str, Setting]:
    """The options of ``parser`` that are settings, by destination name."""
    return {
        action.dest: Setting(action)
        for action in parser._actions
        if action.dest not in _NOT_SETTINGS and action.dest is not argparse.SUPPRESS
    }


def _given_on_command_line(
    parser_factory: Callable[[], argparse.ArgumentParser], argv: Sequence[str]
) -> dict[str, Any]:
    """The options given in ``argv`` (and only those), parsed by a fresh parser."""
    parser = parser_factory()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def read_toml(path: str) -> dict[str, Any]:
    """The table in the TOML file at ``path``.

    Raises:
        ConfigError: the file cannot be read or is not TOML.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            table: dict[str, Any] = tomllib.load(f)
            return table
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


class Config:
    """The settings of one run and where each came from.

    Attributes:
        values: an ``argparse.Namespace`` with every option's value.
        sources: for each destination name, ``'command line'``, the environment variable's
            name, the file's name, or ``'default'``.
    """

    def __init__(
        self,
        parser: argparse.ArgumentParser,
        values: argparse.Namespace,
        sources: dict[str, str],
    ) -> None:
        self.parser = parser
        self.values = values
        self.sources = sources

    def render(
        self, defaults: Mapping[str, Any] | None = None, notes: Mapping[str, str] | None = None
    ) -> str:
        """The settings as TOML, as ``--config`` reads them, each with its source.

        ``defaults``: the value in effect of options left unset (``{dest: value}``), written
        as settings. ``notes``: what the default of an option is where writing it would
        change something (it depends on where the server runs), written as a comment.
        """
        defaults = defaults or {}
        notes = notes or {}
        lines = ["# stogie settings: command line > environment > file > defaults"]
        for dest, setting in settings(self.parser).items():
            value = getattr(self.values, dest)
            source = self.sources[dest]
            if value is None:
                value = defaults.get(dest)
            if value is None:
                note = f" ({notes[dest]})" if dest in notes else ""
                lines.append(f"# {setting.key}: not set{note}")
                continue
            lines.append(f"{setting.key} = {_toml_value(value)}  # {source}")
        return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string (ASCII, escapes TOML shares) is a TOML basic string.
    return json.dumps(str(value))


def load(
    parser_factory: Callable[[], argparse.ArgumentParser],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Parse ``argv``, then fill what it left out from the environment, then the file.

    ``parser_factory()`` returns a new parser for the command (called twice: once to read
    the command line as given, once with its defaults). The file is the one named by
    ``--config`` (or ``STOGIE_CONFIG``); its path is ``values.config``.

    Raises:
        ConfigError: a setting in the environment or the file is unknown or has a bad value.
        SystemExit: from argparse, for a bad command line (status 2) or ``--help``.
    """
    environ = os.environ if environ is None else environ
    parser = parser_factory()
    argv = sys.argv[1:] if argv is None else list(argv)
    values = parser.parse_args(argv)
    given = _given_on_command_line(parser_factory, argv)
    known = settings(parser)

    config_path = values.config
    if config_path is None and environ.get(ENV_PREFIX + "CONFIG"):
        config_path = environ[ENV_PREFIX + "CONFIG"]
        values.config = config_path

    from_file: dict[str, Any] = {}
    if config_path:
        by_key: dict[str, Setting] = {}
        for setting in known.values():
            by_key[setting.key] = setting
            by_key[setting.name] = setting
        for key, raw in read_toml(config_path).items():
            named = by_key.get(key)
            if named is None:
                raise ConfigError(f"{config_path}: unknown setting {key!r} (see 'stogie --help')")
            try:
                from_file[named.dest] = named.from_file(raw)
            except ConfigError as exc:
                raise ConfigError(f"{config_path}: bad {named.key} = {raw!r}: {exc}") from None

    by_env = {setting.env for setting in known.values()}
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in by_env | ENV_NOT_SETTINGS:
            close = difflib.get_close_matches(name, sorted(by_env | {ENV_PREFIX + "CONFIG"}), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown setting in the environment: {name}{hint}")

    from_env: dict[str, Any] = {}
    for setting in known.values():
        text = environ.get(setting.env)
        if text is None:
            continue
        try:
            from_env[setting.dest] = setting.from_env(text)
        except ConfigError as exc:
            raise ConfigError(f"bad {setting.env}={text!r}: {exc}") from None

    sources: dict[str, str] = {}
    for dest, setting in known.items():
        if dest in given:
            sources[dest] = "command line"
        elif dest in from_env:
            setattr(values, dest, from_env[dest])
            sources[dest] = setting.env
        elif dest in from_file:
            setattr(values, dest, from_file[dest])
            sources[dest] = str(config_path)
        else:
            sources[dest] = "default"
    return Config(parser, values, sources)
