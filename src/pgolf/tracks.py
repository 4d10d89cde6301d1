"""Tracks: the caps a run is judged by (DESIGN.md, Tracks).

A run is *on track* only if its configured training cap is set and within the track's, its measured
training and evaluation times are within the track's, its artifact fits the byte cap, and its
evaluation read no validation targets. ``Track.judge`` is that verdict, the one every command prints
(train, eval, pack, check; plan and preflight before the first step). The ``debug`` track has no
caps at all: none is judged on it, and ``Track.official`` is false, so nothing run on it can stand
as a track result (records and checks refuse it). Whether a *score* is official (the artifact's own
validation data and window length) is a separate question, answered by
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

    def judge(
        self,
        *,
        train_cap_seconds: float | None = None,
        train_seconds: float | None = None,
        eval_seconds: float | None = None,
        total_bytes: int | None = None,
        val_leak: bool = False,
    ) -> list[str]:
        """The verdict of every command: reasons a run is off this track (empty: on track), on what is
        given (None: not judged). The configured training cap must be set and within the track's; the
        measured training and evaluation times and the bytes (artifact + code) within theirs (a cap of
        0 judges nothing); the evaluation must have read no validation targets (``eval.val_leak``: the
        official data is scored, never learned from; off on every track)."""
        reasons, train, evals, cap = [], self.train_seconds, self.eval_seconds, self.artifact_cap_bytes
        if train and train_cap_seconds is not None and not 0 < train_cap_seconds <= train:
            reasons.append(
                f"train.max_wallclock_seconds={train_cap_seconds:g} is not within the {self.name} track's "
                f"{train:g} s training cap"
            )
        if train and (train_seconds or 0) > train:
            reasons.append(f"training took {train_seconds:.2f} s, over the {train:g} s cap")
        if evals and (eval_seconds or 0) > evals:
            reasons.append(
                f"evaluation took {eval_seconds:.2f} s, over the {self.name} track's {evals:g} s cap"
            )
        if cap and (total_bytes or 0) > cap:
            reasons.append(
                f"artifact + code is {total_bytes:,} bytes, over the {self.name} track's {cap:,} byte cap "
                f"by {total_bytes - cap:,}"
            )
        if val_leak:
            reasons.append("val_leak: the evaluation read validation targets")
        return reasons


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
