"""GPTQ calibration at the end of training: Hessians from training batches, on the training clock
(the contest counted every read of training data, Hessian collection included, inside the 600 s;
sota-stack §3.2). The GPTQ solve itself is post-training compute, like the export."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import nn

from pgolf import dist
from pgolf.config.quant import QuantConfig
from pgolf.quant.gptq import collect_hessians
from pgolf.quant.policy import grid_spec
from pgolf.runlog import RunLog
from pgolf.train.clock import TrainClock


def calibrate(
    model: nn.Module, cfg: QuantConfig, batches: Iterator[torch.Tensor], clock: TrainClock,
    device: torch.device, log: RunLog,
) -> tuple[dict[str, torch.Tensor], float]:  # fmt: skip
    """Hessians of every grid-quantised matrix from ``cfg.gptq_batches`` of ``batches``, and the
    training time after them. ``model`` must be the eager module: hooks added after torch.compile
    may not fire inside its graph."""
    names = {n for n, t in model.state_dict().items() if t.ndim == 2 and grid_spec(n, t, cfg)}
    with dist.autocast_for(device):
        hessians = collect_hessians(model, names, itertools.islice(batches, cfg.gptq_batches))
    train_ms = clock.stop()
    line = f"gptq_calibration batches:{cfg.gptq_batches} matrices:{len(hessians)} train_time:{train_ms:.0f}ms"
    log.event("gptq", line, batches=cfg.gptq_batches, train_time_ms=round(train_ms, 1))
    return hessians, train_ms
