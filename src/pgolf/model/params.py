"""Parameter roles: the one place that says what each tensor of the model is.

``param_role(name, ndim)`` returns

* ``embed``: the token embedding, the BigramHash and value-embedding tables (Adam, embedding LR);
* ``head``: the untied output head (Adam, head LR);
* ``matrix``: 2-D weights of the blocks and the BigramHash/value-embedding projections (Muon;
  quantised at export);
* ``control``: gains, mixes, gates, lane scalars and skip weights (Adam, scalar LR; kept fp32 at
  export), and the asymmetric logit caps (created with ``requires_grad=False``: no optimizer group).

The optimizer groups and the export policy both read it, so a new tensor is classified once.
"""

from __future__ import annotations

from torch import nn

ROLES = ("embed", "head", "matrix", "control")

CONTROL_PATTERNS = (
    "attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight", "smear", "bigram.scale", "adaln",
    "cycle_gate", "skip_gate", "lane_", "attn.gate", "ve_gain", "value_embed.scale", "logit_cap",
)  # fmt: skip
"""Name fragments of control tensors (seed-techniques §5.4, §9.1; sota-stack §2.2)."""


def param_role(name: str, ndim: int) -> str:
    if name.startswith(("tok_emb", "bigram.embed", "value_embed.embed")):
        return "embed"
    if name.startswith("lm_head"):
        return "head"
    matrix_owners = ("blocks.", "bigram.proj", "value_embed.proj")
    if name.startswith(matrix_owners) and ndim == 2 and not is_control(name):
        return "matrix"
    return "control"


def is_control(name: str) -> bool:
    return any(p in name for p in CONTROL_PATTERNS)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
