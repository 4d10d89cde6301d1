"""The one result schema of a run: training figures, the round-trip score (``ScoreReport``), the
bytes (``SizeReport``) and the track verdict. ``result.json`` is ``RunResult.to_dict()``; ``pgolf
eval`` prints the same score and size keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pgolf.config.run import RunConfig
from pgolf.eval.bpb import BpbResult
from pgolf.eval.score import ScoreReport
from pgolf.pack.size import SizeReport
from pgolf.tracks import get_track


@dataclass
class RunResult:
    config: RunConfig
    out_dir: Path
    steps: int
    train_seconds: float
    tokens_seen: int
    stopped_by: str
    num_params: int
    pre_quant: BpbResult
    score: ScoreReport
    """The round trip: the artifact read back from disk and scored; the reported score."""
    artifact_path: Path
    size: SizeReport
    off_track: list[str]
    """Why the run is off its track (empty: on track)."""
    code_sha256: str
    started_at: float = 0.0
    """Unix time the run started (``pgolf check``: seeds must be declared before it)."""
    history: list[dict] = field(default_factory=list)
    windows_roundtrip: BpbResult | None = None
    """When the method adapts: the round trip scored with its window plan alone (diagnostic)."""
    peak_memory: dict[str, dict] = field(default_factory=dict)
    """Peak memory per phase (train, calibration, eval), MiB (``dist.peak_memory``)."""

    @property
    def roundtrip(self) -> BpbResult:
        return self.score.result

    @property
    def quant_gap_bpb(self) -> float | None:
        """Round trip minus pre-quant val_bpb, both with the same window plan and nothing adapting (None
        when the method adapts and the windows-only pass was not run: train.windows_diagnostic)."""
        if self.config.eval.adapts and self.windows_roundtrip is None:
            return None
        return (self.windows_roundtrip or self.roundtrip).val_bpb - self.pre_quant.val_bpb

    @property
    def on_track(self) -> bool:
        return not self.off_track

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "preset": self.config.preset,
            "track": self.config.track,
            "steps": self.steps,
            "train_seconds": round(self.train_seconds, 3),
            "tokens_seen": self.tokens_seen,
            "tokens_per_second": round(self.tokens_per_second, 1),
            "stopped_by": self.stopped_by,
            "num_params": self.num_params,
            "pre_quant_val_loss": self.pre_quant.val_loss,
            "pre_quant_val_bpb": self.pre_quant.val_bpb,
            **self.score.to_dict(),
            **(
                {"windows_roundtrip_val_bpb": self.windows_roundtrip.val_bpb}
                if self.windows_roundtrip
                else {}
            ),
            "quant_gap_bpb": self.quant_gap_bpb,
            **self.size.to_dict(),
            "track_official": get_track(self.config.track).official,
            "on_track": self.on_track,
            "off_track": self.off_track,
            "code_sha256": self.code_sha256,
            "peak_memory": self.peak_memory,
            "started_at": self.started_at,
            "config": self.config.to_dict(),
        }
