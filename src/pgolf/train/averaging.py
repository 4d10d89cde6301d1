"""Weight averaging applied to the exported weights (seed-techniques §8): one mode per run.

* ``ema``: after every optimizer step, ema <- d * ema + (1 - d) * w, from the weights at the start
  of timed training (after priming, as records 2026-03-20 do).
* ``swa``: after step s, if lr_mul < swa_start_lr_mul and s % swa_every == 0, add w to a sum;
  at the end load sum / count when count >= 2 (PR162's rule). The start is tied to the LR
  schedule, so it adapts to the run's length instead of guessing a step count.

Both accumulate in fp32 whatever the parameter dtype (PR162 summed bf16 tensors in bf16), and the
average is really loaded before export (GPTQL/LEAKY collected SWA and never applied it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.config.train import TrainConfig


class WeightAverage:
    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.mode, self.decay = cfg.averaging, cfg.ema_decay
        self.every, self.start = cfg.swa_every, cfg.swa_start_lr_mul
        self.count = 0
        self.avg: dict[str, Tensor] = {}
        if self.mode == "ema":
            self.avg = _fp32_copy(model)

    def update(self, model: nn.Module, step: int, lr_mul: float) -> None:
        """Call after the optimizer step that completed ``step`` steps, with that step's lr_mul."""
        if self.mode == "ema":
            with torch.no_grad():  # one fused call over all tensors; .float() is free for fp32
                current = [v.float() for v in model.state_dict().values()]
                torch._foreach_lerp_(list(self.avg.values()), current, 1 - self.decay)
        elif self.mode == "swa" and lr_mul < self.start and step % self.every == 0:
            if self.count == 0:
                self.avg = _fp32_copy(model)
            else:
                for k, v in model.state_dict().items():
                    self.avg[k].add_(v.float())
            self.count += 1

    def apply(self, model: nn.Module) -> str:
        """Load the average into ``model`` (cast to its dtypes); returns what was done, for the log."""
        if self.mode == "none":
            return "none"
        if self.mode == "swa" and self.count < 2:
            return f"swa: {self.count} snapshot(s), not applied (needs 2)"
        scale = 1.0 / self.count if self.mode == "swa" else 1.0
        state = model.state_dict()
        model.load_state_dict({k: (self.avg[k] * scale).to(v.dtype) for k, v in state.items()})
        return f"swa: mean of {self.count} snapshots" if self.mode == "swa" else f"ema: decay {self.decay}"

    def state_dict(self) -> dict:
        return {"count": self.count, "avg": self.avg}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.avg = int(state["count"]), dict(state["avg"])


def _fp32_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().float().clone() for k, v in model.state_dict().items()}
