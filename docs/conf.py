"""Sphinx configuration of spangraph's documentation (``make docs``)."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "spangraph"
author = "the spangraph authors"
copyright = "2026, the spangraph authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_click",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

html_theme = "furo"
html_title = "spangraph"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": False}

# Nitpicky (-n) builds resolve every type in a signature. Standard-library and
# third-party types are not linked (no intersphinx: the build needs no network).
nitpick_ignore_regex = [
    ("py:.*", r"(collections\.abc|typing|os|pathlib|random|networkx|pydantic|anyio|redis)\..*"),
    ("py:.*", r"(.*\.)?T"),
    # Private helper types that public signatures mention: not documented.
    ("py:.*", r"spangraph\.(\w+\.)*_\w+\..*"),
    ("py:.*", r"MemoRoute|CachedPrefix|EngineLike|MemoPolicy"),
    # Pieces of string annotations that Sphinx splits at a comma.
    ("py:.*", r"\w+\[\w+"),
]


def _public_target(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Link ``spangraph.x._module.Name`` to where ``Name`` is documented publicly.

    Autodoc writes a type as its defining (private) module's path; the
    reference pages document each name under the public module that exports it.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("spangraph."):
        return None
    name = target.rsplit(".", 1)[-1].split("[", 1)[0]
    domain = env.get_domain("py")
    public = [
        full
        for full, *_ in domain.get_objects()
        if full.startswith("spangraph.") and full.endswith("." + name) and "._" not in full
    ]
    if not public:
        return None
    best = min(public, key=lambda full: (full.count("."), full))
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], best, node, contnode
    )


def setup(app: Any) -> None:
    app.connect("missing-reference", _public_target)
