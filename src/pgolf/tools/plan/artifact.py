"""Projected artifact bytes of a config before training, under its export policy.

Two figures. The **upper bound** is exact: the artifact of the untrained model with the payload
stored uncompressed (``estimate``), which training cannot exceed. The **projection** prices each
tensor by the bits per parameter that trained weights measured in its storage format:

* ``int8-contest``: the contest's NaiveBaseline artifact, 15,815,847 model bytes with zlib-9
  (seed-techniques §5.5) for its 17,059,912 parameters, of which 20,552 are fp32 control tensors
  and 17,039,360 int8 (pgolf's export policy of the same model): 7.387 bits per int8 parameter.
  Measured on pgolf's trained CPU run, the best codec stores int8-contest at 6.87-7.29 bits, so a
  preset with ``pack.compressor auto`` is projected a few percent high;
* SDClip grids (k x row RMS, ``quant.clip sdclip``): the entropy of a N(0, 1) value rounded on the
  grid (step k / qmax, clipped at +-qmax), times the codec overhead measured on pgolf's trained
  int6 k=12.85 + GPTQ run (3.41 bits per matrix parameter against 3.32 for the Gaussian: x1.028);
* amax and percentile grids (``max``, ``percentile``): 5.37 bits per int6 parameter measured on
  the same run (the records' amax/31), one bit more or less per grid bit;
* float formats at their raw width.

All are capped at the format's width. The meta section (a few KB) is left out.
"""

from __future__ import annotations

import math

import torch

from pgolf.config.run import RunConfig
from pgolf.model.gpt import GPT
from pgolf.model.params import param_roles
from pgolf.pack.bundle import code_account
from pgolf.quant.grid import GridSpec
from pgolf.quant.policy import grid_spec, tensor_format
from pgolf.tools.estimate import Estimate, estimate
from pgolf.tracks import get_track

INT8_CONTEST_BITS = 8 * (15_815_847 - 4 * 20_552) / 17_039_360
AMAX_INT6_BITS = 5.37
SDCLIP_INT6_BITS = 3.41
RAW_BITS = {"fp32": 32.0, "fp16": 16.0}


def gaussian_bits(bits: int, k: float) -> float:
    """Entropy (bits) of the code of a N(0, 1) value rounded on the symmetric grid of step
    k / qmax, qmax = 2^(bits-1) - 1, values beyond the clip taking the end codes."""
    qmax = 2 ** (bits - 1) - 1
    step = k / qmax

    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    probs = [cdf((j + 0.5) * step) - cdf((j - 0.5) * step) for j in range(-qmax + 1, qmax)]
    probs += [1 - cdf((qmax - 0.5) * step)] * 2  # both end codes take their tails
    return -sum(p * math.log2(p) for p in probs if p > 0)


SDCLIP_OVERHEAD = SDCLIP_INT6_BITS / gaussian_bits(6, 12.85)


def trained_bits(spec: GridSpec) -> float:
    if spec.fmt == "int8-contest":
        return INT8_CONTEST_BITS
    if spec.clip == "sdclip":
        return min(spec.bits, gaussian_bits(spec.bits, spec.k) * SDCLIP_OVERHEAD)
    return min(spec.bits, AMAX_INT6_BITS + spec.bits - 6)


def projected_model_bytes(cfg: RunConfig) -> tuple[int, dict[str, dict]]:
    """Projected model bytes of ``cfg`` trained, and per format its params and bits per parameter:
    priced on a meta-device model (no weights are made, nothing is compressed)."""
    with torch.device("meta"):
        model = GPT(cfg.model)
    formats: dict[str, dict] = {}
    total_bits, roles = 0.0, param_roles(model)
    for name, t in model.state_dict().items():
        fmt = tensor_format(name, t, roles[name], cfg.quant)
        spec = grid_spec(name, t, roles[name], cfg.quant)
        bits = (
            float(8 * t.element_size())
            if fmt == "exact"
            else RAW_BITS[fmt]
            if spec is None
            else trained_bits(spec)
        )
        entry = formats.setdefault(fmt, {"params": 0, "bits": 0.0})
        entry["params"] += t.numel()
        entry["bits"] += bits * t.numel()
        total_bits += bits * t.numel()
    for entry in formats.values():
        entry["bits_per_param"] = round(entry.pop("bits") / entry["params"], 3)
    return math.ceil(total_bits / 8), formats


def project_artifact(cfg: RunConfig) -> tuple[Estimate, int, dict[str, dict]]:
    """(the exact estimate, projected model bytes, per format: params and bits per parameter)."""
    return estimate(cfg), *projected_model_bytes(cfg)


def off_track_before(cfg: RunConfig) -> list[str]:
    """What makes a run off its track before its first step (``pgolf train`` refuses it unless
    --off-track; ``pgolf preflight`` reports it): its configured training cap, and its artifact (the
    counted code plus the model bytes ``projected_model_bytes`` prices for trained weights)."""
    track = get_track(cfg.track)
    reasons = track.judge(train_cap_seconds=cfg.train.max_wallclock_seconds)
    if track.artifact_cap_bytes:
        total = projected_model_bytes(cfg)[0] + code_account(cfg).bytes
        reasons += [f"projected: {r}" for r in track.judge(total_bytes=total)]
    return reasons
