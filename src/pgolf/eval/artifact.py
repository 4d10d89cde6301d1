"""Scoring from the artifact alone: rebuild the model from the file, score it, judge it.

What ``pgolf eval`` runs and what a run's round trip runs. The official score uses the
validation data and window length recorded in the artifact; scoring another validation stream or
window length is allowed but labelled unofficial and never printed with the contest's final line;
a tokenizer other than the artifact's is refused. The verdict covers the whole run: the training
time and cap recorded in the artifact, this evaluation's time, and the bytes. Byte accounting
uses the code bytes recorded at training, with a warning when the installed counted code differs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pgolf import dist
from pgolf.config.data import DataConfig
from pgolf.config.eval import EvalConfig
from pgolf.data.valset import ValidationSet, load_validation
from pgolf.errors import ArtifactError, DataError
from pgolf.eval.run import run_method
from pgolf.eval.score import EvalClock, ScoreReport
from pgolf.model.gpt import GPT, loop_passes
from pgolf.model.kernels import resolve_attention
from pgolf.pack.format import read_artifact
from pgolf.pack.meta import ArtifactMeta
from pgolf.pack.size import SizeReport, sources_sha256
from pgolf.quant.export import dequantize_state_dict
from pgolf.tracks import get_track


@dataclass(frozen=True)
class LoadedArtifact:
    model: GPT
    meta: ArtifactMeta
    file_bytes: int
    attention: str = "auto"
    """The attention kernel the model runs on (``kernels.resolve_attention``)."""


def load_artifact(path: str | Path, device: torch.device, attention: str = "auto") -> LoadedArtifact:
    """Rebuild the model from the artifact alone: config and weights come from the file; attention runs
    on the kernel ``attention`` resolves to (``kernels.resolve_attention``)."""
    entries, raw_meta = read_artifact(path)
    meta = ArtifactMeta.from_dict(raw_meta, str(path))
    try:
        model = GPT(meta.model)
        model.load_state_dict(dequantize_state_dict(entries), strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: weights do not fit the model config stored in it ({e})") from None
    model.loop_passes = loop_passes(meta.looping, meta.model.loop_repeats)
    attention = resolve_attention(attention, device, meta.model.doc_mask)
    model.use_attention(attention)
    return LoadedArtifact(model.to(device), meta, Path(path).stat().st_size, attention)


def score_loaded(
    loaded: LoadedArtifact,
    valset: ValidationSet,
    eval_cfg: EvalConfig,
    device: torch.device,
    clock: EvalClock,
) -> ScoreReport:
    """Score a loaded artifact on ``valset`` with the method of ``eval_cfg`` (window plan, TTT,
    experts); it is the official score when every setting is the artifact's own and so is the data.
    TTT changes the loaded model's weights."""
    meta = loaded.meta
    if valset.tokenizer_sha256 != meta.tokenizer_sha256:
        raise DataError(
            f"{valset.tokenizer_path} is not the tokenizer the artifact was trained with (sha256 differs)"
        )
    r = run_method(loaded.model, valset, eval_cfg, device, clock)
    notes = []
    if valset.sha256 != meta.val_sha256:
        notes.append(
            f"validation tokens differ from the artifact's ({valset.tokens.numel()} vs {meta.val_tokens})"
        )
    if valset.unlisted:
        notes.append(
            f"{len(valset.unlisted)} scored shard(s) not in the dataset's manifest for this split, e.g. "
            f"{valset.unlisted[0]}"
        )
    if eval_cfg.seq_len != meta.eval.seq_len:
        notes.append(f"eval.seq_len {eval_cfg.seq_len} differs from the artifact's {meta.eval.seq_len}")
    if eval_cfg.tag != meta.eval.tag:
        notes.append(
            f"eval method {eval_cfg.tag or 'plain'} differs from the artifact's {meta.eval.tag or 'plain'}"
        )
    else:  # the same method label: name any other setting that differs (seq_len has its note)
        ours, theirs = eval_cfg.settings(), meta.eval.settings()
        changed = [k for k, v in ours.items() if k != "seq_len" and theirs[k] != v]
        if changed:
            notes.append(f"eval settings differ from the artifact's ({', '.join(changed)})")
    if subset := valset.first_docs(eval_cfg.val_docs).describe():
        notes.insert(0, f"validation subset: {subset} (eval.val_docs)")
    if eval_cfg.val_leak:
        notes.insert(0, "val_leak: the method reads validation targets (NOT compliant)")
    if valset.split == "dev":
        notes.insert(0, "data.score_split=dev: a dev score, not validation")
    label = f"{meta.label}_{eval_cfg.tag}" if eval_cfg.tag else meta.label
    details = {**r.details, **({"leak_bytes": r.leak_bytes} if r.leak_bytes else {})}
    return ScoreReport(
        r.result,
        dict(clock.phases),
        label,
        official=not notes,
        note="; ".join(notes),
        ledger=r.ledger,
        details=details,
        val_leak=eval_cfg.val_leak,
        split=valset.split,
    )


@dataclass(frozen=True)
class ArtifactEval:
    """``pgolf eval``'s report: the score, the bytes (with the code recorded at training), and the
    reasons the evaluation is off its track, if any."""

    path: Path
    meta: ArtifactMeta
    score: ScoreReport
    size: SizeReport
    code_changed: bool
    off_track: list[str]

    def to_dict(self) -> dict:
        return {
            "artifact": str(self.path),
            "preset": self.meta.preset,
            "track": self.meta.track,
            **self.score.to_dict(),
            **self.size.to_dict(),
            "code_form": self.meta.code_form,
            "code_sha256": self.meta.code_sha256,
            "sources_sha256": self.meta.sources_sha256,
            "code_changed_since_training": self.code_changed,
            "on_track": not self.off_track,
            "off_track": self.off_track,
        }


def evaluate_artifact(
    path: str | Path,
    *,
    data: DataConfig | None = None,
    eval_cfg: EvalConfig | None = None,
    device: str = "auto",
    echo: Callable[[str], None] | None = None,
) -> ArtifactEval:
    """Score an artifact with the data and eval settings recorded in it, or with the ones given;
    ``echo`` receives the early projection of the evaluation's total time."""
    info = dist.setup(device)
    clock = EvalClock(dist.synchronizer(info.device), echo=echo)
    with clock.phase("load"):
        loaded = load_artifact(path, info.device)
    meta = loaded.meta
    if echo is not None:
        echo(f"attention:{loaded.attention} device:{info.device}")
    clock.cap_s = get_track(meta.track).eval_seconds
    valset = load_validation(data or meta.data, meta.model.vocab_size)
    if eval_cfg is not None and not eval_cfg.seq_len:  # 0 means the length the artifact was scored at
        eval_cfg = dataclasses.replace(eval_cfg, seq_len=meta.eval.seq_len)
    report = score_loaded(loaded, valset, eval_cfg or meta.eval, info.device, clock)
    track = get_track(meta.track)
    changed = sources_sha256(meta.eval.plugin_modules) != meta.sources_sha256
    leak = report.details.get("leak_bytes", 0)  # a correction table would ship in the artifact
    size = SizeReport(loaded.file_bytes + leak, meta.code_bytes, track.artifact_cap_bytes)  # recorded code
    off = track.judge(
        train_cap_seconds=meta.train_cap_seconds,
        train_seconds=meta.train_seconds,
        eval_seconds=report.seconds,
        total_bytes=size.total_bytes,
        val_leak=report.val_leak,
    )
    return ArtifactEval(Path(path), meta, report, size, changed, off)
