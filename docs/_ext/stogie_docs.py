"""Pages made from the project's own sources, so that they cannot drift from it.

- ``stogie-options``: the command-line reference, from ``stogie.cli.build_parser()``, with
  each option's environment variable and configuration-file key as ``stogie.config`` derives
  them. Each option is a Sphinx ``option``, so ``:option:`stogie --workers``` anywhere in
  the docs fails the build if the option goes away.
- ``stogie-cheroot-differences``: the Cheroot tests that fail on purpose, each under its
  rule, from ``tests/cheroot/differences.txt`` (the list ``scripts/cheroot-suite`` checks).
- ``stogie-bench-list``, ``stogie-bench-table`` and ``stogie-bench-chart``: the run's
  facts (or another section's list), one of its tables, and a chart of requests per
  second, from ``bench/RESULTS.md``.
  The chart is drawn with matplotlib when the docs are built; no image is kept in the repo.
"""

import argparse
import math
import os
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIFFERENCES = os.path.join(ROOT, "tests", "cheroot", "differences.txt")
RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")

logger = logging.getLogger(__name__)


def _inline(text):
    """Nodes for text in which `backquoted` parts are code."""
    parts = re.split(r"`([^`]+)`", text)
    return [
        nodes.literal(part, part) if index % 2 else nodes.Text(part)
        for index, part in enumerate(parts)
        if part
    ]


def _table(header, rows, widths=None):
    """A docutils table with one header row."""
    table = nodes.table()
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths or [1] * len(header):
        group += nodes.colspec(colwidth=width)

    def row_of(cells):
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += nodes.paragraph("", "", *(cell if isinstance(cell, list) else _inline(cell)))
            row += entry
        return row

    thead = nodes.thead()
    thead += row_of(header)
    group += thead
    tbody = nodes.tbody()
    for cells in rows:
        tbody += row_of(cells)
    group += tbody
    return table


# --- the command line -------------------------------------------------------------


def _rst_text(text, known_options):
    """Help text as reStructuredText: markup characters escaped, known options linked."""
    out = []
    for piece in re.split(r"(--[a-z][a-z0-9-]*[a-z0-9])", text):
        if piece in known_options:
            out.append(f":option:`{piece}`")
        else:
            out.append(re.sub(r"([\\*`_|])", r"\\\1", piece))
    text = "".join(out)
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _group_title(group):
    return {
        "positional arguments": "The application",
        "options": "Options",
    }.get(group.title, group.title[:1].upper() + group.title[1:])


class OptionsDirective(SphinxDirective):
    """The ``stogie`` command's options, a section per argparse group."""

    def run(self):
        from stogie import cli, config

        # The parser may be built from several modules: any change to the package re-reads it.
        package = os.path.dirname(cli.__file__)
        for folder, _, files in os.walk(package):
            for name in files:
                if name.endswith(".py"):
                    self.env.note_dependency(os.path.join(folder, name))
        parser = cli.build_parser()
        settings = config.settings(parser)
        formatter = parser._get_formatter()
        known = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
        lines = [".. program:: stogie", ""]
        for group in parser._action_groups:
            actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
            if not actions:
                continue
            title = _group_title(group)
            lines += [title, "-" * len(title), ""]
            if group.description:
                lines += [_rst_text(group.description, known), ""]
            for action in actions:
                lines += self._option(action, settings, formatter, known)
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=cli.__file__), container)
        return container.children

    @staticmethod
    def _option(action, settings, formatter, known):
        if action.option_strings:
            metavar = ""
            if action.nargs != 0:
                metavar = " " + (action.metavar or action.dest.upper())
            signature = ", ".join(s + metavar for s in action.option_strings)
        else:
            signature = action.metavar or action.dest
        help_text = formatter._expand_help(action) if action.help else ""
        lines = [f".. option:: {signature}", ""]
        if help_text:
            lines += ["   " + _rst_text(help_text, known), ""]
        setting = settings.get(action.dest)
        if setting is None:
            from stogie import config

            if action.dest == "config":
                lines += [f"   Also ``{config.ENV_PREFIX}CONFIG`` in the environment.", ""]
            else:
                lines += ["   Command line only.", ""]
            return lines
        env = f"``{setting.env}`` in the environment"
        key = f"``{setting.key}`` in the configuration file"
        if setting.is_flag:
            env += " (``1`` or ``0``)"
            key = f"``{setting.key} = true`` in the configuration file"
        elif setting.is_list:
            env += " (values separated by commas)"
            key += " (a string or an array of strings)"
        lines += [f"   Also {env}; {key}.", ""]
        return lines


