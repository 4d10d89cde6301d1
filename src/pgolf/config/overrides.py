"""Typed dotted overrides (``--model.num_layers 11``) and their ``--help`` text (tooling: the
bundled single file bakes a resolved config and never imports this)."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import itertools
import textwrap
import types
import typing
from functools import cache
from typing import Any

from pgolf.config.run import SECTIONS, RunConfig, all_fields
from pgolf.errors import ConfigError


def _owner(key: str) -> tuple[type, str]:
    section, _, name = key.rpartition(".")
    return (SECTIONS[section] if section else RunConfig), name


def field_type(key: str) -> type:
    cls, name = _owner(key)
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType):
        raise TypeError(f"unsupported union type for {key}")
    return hint


def parse_value(key: str, text: str) -> Any:
    """Parse ``text`` as the declared type of config field ``key``."""
    kind = field_type(key)
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text.replace("_", ""))
        if kind is float:
            return float(text)
        return kind(text)
    except ValueError:
        raise ConfigError(f"--{key}: expected {kind.__name__}, got {text!r}") from None


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return ``cfg`` with dotted keys replaced; string values are parsed as the field's type."""
    keys = all_fields()
    per_section: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
        if isinstance(value, str) and field_type(key) is not str:
            value = parse_value(key, value)
        section, _, name = key.rpartition(".")
        if section:
            per_section.setdefault(section, {})[name] = value
        else:
            top[name] = value
    for section, values in per_section.items():
        top[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **top)


@cache
def _class_field_docs(cls: type) -> dict[str, str]:
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
        cls, name = _owner(key)
        out[key] = _class_field_docs(cls).get(name, "")
    return out
