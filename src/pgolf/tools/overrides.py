"""The ``--help`` text of the dotted overrides (``--model.num_layers 11``): each field's attribute
docstring, read from the source (tooling: the bundled file strips docstrings and never imports
this). Parsing and applying overrides is ``config.run.apply_overrides`` (counted: the bundled file
applies environment variables with it)."""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
from functools import cache

from pgolf.config.run import SECTIONS, RunConfig, all_fields

DEST = "ov:"
"""The argparse ``dest`` prefix of a dotted override (``--model.num_layers`` -> ``ov:model.num_layers``)."""


@cache
def _class_field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of ``cls`` and of its dataclass bases (``EvalConfig``'s method sections)."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__[:-1]):
        docs.update(_own_field_docs(base))
    return docs


@cache
def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in itertools.pairwise(body):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def field_docs() -> dict[str, str]:
    """Dotted key -> attribute docstring, for --help."""
    out = {}
    for key in all_fields():
        section, _, name = key.rpartition(".")
        out[key] = _class_field_docs(SECTIONS[section] if section else RunConfig).get(name, "")
    return out
