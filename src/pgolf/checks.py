"""Checks shared by the config schemas; each names the field as ``section.field``."""

from __future__ import annotations

from typing import Any

from pgolf.errors import ConfigError


def positive(obj: Any, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:  # also refuses NaN
            raise ConfigError(f"{obj.SECTION}.{name} must be > 0, got {getattr(obj, name)}")


def non_negative(obj: Any, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) >= 0:  # also refuses NaN
            raise ConfigError(f"{obj.SECTION}.{name} must be >= 0, got {getattr(obj, name)}")
