"""Tracks: the caps a run is judged by (DESIGN.md, Tracks)."""

from __future__ import annotations

from dataclasses import dataclass


class ConfigError(ValueError):
    """A config value, key or combination is not acceptable; the message names the field."""


@dataclass(frozen=True, kw_only=True)
class Track:
    """The caps a run is judged by (DESIGN.md, Tracks)."""

    name: str
    hardware: str
    train_seconds: float
    eval_seconds: float
    artifact_cap_bytes: int


TRACKS: dict[str, Track] = {
    "10min-16mb": Track(
        name="10min-16mb",
        hardware="8xH100 SXM",
        train_seconds=600.0,
        eval_seconds=600.0,
        artifact_cap_bytes=16_000_000,
    ),
    "cpu-5min-2mb": Track(
        name="cpu-5min-2mb",
        hardware="2 CPU cores",
        train_seconds=300.0,
        eval_seconds=300.0,
        artifact_cap_bytes=2_000_000,
    ),
}


def get_track(name: str) -> Track:
    if name not in TRACKS:
        raise ConfigError(f"track: unknown track {name!r}; expected one of {sorted(TRACKS)}")
    return TRACKS[name]