# --- Cheroot's test suite ----------------------------------------------------------


def read_differences(path=DIFFERENCES):
    """The differences as ``[(rule, [test ids])]``; the file's opening comment is skipped."""
    groups = []
    comment, tests = [], []
    with open(path, encoding="utf-8") as f:
        blocks = f.read().split("\n\n")
    for block in blocks[1:]:
        comment, tests = [], []
        for line in block.strip().splitlines():
            if line.startswith("#"):
                comment.append(line.lstrip("#").strip())
            elif line.strip():
                tests.append(line.strip())
        if tests:
            groups.append((" ".join(comment), tests))
    return groups


class CherootDifferencesDirective(SphinxDirective):
    """Each rule with the Cheroot tests that show it."""

    def run(self):
        self.env.note_dependency(DIFFERENCES)
        groups = read_differences()
        if not groups:
            raise self.error(f"no differences found in {DIFFERENCES}")
        items = nodes.bullet_list()
        for rule, tests in groups:
            item = nodes.list_item()
            # "RFC 9112 §3.2: a server MUST ...": the rule's source in bold.
            source, colon, text = rule.partition(": ")
            if colon and len(source) < 40:
                rule_nodes = [nodes.strong(source, source), nodes.Text(": "), *_inline(text)]
            else:
                rule_nodes = _inline(rule)
            item += nodes.paragraph("", "", *rule_nodes)
            shown = nodes.paragraph("", "Cheroot's tests: ")
            for index, test in enumerate(tests):
                if index:
                    shown += nodes.Text(", ")
                shown += nodes.literal(test, test)
            item += shown
            items += item
        return [items]


# --- benchmark results -------------------------------------------------------------


def read_results(path=RESULTS):
    """``(lists, tables)``: ``{title: [items]}`` for each section's list (the opening one's
    title is None), and ``{title: (header, rows)}`` for each section's table."""
    lists, tables = {}, {}
    title = None
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        if line.startswith("### "):
            title = line[4:].strip()
        elif line.startswith("- "):
            lists.setdefault(title, []).append(line[2:].strip())
        elif line.startswith("|") and title is not None:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                continue
            if title not in tables:
                tables[title] = (cells, [])
            else:
                tables[title][1].append(cells)
    return lists, tables


def _number(text):
    """A table cell's value (``90.2k`` is 90200; ``4.7k !`` too), or None."""
    match = re.fullmatch(r"([0-9.]+)([kM]?)\s*!?", text.strip())
    if not match:
        return None
    return float(match.group(1)) * {"": 1, "k": 1e3, "M": 1e6}[match.group(2)]


def _named(found, title, what, where):
    if title not in found:
        known = ", ".join(repr(t) for t in found if t is not None)
        raise where.error(f"bench/RESULTS.md has no {what} under {title!r} (it has {known})")
    return found[title]


def _table_named(tables, title, where):
    return _named(tables, title, "table", where)


class BenchListDirective(SphinxDirective):
    """A section's list, named by its title; without one, the run's facts at the top."""

    optional_arguments = 1
    final_argument_whitespace = True

    def run(self):
        self.env.note_dependency(RESULTS)
        lists, _ = read_results()
        title = self.arguments[0] if self.arguments else None
        if title is not None and title not in lists:
            # A section named by how its title begins ("Errors reported by wrk" is "... and
            # h2load" in a run with HTTP/2 workloads); a run without errors has none.
            found = [t for t in lists if t is not None and t.startswith(title)]
            if not found:
                return [nodes.paragraph("", "None in this run.")]
            title = found[0]
        items = nodes.bullet_list()
        for text in _named(lists, title, "list", self):
            item = nodes.list_item()
            item += nodes.paragraph("", "", *_inline(text))
            items += item
        return [items]


