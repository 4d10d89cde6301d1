"""The ``--help`` text of the dotted overrides (``--model.num_layers 11``): each field's attribute
docstring, read from the source (tooling: the bundled file strips docstrings and never imports
this). Parsing and applying overrides is ``config.run.apply_overrides`` (counted: the bundled file
applies environment variables with it)."""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import textwrap
from functools import cache
from typing import Any

from pgolf.config.run import SECTIONS, RunConfig, all_fields
from pgolf.errors import ConfigError

DEST = "ov:"
"""The argparse ``dest`` prefix of a dotted override (``--model.num_layers`` -> ``ov:model.num_layers``)."""


def add_overrides(p: argparse.ArgumentParser, prefixes: tuple[str, ...] | None = None) -> None:
    """A ``--section.field`` flag for every config field (those under ``prefixes`` only, if given)."""
    docs = field_docs()
    group = p.add_argument_group("config overrides (typed; see `pgolf config show`)")
    for key in all_fields():
        if key == "preset":  # informational; chosen with --preset
            continue
        if prefixes is None or key.startswith(prefixes):
            group.add_argument(f"--{key}", dest=f"{DEST}{key}", metavar="V", default=None, help=docs[key])


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The overrides given on the command line, by dotted key."""
    return {k[len(DEST) :]: v for k, v in vars(args).items() if k.startswith(DEST) and v is not None}


def pairs_to_overrides(pairs: list[str], option: str = "--set") -> dict[str, str]:
    """``KEY=VALUE`` strings (a benchmark's ``--set``) as overrides for ``apply_overrides``; a string
    without ``=`` is named in a ConfigError."""
    overrides = {}
    for kv in pairs:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            raise ConfigError(f"{option} {kv!r}: expected KEY=VALUE, e.g. train.microbatches=1")
        overrides[key] = value
    return overrides


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
