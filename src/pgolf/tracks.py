"""Tracks: the caps a run is judged by (DESIGN.md, Tracks).

A run is *on track* only if its configured training cap is set and within the track's, its measured
training and evaluation times are within the track's, and its artifact fits the byte cap. The
``debug`` track has no caps at all: nothing is judged on it, and ``Track.official`` is false, so
nothing run on it can stand as a track result (records and checks refuse it). Whether a *score* is
official (the artifact's own validation data and window length) is a separate question, answered by
``eval.score.ScoreReport.official`` on any track.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgolf.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Track:
    name: str
    hardware: str
    train_seconds: float
    """Training-time cap in seconds; 0: uncapped (debug only)."""
    eval_seconds: float
    """Evaluation-time cap in seconds; 0: uncapped (debug only)."""
    artifact_cap_bytes: int
    """Cap on artifact file + counted code bytes (decimal); 0: uncapped (debug only)."""

    @property
    def official(self) -> bool:
        return bool(self.train_seconds and self.eval_seconds and self.artifact_cap_bytes)

    def judge_train(self, configured_seconds: float, measured_seconds: float) -> list[str]:
        """Reasons a training run is off this track (empty: on track)."""
        if not self.train_seconds:
            return []
        reasons = []
        if not configured_seconds or configured_seconds > self.train_seconds:
            reasons.append(
                f"train.max_wallclock_seconds={configured_seconds:g} is not within the {self.name} track's "
                f"{self.train_seconds:g} s training cap"
            )
        if measured_seconds > self.train_seconds:
            reasons.append(f"training took {measured_seconds:.2f} s, over the {self.train_seconds:g} s cap")
        return reasons

    def judge_eval(self, seconds: float) -> list[str]:
        if self.eval_seconds and seconds > self.eval_seconds:
            return [
                f"evaluation took {seconds:.2f} s, over the {self.name} track's {self.eval_seconds:g} s cap"
            ]
        return []

    def judge_bytes(self, total_bytes: int) -> list[str]:
        if self.artifact_cap_bytes and total_bytes > self.artifact_cap_bytes:
            return [
                f"artifact + code is {total_bytes:,} bytes, over the {self.name} track's "
                f"{self.artifact_cap_bytes:,} byte cap by {total_bytes - self.artifact_cap_bytes:,}"
            ]
        return []


CONTEST = "10min-16mb"
"""The contest's track: paid 8xH100 time, where nothing optional runs by default."""

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
    "debug": Track(name="debug", hardware="any", train_seconds=0.0, eval_seconds=0.0, artifact_cap_bytes=0),
}


def get_track(name: str) -> Track:
    if name not in TRACKS:
        raise ConfigError(f"track: unknown track {name!r}; expected one of {sorted(TRACKS)}")
    return TRACKS[name]
