"""Fisher allocation: each stored row's grid step from its measured sensitivity (``quant.alloc=fisher``).

Rounding row r of a weight with step D_r adds an error of variance D_r^2/12 to each of its elements.
To second order, with the Fisher (the expected squared gradient of the per-token loss) standing in for
the Hessian, the loss grows by about sum_r n_r c_r D_r^2 / 24, where c_r is row r's sensitivity per
element:

* a Linear's output row r (y_r = w_r . x): c_r = E[g_r^2 |x|^2] / C, with g_r = dloss/dy_r;
* an Embedding row r (looked up as the output x = w_r): c_r = E[1(id = r) |g|^2] / d, estimated as
  the lookups' total E[|g|^2] / d shared out by row r's share of the lookups (counted over many more
  training tokens, + 1 per row) -- per-row sums over a few batches were too noisy;
* the tied embedding, which is also the head (z_r = w_r . h): both terms added, the head's through
  ``GPT.tied_head_out``.

The bytes of a row fall by n_r log2(D) when its step grows by D, so the least loss for the bytes
(a Lagrangian, as in rate-distortion) puts every row at c_r D_r^2 = const: D_r = step x (c_r /
median c)^(-1/2), one global constant ``quant.fisher_step`` setting the rate. Rows that never
matter on the calibration batches (an embedding row of a token never seen) would get an unbounded
step; it is capped at ``quant.fisher_max_rms`` x the row's RMS. The step is at least the row's
max / qmax, so round-to-nearest clips nothing (GPTQ's error feedback can still push a weight past
its row's clip, where it is clamped). Rows keep their fp16 scale, so the artifact format and the
loader are unchanged; GPTQ then chooses the codes on these grids.

The sensitivities are summed over calibration batches of *training* data (never validation data),
on the training clock, and over ranks.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from pgolf import dist
from pgolf.quant.grid import GridSpec


def _add(sums: dict[str, Tensor], name: str, value: Tensor) -> None:
    value = value.detach().double()
    sums[name] = sums[name] + value if name in sums else value


def row_counts(ids: Tensor, rows: int) -> Tensor:
    """How often each of ``rows`` rows is looked up in ``ids`` (float64 (rows,)): bincount without its
    device sync (CUDA's bincount reads the largest id on the host first)."""
    ids = ids.reshape(-1)
    ones = torch.ones(ids.shape, dtype=torch.float64, device=ids.device)
    return torch.zeros(rows, dtype=torch.float64, device=ids.device).index_add_(0, ids, ones)


def fp32(t: Tensor):
    """Autocast off on ``t``'s device: the statistics are fp32 GEMMs and sums even when the forward
    runs under bf16 autocast (as training does on CUDA)."""
    return torch.autocast(t.device.type, enabled=False)


def _row_terms(g: Tensor, xn2: Tensor, cols: int) -> Tensor:
    """sum over positions of g_r^2 |x|^2 / C, for output gradients g (..., R) and |x|^2 (positions,)."""
    with fp32(g):
        return g.float().flatten(0, -2).pow(2).T @ xn2 / cols


def _hooks(model: nn.Module, names: set[str], sums: dict[str, Tensor], emb: dict[str, dict]) -> list:
    """Forward hooks that register, on each hooked output, a gradient hook adding its row term. An
    embedding's input terms go to ``emb[name]``: their sum ("total") and the lookups per row ("counts")."""
    hooks = []
    for mname, module in model.named_modules():
        name = f"{mname}.weight"
        if isinstance(module, nn.Linear) and name in names:

            def linear(mod, inputs, out, name=name):
                with fp32(out):
                    xn2 = inputs[0].detach().float().pow(2).sum(-1).reshape(-1)
                cols = inputs[0].shape[-1]
                out.register_hook(lambda g: _add(sums, name, _row_terms(g, xn2, cols)))

            hooks.append(module.register_forward_hook(linear))
        elif isinstance(module, nn.Embedding) and name in names:

            def embedding(mod, inputs, out, name=name):
                acc = emb.setdefault(name, {})
                _add(acc, "counts", row_counts(inputs[0], mod.weight.shape[0]))
                dim = out.shape[-1]
                out.register_hook(lambda g: _add(acc, "total", g.float().pow(2).sum() / dim))

            hooks.append(module.register_forward_hook(embedding))
    tied = getattr(model, "tied_head_out", None)  # called only when the head is tied
    if tied is not None and "tok_emb.weight" in names:
        state: dict[str, Tensor] = {}
        hooks.append(model.head_in.register_forward_hook(lambda m, i, out: state.__setitem__("h", out)))

        def head(mod, inputs, out):
            with fp32(out):
                hn2 = state["h"].detach().float().pow(2).sum(-1).reshape(-1)
            dim = state["h"].shape[-1]
            out.register_hook(lambda g: _add(sums, "tok_emb.weight", _row_terms(g, hn2, dim)))

        hooks.append(tied.register_forward_hook(head))
    return hooks


def collect_sensitivities(
    model: nn.Module,
    names: set[str],
    batches: Iterable[tuple[Tensor, Tensor]],
    lookups: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Row sensitivities c_r (fp32, (R,)) of the named weights, summed over ``batches`` of (inputs,
    targets) and over ranks, from forward and backward passes of the summed per-token loss. The
    model's parameter gradients are left as they were found (None).

    An embedding row's input term is the lookups' total shared out in proportion to each row's
    lookups plus one (add-one smoothing: a row the batches never looked up is not free), counted in
    ``lookups[name]`` (rows looked up over many more training tokens than the backward passes see)
    where given, else in the batches themselves. Per-token estimates from a few batches were too
    noisy: two disjoint sets of 16 gave the same embedding +0.003 and +0.011 (dev/LOG.md)."""
    sums: dict[str, Tensor] = {}
    emb: dict[str, dict] = {}
    hooks = _hooks(model, names, sums, emb)
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            loss = model(x, y) * y.numel()  # the per-token loss's gradients, not the mean's
            loss.backward()
            model.zero_grad(set_to_none=True)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for name in sorted(sums):
        dist.all_reduce_sum_(sums[name])
    for name in sorted(emb):
        acc = emb[name]
        acc.setdefault(
            "total", torch.zeros((), dtype=torch.float64, device=acc["counts"].device)
        )  # no gradient
        dist.all_reduce_sum_(acc["total"])
        dist.all_reduce_sum_(acc["counts"])
        counts = (lookups or {}).get(name, acc["counts"]).to(acc["counts"].device, torch.float64)
        sums[name] = sums.get(name, 0) + acc["total"] * (counts + 1) / (counts.sum() + counts.numel())
    return {name: sums[name].float().cpu() for name in sorted(sums)}


def fisher_clips(
    state: dict[str, Tensor],
    sensitivities: dict[str, Tensor],
    specs: dict[str, GridSpec],
    step: float,
    max_rms: float,
) -> dict[str, Tensor]:
    """Row clips (qmax x the allocated step) of every named weight with a grid spec and a sensitivity."""
    names = [n for n in specs if n in sensitivities]
    if not names:
        return {}
    median = torch.cat([sensitivities[n] for n in names]).median().clamp_min(1e-30)
    clips = {}
    for name in names:
        w, spec = state[name].detach().float().cpu(), specs[name]
        rows = step * (sensitivities[name].clamp_min(1e-30) / median).pow(-0.5)
        rows = torch.minimum(rows, max_rms * w.pow(2).mean(1).sqrt())
        rows = torch.maximum(rows, w.abs().amax(1) / spec.qmax)
        clips[name] = rows * spec.qmax
    return clips


def predicted_gap(
    state: dict[str, Tensor],
    sensitivities: dict[str, Tensor],
    clips: dict[str, Tensor],
    specs: dict[str, GridSpec],
    tokens: int,
) -> float:
    """The second-order estimate of the mean per-token loss increase (nats) of round-to-nearest on
    these grids: sum_r n_r c_r D_r^2 / 24 / tokens (GPTQ's codes usually do better)."""
    total = 0.0
    for name, clip in clips.items():
        steps = clip / specs[name].qmax
        total += float((state[name].shape[1] * sensitivities[name] * steps.pow(2)).sum()) / 24
    return total / max(tokens, 1)
