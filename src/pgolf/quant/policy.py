"""Export policy: which storage format each tensor gets, from its role (``model.params``) and size.

* non-float tensors: ``exact`` (stored as they are);
* float tensors with at most ``keep_float_max_numel`` elements: ``fp32`` for control tensors,
  ``fp16`` for the rest (the original dtype is recorded and restored on load);
* everything else: ``int8`` (per row when 2-D).
"""

from __future__ import annotations

from torch import Tensor

from pgolf.config.pack import ExportConfig
from pgolf.model.params import param_role

FORMATS = ("exact", "fp32", "fp16", "int8")


def tensor_format(name: str, t: Tensor, cfg: ExportConfig) -> str:
    if not t.is_floating_point():
        return "exact"
    if t.numel() <= cfg.keep_float_max_numel:
        return "fp32" if param_role(name, t.ndim) == "control" else "fp16"
    return "int8"


def scheme_label(quant: str, codec: str) -> str:
    """The contest's name for an export scheme in its log lines, e.g. ``int8_zlib``
    (``final_int8_zlib_roundtrip_exact``)."""
    return f"{quant}_{codec}"
