"""User config files: a base preset plus overrides, in TOML (tooling: nothing counted reads them;
a run's own config is baked into its bundled file).

    # my_idea.toml
    preset = "baseline-cpu"        # the base: a preset name, or another config file

    [model]
    num_layers = 4
    model_dim = 224

    [train]
    seq_len = 256

Top-level keys other than ``preset`` (``track``) and sections named after the config's sections
(``model``, ``train``, ...) are overrides, checked and typed exactly like ``--model.num_layers 4``.
Wherever pgolf takes a preset name it takes such a file's path too (``--preset my_idea.toml``,
``pgolf train --config my_idea.toml``); the run records the file's name (``my_idea``) as its
preset: the bundled file bakes it in, and run folders are named after it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from pgolf.config.run import SECTIONS, RunConfig, all_fields, apply_overrides
from pgolf.errors import ConfigError
from pgolf.fileio import write_bytes_atomic

MAX_DEPTH = 8
"""A config file's base may be another file; this many levels at most (a cycle stops here)."""


def is_config_file(name: str) -> bool:
    return name.endswith(".toml") or Path(name).is_file()


DATA_ROOT_ENV = "PGOLF_DATA_ROOT"


def resolve(name: str) -> RunConfig:
    """The config of a preset name or of a config file's path. Where it leaves ``data.root`` empty,
    $PGOLF_DATA_ROOT fills it, made absolute, so that a run records where its data was (``pgolf
    check`` reads the data from there); ``--data.root`` still overrides it."""
    cfg = _resolve(name)
    if not cfg.data.root and os.environ.get(DATA_ROOT_ENV):
        root = str(Path(os.environ[DATA_ROOT_ENV]).resolve())
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=root))
    return cfg


def _resolve(name: str, _depth: int = 0) -> RunConfig:
    from pgolf.tools.presets import get_preset

    if not is_config_file(name):
        return get_preset(name)
    if _depth >= MAX_DEPTH:
        raise ConfigError(f"{name}: config files nest more than {MAX_DEPTH} deep (a cycle?)")
    path = Path(name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    base = data.pop("preset", None)
    if not isinstance(base, str):
        raise ConfigError(f'{path}: needs a top-level `preset = "NAME"` (a preset or another config file)')
    if is_config_file(base) and not Path(base).is_absolute():
        base = str(path.parent / base)
    cfg = _resolve(base, _depth + 1)
    try:
        cfg = apply_overrides(cfg, _flatten(data, path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return dataclasses.replace(cfg, preset=path.stem)


def _flatten(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Dotted keys with TOML scalars as text, so they are parsed and checked as flags are."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in SECTIONS:
                raise ConfigError(f"{path}: unknown section [{key}]; expected one of {sorted(SECTIONS)}")
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    for key, value in out.items():
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: {key} must be a single value, got {type(value).__name__}")
        out[key] = as_flag(value)
    return out


def as_flag(value: Any) -> str:
    """A TOML or Python scalar as the text of its dotted flag (``true``, ``3``, ``0.02``, ``auto``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def differences(cfg: RunConfig, base: RunConfig) -> dict[str, Any]:
    """Dotted key -> value of every field where ``cfg`` differs from ``base`` (``preset`` aside)."""
    out = {}
    for key in all_fields():
        if key == "preset":
            continue
        section, _, name = key.rpartition(".")
        mine = getattr(getattr(cfg, section) if section else cfg, name)
        theirs = getattr(getattr(base, section) if section else base, name)
        if mine != theirs:
            out[key] = mine
    return out


def write_config_file(cfg: RunConfig, path: Path, base: str, comment: str = "") -> dict[str, Any]:
    """Write ``cfg`` as ``base`` plus the fields where it differs; returns those fields. Reading the
    file back gives ``cfg`` (its preset field aside)."""
    if is_config_file(base) and Path(base).resolve() == Path(path).resolve():
        raise ConfigError(f"{path} would be its own base: save the config to another file")
    diff = differences(cfg, resolve(base))
    if is_config_file(base):  # a file names its base relative to itself, so a tree of them can move
        base = os.path.relpath(Path(base).resolve(), Path(path).resolve().parent)
    lines = [f"# {line}" for line in comment.splitlines()] + [f"preset = {_toml_value(base)}"]
    top = {k: v for k, v in diff.items() if "." not in k}
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for section in SECTIONS:
        keys = {k.split(".", 1)[1]: v for k, v in diff.items() if k.startswith(section + ".")}
        if keys:
            lines += ["", f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in keys.items())]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return diff
