"""val_bpb over the validation shards (seed-techniques §3.3): non-overlapping windows.

The concatenated validation tokens (M of them) are trimmed to floor((M-1)/T)*T + 1 and cut into
length-T windows; window i predicts tokens [iT+1, (i+1)T]. Every target in the trimmed stream is
scored exactly once. Ranks take contiguous ranges of windows and all-reduce the float64 sums.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgolf import dist
from pgolf.artifact import ArtifactError, SizeReport, code_bytes, read_artifact
from pgolf.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    apply_overrides,
    get_track,
)
from pgolf.data.paths import load_tokenizer, resolve_data
from pgolf.data.shards import ShardError, find_shards, read_shard
from pgolf.fileio import file_sha256
from pgolf.metric import BpbAccumulator, BpbResult, ByteLUT, build_byte_lut
from pgolf.model import GPT
from pgolf.quant import dequantize


def load_val_tokens(files: list[Path], seq_len: int, vocab_size: int) -> torch.Tensor:
    """Concatenated validation tokens trimmed to a whole number of windows plus one, int64."""
    tokens = np.concatenate([np.asarray(read_shard(f)) for f in files])
    usable = (len(tokens) - 1) // seq_len * seq_len
    if usable <= 0:
        raise ShardError(
            f"validation data ({len(tokens)} tokens in {[str(f) for f in files]}) is shorter than one "
            f"window of seq_len={seq_len} + 1"
        )
    if int(tokens.max()) >= vocab_size:
        raise ShardError(
            f"validation token id {int(tokens.max())} >= model.vocab_size={vocab_size} "
            "(tokenizer and model vocabularies do not match)"
        )
    return torch.from_numpy(tokens[: usable + 1].astype(np.int64))


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    val_tokens: torch.Tensor,
    lut: ByteLUT,
    *,
    seq_len: int,
    batch_tokens: int,
    device: torch.device,
) -> BpbResult:
    """Score every target of ``val_tokens`` once; returns the summed NLL, tokens and bytes."""
    was_training = model.training
    model.eval()
    n_windows = (val_tokens.numel() - 1) // seq_len
    world, rank = dist.world_size(), dist.rank()
    first, last = n_windows * rank // world, n_windows * (rank + 1) // world
    per_batch = max(1, batch_tokens // (seq_len * world))
    acc = BpbAccumulator(device)
    lut = lut.to(device)
    for start in range(first, last, per_batch):
        end = min(start + per_batch, last)
        chunk = val_tokens[start * seq_len : end * seq_len + 1].to(device, non_blocking=True)
        x, y = chunk[:-1].view(-1, seq_len), chunk[1:].view(-1, seq_len)
        with autocast_for(device):
            nll = model(x, y, reduction="none")
        acc.add(nll, lut.target_bytes(x, y))
    dist.all_reduce_sum_(acc.sums)
    model.train(was_training)
    return acc.result()


@dataclass(frozen=True)
class LoadedArtifact:
    model: GPT
    meta: dict
    load_seconds: float


def load_model_from_artifact(path: str | Path, device: torch.device) -> LoadedArtifact:
    """Rebuild the model from the artifact alone: config and weights come from the file."""
    started = time.perf_counter()
    entries, meta = read_artifact(path)
    try:
        model = GPT(ModelConfig(**meta["model"]))
        model.load_state_dict(dequantize(entries), strict=True)
        model.looping = bool(meta.get("looping", False))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: weights do not fit the model config stored in it ({e})") from None
    return LoadedArtifact(model.to(device), meta, time.perf_counter() - started)


def evaluate_artifact(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``pgolf eval``: score an artifact with the data and eval settings it was trained with
    (``data.*``, ``eval.*`` and ``train.device`` may be overridden)."""
    overrides = dict(overrides or {})
    _, meta = read_artifact(path)
    info = dist.setup(overrides.pop("train.device", "auto"))
    try:
        data_cfg = DataConfig(**meta["data"])
        eval_cfg = EvalConfig(**meta["eval"])
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"{path}: metadata lacks data/eval settings ({e})") from None
    if overrides:
        cfg = apply_overrides(RunConfig(data=data_cfg, eval=eval_cfg), overrides)
        data_cfg, eval_cfg = cfg.data, cfg.eval
    paths = resolve_data(data_cfg)
    sp = load_tokenizer(paths.tokenizer, meta["model"]["vocab_size"])
    if file_sha256(paths.tokenizer) != meta.get("tokenizer_sha256"):
        raise ConfigError(f"{paths.tokenizer} is not the tokenizer {path} was trained with (sha256 differs)")
    seq_len = eval_cfg.seq_len
    val = load_val_tokens(
        find_shards(paths.dataset_dir, data_cfg.val_pattern), seq_len, meta["model"]["vocab_size"]
    )
    loaded = load_model_from_artifact(path, info.device)
    started = time.perf_counter()
    r = evaluate(
        loaded.model,
        val,
        build_byte_lut(sp, meta["model"]["vocab_size"]),
        seq_len=seq_len,
        batch_tokens=eval_cfg.batch_tokens,
        device=info.device,
    )
    seconds = time.perf_counter() - started
    size = SizeReport(Path(path).stat().st_size, code_bytes(), get_track(meta["track"]).artifact_cap_bytes)
    return {
        "artifact": str(path),
        "val_loss": r.val_loss,
        "val_bpb": r.val_bpb,
        "val_tokens": r.tokens,
        "val_bytes": r.bytes,
        "eval_seconds": seconds,
        "load_seconds": loaded.load_seconds,
        "bytes_model": size.model_bytes,
        "bytes_code": size.code_bytes,
        "bytes_total": size.total_bytes,
        "bytes_cap": size.cap_bytes,
        "fits_cap": size.fits,
        "track": meta["track"],
    }
