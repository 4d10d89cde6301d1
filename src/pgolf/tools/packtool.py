"""``pgolf pack`` and ``pgolf inspect`` (tooling): re-pack a finished run under another quantisation
and packing policy without retraining, search the policy ladder for one that fits the cap, and
take an artifact apart tensor by tensor."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pgolf import dist
from pgolf.config.model import ModelConfig
from pgolf.config.run import RunConfig, apply_overrides, config_from_dict
from pgolf.data.loader import DistributedTokenLoader
from pgolf.data.valset import ValidationSet, load_validation, train_files
from pgolf.errors import ConfigError, DataError
from pgolf.eval.artifact import load_artifact, score_loaded
from pgolf.eval.bpb import BpbResult
from pgolf.eval.score import EvalClock
from pgolf.model.gpt import GPT, loop_passes
from pgolf.model.params import param_roles
from pgolf.pack.bundle import code_account
from pgolf.pack.format import decode, encode, pack_spec, read_artifact, read_sections, section_name
from pgolf.pack.meta import ArtifactMeta
from pgolf.pack.size import SizeReport
from pgolf.pipeline import WEIGHTS_NAME, artifact_meta, export_model
from pgolf.quant.export import quantize_state_dict
from pgolf.runlog import RunLog
from pgolf.tracks import get_track
from pgolf.train.calibration import calibrate
from pgolf.train.clock import TrainClock


@dataclass(frozen=True)
class RunWeights:
    config: RunConfig
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]


WEIGHTS_KEYS = ("config", "steps", "looping", "train_seconds", "pre_quant_val_bpb")


def load_run(run_dir: Path) -> RunWeights:
    path = Path(run_dir) / WEIGHTS_NAME
    if not path.is_file():
        raise DataError(
            f"{path}: not found; re-packing needs the float weights that pgolf train writes there"
        )
    entries, meta = read_artifact(path)
    missing = [k for k in WEIGHTS_KEYS if k not in meta]
    if missing:
        raise DataError(f"{path}: not a run's weights file (missing {missing})")
    try:
        cfg = config_from_dict(meta["config"])
        state = {k: e.data.to(e.orig_dtype) for k, e in entries.items()}
    except (KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: not a run's weights file ({e})") from None
    if "calibration_seconds" not in meta:  # written before it was recorded: known only without GPTQ
        if cfg.quant.calibrates:
            raise DataError(f"{path}: a GPTQ run written before calibration time was recorded; retrain")
        meta = {**meta, "calibration_seconds": 0.0}
    return RunWeights(cfg, state, meta)


TRAINING_ONLY = ("quant.qat", "quant.qat_from_frac", "quant.gptq_reserve_seconds")
"""Settings that act during training: a re-pack cannot change them (its meta would claim them)."""


def model_roles(cfg: ModelConfig) -> dict[str, str]:
    """``param_roles`` of the model ``cfg`` describes, for weights held by name only (a run's weights
    file, an artifact): built on the meta device, no weights made."""
    with torch.device("meta"):
        return param_roles(GPT(cfg))


def with_policy(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """``cfg`` with quant.* and pack.* overrides; anything else would need retraining."""
    other = sorted(k for k in overrides if not k.startswith(("quant.", "pack.")) or k in TRAINING_ONLY)
    if other:
        raise ConfigError(f"re-packing changes only export-time quant.* and pack.* settings, not {other}")
    return apply_overrides(cfg, overrides)


@dataclass(frozen=True)
class RepackReport:
    path: Path
    label: str
    params: int
    size: SizeReport
    pre_quant_bpb: float
    roundtrip: BpbResult | None
    pack_seconds: float
    unpack_seconds: float
    calibration_seconds: float
    off_track: list[str]
    fisher_predicted_gap: float | None = None
    """The Fisher allocation's own estimate of the loss increase (nats per token), where it ran."""
    split: str = "val"
    """What the round trip scored: the run's ``data.score_split`` (``dev``: never official)."""

    @property
    def bits_per_param(self) -> float:
        return 8 * self.size.model_bytes / self.params

    def to_dict(self) -> dict:
        rt = self.roundtrip
        return {
            "artifact": str(self.path),
            "scheme": self.label,
            "params": self.params,
            **self.size.to_dict(),
            "bits_per_param": round(self.bits_per_param, 4),
            "pre_quant_val_bpb": self.pre_quant_bpb,
            "val_bpb": rt.val_bpb if rt else None,
            "val_loss": rt.val_loss if rt else None,
            "quant_gap_bpb": rt.val_bpb - self.pre_quant_bpb if rt else None,
            "pack_seconds": round(self.pack_seconds, 3),
            "unpack_seconds": round(self.unpack_seconds, 3),
            "calibration_seconds": round(self.calibration_seconds, 3),
            "off_track": self.off_track,
            "fisher_predicted_gap_nats": self.fisher_predicted_gap,
            "split": self.split,
        }


