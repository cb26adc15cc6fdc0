"""Sphinx configuration for stogie's documentation: ./scripts/docs builds it.

Nothing is fetched while building (no intersphinx): the build works offline. The command-line
reference, the Cheroot differences and the benchmark chart are made from the code, the test
lists and bench/RESULTS.md by the local extension in _ext/stogie_docs.py.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

import stogie  # noqa: E402 - autodoc documents the installed package

project = "stogie"
author = "The stogie developers"
copyright = "The stogie developers"
version = release = stogie.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "stogie_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "requirements.txt"]
root_doc = "index"

html_theme = "furo"
html_title = f"stogie {release}"
html_show_sourcelink = False
# Curly quotes, but "--workers" stays two hyphens wherever it is written.
smartquotes_action = "qe"

# Markdown pages: "#"-links to headings, and definition lists.
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

autodoc_member_order = "bysource"
# The constructor's docstring holds its arguments (Cheroot's style): shown with the class.
autoclass_content = "both"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
# Types of the parameters a docstring documents, and return types other than None: no
# "Return type: None" under every method.
autodoc_typehints_description_target = "documented_params"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Every reference to a stogie name must resolve (a renamed class or option fails the build);
# references to the standard library and other packages stay plain text (no intersphinx).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!stogie\b).*"),
    (r"py:.*", r"stogie(\..*)?\._.*"),
]
# The supervisor's module: internal, so not in the API reference (its docstring is the design).
# Classes that annotations name (what get_server_client() and Application.resolve() return)
# without an entry of their own in the reference.
nitpick_ignore = [
    ("py:mod", "stogie.workers"),
    ("py:class", "stogie.testing.ServerClient"),
    ("py:class", "stogie.cli.GatewayYo"),
]


def _external_reference(app, env, node, contnode):
    """Docstrings kept from Cheroot link into other projects' docs with intersphinx
    (``:doc:`pyOpenSSL <pyopenssl:index>```): with no inventory fetched, such a reference
    is its text."""
    target = node.get("reftarget", "")
    if node.get("refdomain") == "std" and node.get("reftype") == "doc" and ":" in target:
        return contnode
    return None


def setup(app):
    app.connect("missing-reference", _external_reference)
