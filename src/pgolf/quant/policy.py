"""Export policy: the storage format of each tensor, from its declared role (``model.params``; the
model's ``param_roles`` by name), its size and the ``quant`` config.

* non-float tensors: ``exact``;
* names matching ``quant.keep_fp16``: ``fp16``;
* float tensors with at most ``keep_float_max_numel`` elements: ``fp32`` for control tensors,
  ``fp16`` for the rest (the original dtype is recorded and restored on load);
* tensors that are not 2-D: ``int8-contest`` per tensor;
* the embedding role (token embedding, BigramHash table, untied head): ``quant.embed``;
* MLP matrices: ``quant.mlp`` (default: ``quant.matrix``); other matrices: ``quant.matrix``.
"""

from __future__ import annotations

from torch import Tensor

from pgolf.config.quant import QuantConfig
from pgolf.quant.grid import GridSpec

FORMATS = ("exact", "fp32", "fp16", "int8-contest", "int8", "int7", "int6", "int5", "int4")


def tensor_format(name: str, t: Tensor, role: str, cfg: QuantConfig) -> str:
    if not t.is_floating_point():
        return "exact"
    if any(f in name for f in cfg.fp16_names):
        return "fp16"
    if t.numel() <= cfg.keep_float_max_numel:
        return "fp32" if role == "control" else "fp16"
    if t.ndim != 2:
        return "int8-contest"
    if role in ("embed", "head"):
        return cfg.embed
    return cfg.mlp_format if ".mlp." in name else cfg.matrix


def grid_spec(name: str, t: Tensor, role: str, cfg: QuantConfig) -> GridSpec | None:
    """The grid of a quantised tensor (None for the float and exact formats)."""
    fmt = tensor_format(name, t, role, cfg)
    if fmt in ("exact", "fp32", "fp16"):
        return None
    k = cfg.embed_clip_k if role in ("embed", "head") else cfg.clip_k
    return GridSpec(fmt, cfg.clip, cfg.clip_quantile, k)


def scheme_label(quant: QuantConfig, codec: str, sep: str = "_") -> str:
    """The export scheme's name in log lines: the contest's ``int8_zlib`` (``int8+zlib`` with
    ``sep="+"``) for its own scheme, else the distinct formats and the codec, e.g. ``int6-int5_zstd``
    (``int8-fisher_auto`` under the Fisher allocation)."""
    formats = dict.fromkeys(f.removesuffix("-contest") for f in (quant.matrix, quant.mlp_format, quant.embed))
    alloc = "-fisher" if quant.alloc == "fisher" else ""
    return f"{'-'.join(formats)}{alloc}{sep}{codec}"