class BenchTableDirective(SphinxDirective):
    """One table of bench/RESULTS.md, named by its title."""

    required_arguments = 1
    final_argument_whitespace = True

    def run(self):
        self.env.note_dependency(RESULTS)
        header, rows = _table_named(read_results()[1], self.arguments[0], self)
        return [_table(header, rows)]


RPS_TABLE = "Requests per second"


def rps_series(header, rows):
    """``(workloads, servers, values, labels)`` of the requests-per-second table.

    The servers are the table's columns before "best peer" with a number for at least half
    the workloads (the Rust ceiling and the access-log run, measured on one or two, are
    left out); ``values[server]`` has a number or None per workload, ``labels[server]`` the
    table's text.
    """
    end = header.index("best peer") if "best peer" in header else len(header)
    workloads = [row[0] for row in rows]
    servers, values, labels = [], {}, {}
    for column in range(1, end):
        numbers = [_number(row[column]) for row in rows]
        if sum(n is not None for n in numbers) * 2 >= len(rows):
            servers.append(header[column])
            values[header[column]] = numbers
            labels[header[column]] = [row[column] for row in rows]
    return workloads, servers, values, labels


def _tick(value):
    if value >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def draw_rps_chart(path, title):
    """A panel per workload, a bar per server, stogie's bars in colour; written to path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    header, rows = read_results()[1][RPS_TABLE]
    workloads, servers, values, labels = rps_series(header, rows)
    # Two panels a row: the page shows the image at about its own width (800 px).
    columns = 2
    lines = math.ceil(len(workloads) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(8, 0.5 + 2.3 * lines), dpi=100, squeeze=False)
    order = list(reversed(servers))  # the table's first column on top
    for index, workload in enumerate(workloads):
        ax = axes[index // columns][index % columns]
        numbers = [values[server][index] for server in order]
        texts = [labels[server][index] for server in order]
        top = max((n for n in numbers if n is not None), default=1)
        colors = ["#b4531f" if s.startswith("stogie") else "#9aa3ad" for s in order]
        ax.barh(range(len(order)), [n or 0 for n in numbers], color=colors, height=0.72)
        for y, (number, text) in enumerate(zip(numbers, texts, strict=True)):
            ax.text((number or 0) + top * 0.02, y, text, va="center", fontsize=8, color="#333333")
        ax.set_yticks(range(len(order)), order, fontsize=8)
        ax.set_xlim(0, top * 1.25)
        ax.set_title(workload, fontsize=10, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _tick(v)))
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for index in range(len(workloads), lines * columns):
        axes[index // columns][index % columns].axis("off")
    fig.suptitle(title, fontsize=12, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path)
    plt.close(fig)


class BenchChartDirective(SphinxDirective):
    """The requests-per-second chart, drawn into the build and shown as an image."""

    def run(self):
        self.env.note_dependency(RESULTS)
        _table_named(read_results()[1], RPS_TABLE, self)
        folder = os.path.join(self.env.app.doctreedir, "stogie-generated")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "bench-requests-per-second.png")
        draw_rps_chart(
            path, "Requests per second, higher is better (wrk on loopback; bench/RESULTS.md)"
        )
        here = os.path.dirname(self.env.doc2path(self.env.docname))
        image = nodes.image(
            uri=os.path.relpath(path, here),
            alt="Requests per second of stogie and other WSGI servers, per workload",
        )
        return [image]


def check_markdown(app, docname, source):
    """A Markdown line that starts with ``%`` is a MyST comment: a wrapped line beginning
    with an access-log atom (``%(h)s``) would vanish from the page."""
    if not str(app.env.doc2path(docname)).endswith(".md"):
        return
    for number, line in enumerate(source[0].splitlines(), 1):
        if re.match(r"%[({]", line):
            logger.warning(
                "line starts with %, which MyST reads as a comment: rewrap it",
                location=(docname, number),
            )


def setup(app):
    app.connect("source-read", check_markdown)
    app.add_directive("stogie-options", OptionsDirective)
    app.add_directive("stogie-cheroot-differences", CherootDifferencesDirective)
    app.add_directive("stogie-bench-list", BenchListDirective)
    app.add_directive("stogie-bench-table", BenchTableDirective)
    app.add_directive("stogie-bench-chart", BenchChartDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