def _calibration_batches(cfg: RunConfig, device: torch.device, valset: ValidationSet):
    """The first (inputs, targets) micro-batches of the training stream, in one process. The run's own
    calibration read on from where its training stopped, on every rank, under bf16 on a GPU: a GPTQ or
    Fisher re-pack is not the run's artifact bit for bit."""
    files = train_files(cfg.data, valset)
    loader = DistributedTokenLoader(
        files, rank=0, world_size=1, vocab_size=cfg.model.vocab_size, device=device, kind=cfg.train.loader
    )
    local = cfg.train.batch_tokens // cfg.train.microbatches
    return iter(lambda: loader.next_batch(local, cfg.train.seq_len), None)


def repack(
    run_dir: Path, overrides: dict[str, Any], out: Path | None = None, score: bool = True
) -> RepackReport:
    """Write ``run_dir``'s weights as an artifact under the given policy, read it back and score it.
    GPTQ calibration reads training data, so its time is added to the run's training time."""
    run = load_run(run_dir)
    cfg = with_policy(run.config, overrides)
    device = dist.setup("cpu").device
    model = GPT(cfg.model)
    model.load_state_dict(run.state)
    model.loop_passes = loop_passes(run.meta["looping"], cfg.model.loop_repeats)
    valset = load_validation(cfg.data, cfg.model.vocab_size)
    calib, calib_s = None, 0.0
    if cfg.quant.calibrates:  # the training path's calibration, on a clock of its own
        batches = _calibration_batches(cfg, device, valset)
        calib, ms = calibrate(
            model, cfg.quant, batches, TrainClock(0.0, lambda: None), device, RunLog(None, enabled=False)
        )
        calib_s = ms / 1000
    # the run's steps, plus this re-pack's calibration in place of the run's own (never both)
    steps_seconds = float(run.meta["train_seconds"]) - float(run.meta["calibration_seconds"])
    meta = artifact_meta(
        cfg,
        valset,
        steps=int(run.meta["steps"]),
        looping=model.loop_passes,
        train_seconds=steps_seconds + calib_s,
    )
    path = Path(out) if out else Path(run_dir) / f"artifact-{meta.label}.pgolf"
    started = time.perf_counter()
    stats = export_model(model, cfg, meta, path, calib)
    pack_s = time.perf_counter() - started
    started = time.perf_counter()
    loaded = load_artifact(path, device)
    unpack_s = time.perf_counter() - started
    track = get_track(cfg.track)
    size = SizeReport(path.stat().st_size, meta.code_bytes, track.artifact_cap_bytes)
    # the window plan alone: comparable with the pre-quant score (an adapting method would count
    # its own gain as negative quantisation error)
    # ... on the documents the run's pre-quant score read (eval.val_docs: a subset, unofficial)
    plan = dataclasses.replace(meta.eval.windows_only, val_docs=cfg.eval.val_docs)
    rt = score_loaded(loaded, valset, plan, device, EvalClock()).result if score else None
    off = track.judge(  # no evaluation is timed here: the round trip is the window plan alone
        train_cap_seconds=meta.train_cap_seconds,
        train_seconds=meta.train_seconds,
        total_bytes=size.total_bytes,
    )
    params = sum(t.numel() for t in run.state.values())
    pre = float(run.meta["pre_quant_val_bpb"])
    return RepackReport(
        path,
        meta.label,
        params,
        size,
        pre,
        rt,
        pack_s,
        unpack_s,
        calib_s,
        off,
        stats.fisher_predicted_gap,
        valset.split,
    )


