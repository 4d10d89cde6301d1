"""Calibration at the end of training, on the training clock (the contest counted every read of
training data, Hessian collection included, inside the 600 s; sota-stack §3.2): GPTQ's Hessians
(``quant.gptq``) and the Fisher allocation's row sensitivities (``quant.alloc=fisher``), both from
training batches. The GPTQ solve and the allocation themselves are post-training compute, like the
export."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from pgolf import dist
from pgolf.config.quant import QuantConfig
from pgolf.model.params import param_roles
from pgolf.quant.fisher import collect_sensitivities, row_counts
from pgolf.quant.gptq import collect_hessians
from pgolf.quant.policy import grid_spec
from pgolf.runlog import RunLog, Ticker
from pgolf.train.clock import TrainClock


@dataclass
class Calibration:
    hessians: dict[str, torch.Tensor] | None = None
    """GPTQ's input second moments per weight name (None without quant.gptq)."""
    sensitivities: dict[str, torch.Tensor] | None = None
    """Row sensitivities per weight name (None without quant.alloc=fisher)."""
    tokens: int = 0
    """Tokens the sensitivities were summed over, on every rank."""


def lookup_counts(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> dict[str, torch.Tensor]:
    """Lookups per row of each embedding table over ``batches`` (their input ids only, no forward):
    the token and value embeddings' by token, BigramHash's by bucket; summed over ranks (float64)."""
    identity = lambda x: x  # noqa: E731
    tables = {"tok_emb.weight": (model.tok_emb.num_embeddings, identity)}
    if getattr(model, "value_embed", None) is not None:
        tables["value_embed.embed.weight"] = (model.value_embed.embed.num_embeddings, identity)
    if getattr(model, "bigram", None) is not None:
        tables["bigram.embed.weight"] = (model.bigram.buckets, model.bigram.bucket_ids)
    counts = {n: torch.zeros(rows, dtype=torch.float64, device=device) for n, (rows, _) in tables.items()}
    for x, _ in batches:
        for name, (rows, index) in tables.items():
            counts[name] += row_counts(index(x), rows)
    for name in sorted(counts):
        dist.all_reduce_sum_(counts[name])
    return counts


def calibrate(
    model: nn.Module,
    cfg: QuantConfig,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    clock: TrainClock,
    device: torch.device,
    log: RunLog,
) -> tuple[Calibration, float]:
    """The calibration ``cfg`` asks for, from (inputs, targets) ``batches`` (``cfg.gptq_batches`` for
    the Hessians, then ``cfg.fisher_batches`` for the sensitivities), and the training time after it.
    ``model`` must be the eager module: hooks added after torch.compile may not fire inside its graph."""
    roles = param_roles(model)
    names = {n for n, t in model.state_dict().items() if t.ndim == 2 and grid_spec(n, t, roles[n], cfg)}
    out, parts = Calibration(), []
    with dist.autocast_for(device):
        if cfg.gptq:
            ids = (x for x, _ in itertools.islice(batches, cfg.gptq_batches))
            tick = Ticker(log.line, "gptq_calibration", cfg.gptq_batches)  # a line per ~30 s, if that long
            out.hessians = collect_hessians(model, names, tick.over(ids))
            parts.append(f"gptq_calibration batches:{cfg.gptq_batches} matrices:{len(out.hessians)}")
        if cfg.alloc == "fisher":
            taken = list(itertools.islice(batches, cfg.fisher_batches))
            counted = itertools.chain(taken, itertools.islice(batches, cfg.fisher_count_batches))
            counts = lookup_counts(model, counted, device)
            tick = Ticker(log.line, "fisher_calibration", cfg.fisher_batches)
            out.sensitivities = collect_sensitivities(model, names, tick.over(taken), counts)
            out.tokens = sum(y.numel() for _, y in taken) * dist.world_size()
            tokens = int(counts["tok_emb.weight"].sum())
            parts.append(
                f"fisher_calibration batches:{cfg.fisher_batches} counted:{tokens} "
                f"tensors:{len(out.sensitivities)}"
            )
    train_ms = clock.stop()
    line = f"{' '.join(parts)} train_time:{train_ms:.0f}ms"
    log.event(
        "calibration",
        line,
        gptq_batches=cfg.gptq_batches if cfg.gptq else 0,
        fisher_batches=cfg.fisher_batches if cfg.alloc == "fisher" else 0,
        train_time_ms=round(train_ms, 1),
    )
    return out, train_ms