FIT_LADDER: list[tuple[str, dict[str, str]]] = [
    ("as configured", {}),
    ("best codec and byte transform per section", {"pack.compressor": "auto", "pack.transform": "auto"}),
    (
        "+ int6 matrices, SDClip k=12.85",
        {"quant.matrix": "int6", "quant.mlp": "", "quant.clip": "sdclip", "quant.clip_k": "12.85"},
    ),
    ("+ SDClip k=16", {"quant.clip_k": "16"}),
    ("+ SDClip k=20", {"quant.clip_k": "20"}),
    ("+ SDClip k=24", {"quant.clip_k": "24"}),
    ("+ embeddings pgolf int8, k=20", {"quant.embed": "int8", "quant.embed_clip_k": "20"}),
]
"""Cumulative policy changes in the order of their measured cost on a trained model (gap with GPTQ:
int6 k=12.85 +0.0047, k=16 +0.0059, k=20 +0.0101; the embedding step +0.05: benchmarks/RESULTS.md).
Sizes are round-to-nearest's; GPTQ moves them by under 1% (measured) and is what keeps the gaps
small, so a run should train with quant.gptq on once its policy is chosen."""


FIT_NOTE = (
    "sizes are estimates: round-to-nearest quantisation (GPTQ moves them by under 1%) with a stand-in "
    "meta of about the real one's size; a step within 1% of the cap may land on either side: re-pack "
    "with its flags (pgolf pack RUN --quant...) for the exact bytes"
)


def fit_ladder(run_dir: Path, overrides: dict[str, Any]) -> list[tuple[str, SizeReport]]:
    """Estimated total bytes of each cumulative step of FIT_LADDER (``FIT_NOTE``: the artifact is
    encoded, but round-to-nearest and with a stand-in meta; no scoring)."""
    run = load_run(run_dir)
    cfg = with_policy(run.config, overrides)
    if cfg.quant.alloc == "fisher":
        raise ConfigError(
            "pgolf pack --fit sizes round-to-nearest role grids; the Fisher allocation needs calibration: "
            "re-pack at two or three --quant.fisher_step values instead"
        )
    cap, code = get_track(cfg.track).artifact_cap_bytes, code_account(cfg).bytes
    rows, applied, roles = [], dict(overrides), model_roles(cfg.model)
    for name, change in FIT_LADDER:
        applied |= change
        step_cfg = with_policy(run.config, applied)
        entries, _ = quantize_state_dict(run.state, roles, step_cfg.quant)
        meta = {"config": step_cfg.to_dict(), "digests": "0" * 400}  # about the real meta's size
        rows.append((name, SizeReport(len(encode(entries, meta, pack_spec(step_cfg.pack))), code, cap)))
    return rows


def inspect_rows(path: Path) -> tuple[list[dict], list[dict], dict]:
    """(per-tensor rows, per-section rows, meta) of an artifact. A tensor's compressed bytes are its
    share of its section's, in proportion to its raw bytes (sections compress as a whole)."""
    data = Path(path).read_bytes()
    sections = read_sections(data, str(path))
    entries, meta = decode(data, str(path))
    ratio = {s.name: s.stored_bytes / max(s.raw_bytes, 1) for s, _ in sections}
    rows, roles = [], model_roles(ArtifactMeta.from_dict(meta, str(path)).model)
    for name, e in entries.items():
        parts = {"data": e.data} | ({"scale": e.scale} if e.scale is not None else {})
        raw = {p: t.numel() * t.element_size() for p, t in parts.items()}
        stored = sum(n * ratio[section_name(e, p)] for p, n in raw.items())
        bits = {"fp32": 32, "fp16": 16, "int8-contest": 8, "exact": 8 * e.data.element_size()}.get(e.fmt)
        rows.append(
            {
                "name": name,
                "role": roles[name],
                "format": e.fmt,
                "bits": bits or int(e.fmt.removeprefix("int")),
                "params": e.data.numel(),
                "raw_bytes": sum(raw.values()),
                "compressed_bytes": round(stored),
            }
        )
    sec_rows = [
        {
            "section": s.name,
            "codec": s.codec,
            "transform": s.transform,
            "raw_bytes": s.raw_bytes,
            "stored_bytes": s.stored_bytes,
        }
        for s, _ in sections
    ]
    return rows, sec_rows, meta
